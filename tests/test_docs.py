"""The docs stay true to the product: the CLI reference matches the CLI, the README stays short."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def test_cli_reference_is_up_to_date():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_cli_docs.py"), "--check"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_readme_is_short_and_keeps_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.encode()) <= 16 * 1024
    assert "bash scripts/setup.sh && .venv/bin/featx run pipelines/digits.yaml" in text
    assert "bash scripts/setup.sh && .venv/bin/python -m pytest" in text


def test_docs_do_not_speak_of_the_projects_own_process():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    banned = re.compile(r"\bissue \d+|issue's|no GPU lent|not measured yet|this project aims|who measured", re.I)
    for page in pages:
        for number, line in enumerate(page.read_text().splitlines(), 1):
            assert not banned.search(line), f"{page.name}:{number}: {line.strip()}"


def test_relative_links_between_pages_resolve():
    """A link to a page that is not in this checkout is allowed only for the pages other parts of
    the docs are known to add (listed); every other relative link must point at a file."""
    expected_elsewhere = {"shipping.md", "protocol.md", "scale.md", "search.md", "store-format.md",
                          "sources-reference.md"}
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target:
                continue
            path = (page.parent / target).resolve()
            assert path.exists() or path.name in expected_elsewhere, f"{page.name}: broken link {target}"


def _fake_cifar_archive(path: Path) -> np.ndarray:
    """A tiny archive in the official cifar-10-python layout (pickled dicts of uint8 rows)."""
    import io
    import pickle
    import tarfile

    rng = np.random.default_rng(0)
    rows = rng.integers(0, 255, (6, 3072), dtype=np.uint8)
    batches = {"batches.meta": {b"label_names": [b"airplane", b"cat"]}}
    for i, name in enumerate(["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"]):
        batches[name] = {b"data": rows[i:i + 1], b"labels": [i % 2]}
    batches["test_batch"] = {b"data": rows[5:6], b"labels": [1]}
    with tarfile.open(path, "w:gz") as archive:
        for name, content in batches.items():
            data = pickle.dumps(content)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return rows


def test_cifar10_conversion_writes_the_folder_featx_reads(tmp_path):
    from PIL import Image

    rows = _fake_cifar_archive(tmp_path / "cifar-10-python.tar.gz")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "cifar10_to_folder.py"),
                           str(tmp_path / "cifar-10-python.tar.gz"), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png")) == [
        "test/cat/00000.png", "train/airplane/00000.png", "train/airplane/00002.png", "train/airplane/00004.png",
        "train/cat/00001.png", "train/cat/00003.png"]
    pixels = np.asarray(Image.open(tmp_path / "out/train/cat/00003.png"))
    np.testing.assert_array_equal(pixels, rows[3].reshape(3, 32, 32).transpose(1, 2, 0))
