"""Screenshot a featx report in headless Chromium: the top of the page, as a small PNG for the docs.

    python scripts/screenshot_report.py runs/digits/report.html docs/report.png

Needs a Chromium binary (Debian: ``apt-get install chromium-headless-shell`` or
``chromium``); ``--browser`` names another. The page is rendered at ``--width`` CSS
pixels (default 1,200) with no network (the report inlines everything), cut to
``--height`` pixels, then saved as a palette PNG so it stays small enough for a README.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

BROWSERS = ("chromium", "chromium-browser", "chromium-headless-shell", "google-chrome")


def find_browser(name: str | None = None) -> str:
    found = shutil.which(name) if name else next((p for p in map(shutil.which, BROWSERS) if p), None)
    if not found:
        sys.exit(f"no Chromium found (tried {name or ', '.join(BROWSERS)}); on Debian: "
                 "apt-get install chromium-headless-shell")
    return found


def screenshot(report: Path, out: Path, *, width: int, height: int, browser: str, colors: int) -> Path:
    """Render ``report`` at ``width`` x ``height`` CSS px into ``out`` (a palette PNG of ``colors`` colours)."""
    with tempfile.TemporaryDirectory(prefix="featx-shot-") as tmp:
        raw = Path(tmp) / "shot.png"
        done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                               "--hide-scrollbars", f"--window-size={width},{height}", f"--screenshot={raw}",
                               report.resolve().as_uri()], capture_output=True, text=True, timeout=120)
        if not raw.exists():
            sys.exit(f"{browser} made no screenshot: {done.stderr.strip()[-500:]}")
        image = Image.open(raw).convert("RGB")
        # An adaptive palette keeps text and plot colours crisp at a fraction of the RGB PNG's size.
        image.quantize(colors=colors, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="report.html written by featx run or featx report")
    parser.add_argument("out", type=Path, help="PNG to write")
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=1100)
    parser.add_argument("--colors", type=int, default=64, help="palette size of the PNG")
    parser.add_argument("--browser", help="Chromium binary (default: the first found of {})".format(", ".join(BROWSERS)))
    args = parser.parse_args(argv)
    if not args.report.is_file():
        sys.exit(f"report not found: {args.report}")
    out = screenshot(args.report, args.out, width=args.width, height=args.height, browser=find_browser(args.browser),
                     colors=args.colors)
    print(f"{out}: {out.stat().st_size / 1024:.0f} KB, {Image.open(out).size[0]}x{Image.open(out).size[1]} px")


if __name__ == "__main__":
    main()
