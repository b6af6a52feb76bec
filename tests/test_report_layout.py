"""The report fits the screen at 900 and 1,400 px and renders with no network, checked in headless Chromium.

Skipped where no Chromium is installed (``apt-get install chromium`` or ``chromium-headless-shell`` on Debian); the
offline checks on the HTML text run everywhere.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess

import pytest

from featx.pipeline._report import write_report
from tests.test_report_decide import _row

_MEASURE = """<script>
const w = window.innerWidth;
const boxes = [...document.querySelectorAll('.tablebox')].map(b => ({right: b.getBoundingClientRect().right,
  scroll: b.scrollWidth, client: b.clientWidth, head: b.querySelector('th').textContent}));
const imgs = [...document.images].map(i => ({ok: i.complete && i.naturalWidth > 0, right: i.getBoundingClientRect().right}));
const wide = [...document.body.querySelectorAll('*')].filter(e => !e.closest('.tablebox') &&
  e.getBoundingClientRect().right > w + 0.5).map(e => e.tagName + '.' + e.className).slice(0, 5);
document.body.setAttribute('data-measure', JSON.stringify({w, page: document.documentElement.scrollWidth, boxes, imgs, wide}));
</script>"""


def _chromium() -> str | None:
    return next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "chromium-headless-shell", "google-chrome")) if p), None)


@pytest.fixture(scope="module")
def busy_report(tmp_path_factory):
    """A report with the widest content a real run makes: long feature-set names, fine-tunes, a long
    model path, a search table and a failed stage with a long error."""
    out = tmp_path_factory.mktemp("report")
    model = out / "runs" / "cifar10-with-a-rather-long-run-name" / "heads" / "efficientnet_lite0-crop1.0-bilinear" / "logreg"
    rows = []
    for i, name in enumerate(["logreg", "linear_svm", "mlp", "knn", "random_forest", "xgboost", "rbf_svm"]):
        rows.append(_row(name, range(200 - 3 * i), n=300, ips=80.0 + i, fit=2.0 + i,
                         feature_set="efficientnet_lite0:pooled+layer-1+layer-2,mobilenetv2_100:pooled"))
    rows.append(_row("logreg", range(150), n=300, control="raw_pixels", backbone="raw pixels"))
    for mode, acc in (("linear", 190), ("partial", 230), ("full", 240)):
        rows.append(_row(mode, range(acc), n=300, kind="finetune", mode=mode, fit=600.0, ms=25.0))
    rows[0]["model"] = str(model)
    search = [{"config": {"backbone": b, "img_size": 224, "crop_pct": c, "interpolation": "bilinear",
                          "layers": "-1,-2", "views": ["hflip"]}, "proxy_score": 0.7, "subsample_size": 3600,
               "cost_seconds": 80.0, "status": "pruned", "reason": "below the top half in round 1 of 3"}
              for b in ("efficientnet_lite0", "efficientnet_lite2", "mobilenetv2_100") for c in (0.875, 1.0)]
    stages = [{"stage": "head rbf_svm on efficientnet_lite0", "status": "failed", "seconds": 3.0,
               "error": "MemoryError: " + "could not allocate a kernel matrix of 50000 x 50000 float64 " * 3}]
    return write_report(out, rows, title="featx report: layout", stages=stages, search=search)


def test_report_needs_no_network(busy_report):
    text = busy_report.read_text()
    assert "<script" not in text and "<link" not in text and "@import" not in text and "url(" not in text
    assert not re.search(r"""(src|href)=["'](?!data:)""", text)  # every image inlined, no links out
    assert "@font-face" not in text


@pytest.mark.skipif(_chromium() is None, reason="no Chromium installed (Debian: apt-get install chromium)")
@pytest.mark.parametrize("width", [900, 1400])
def test_tables_fit_the_viewport_in_a_browser(busy_report, tmp_path, width):
    page = tmp_path / "measured.html"
    page.write_text(busy_report.read_text().replace("</body>", _MEASURE + "</body>"))
    done = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           f"--window-size={width},1200", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    found = re.search(r'data-measure="([^"]*)"', done.stdout)
    assert found, done.stderr[-2000:]
    measure = json.loads(html.unescape(found.group(1)))
    assert measure["w"] == width
    assert measure["page"] <= width, measure  # nothing makes the page scroll sideways
    assert not measure["wide"], measure["wide"]
    assert measure["boxes"] and all(b["right"] <= width for b in measure["boxes"])
    assert measure["imgs"] and all(i["ok"] and i["right"] <= width for i in measure["imgs"])
    if width >= 1400:  # wide screens: every table fits whole, no sideways scrolling at all
        assert all(b["scroll"] <= b["client"] for b in measure["boxes"]), measure["boxes"]
