"""A warm ``featx run`` (every stage cached) re-checks its keys and rebuilds the report without the
heavy imports: plots reused when drawn from the same inputs, backbone identities recorded, the
config checked without timm, digits read without scikit-learn, decode overlapped with the model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from featx.pipeline import run_pipeline, write_report
from featx.pipeline._identity import cached_identity, record_identity
from tests.test_report_decide import _row

from .conftest import write_image_folder

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "timm", "sklearn", "scipy", "matplotlib", "xgboost")


def test_digits_source_equals_scikit_learns_digits():
    from sklearn.datasets import load_digits

    from featx.data import DigitsSource

    digits, source = load_digits(), DigitsSource()
    assert np.array_equal(source.images[..., 0], np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8))
    assert source.labels.tolist() == digits.target.tolist()


def _rows():
    return [_row("logreg", range(25)), _row("knn", range(20), fit=0.5), _row("linear", range(22), kind="finetune",
                                                                               mode="linear", fit=30.0)]


def _mtimes(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}


def test_plots_are_reused_only_when_drawn_from_the_same_inputs(tmp_path, monkeypatch):
    import featx.pipeline._report_plots as plots

    write_report(tmp_path, _rows())
    first = _mtimes(tmp_path)
    assert {"pareto.png", "best.png"} <= set(first)

    def refuse(*args, **kwargs):
        raise AssertionError("redrawn although its inputs did not change")

    with monkeypatch.context() as patch:
        for name in ("plot_pareto", "plot_model", "plot_learning_curve"):
            patch.setattr(plots, name, refuse)
        write_report(tmp_path, _rows())
    assert _mtimes(tmp_path) == first

    changed = _rows()
    changed[1]["fit_seconds"] = 50.0  # moves a point of the Pareto plot, not the recommended model's plot
    time.sleep(0.01)
    write_report(tmp_path, changed)
    now = _mtimes(tmp_path)
    assert now["pareto.png"] != first["pareto.png"] and now["best.png"] == first["best.png"]

    (tmp_path / "best.png").write_bytes((tmp_path / "best.png").read_bytes()[:-200])  # truncated: redrawn
    write_report(tmp_path, changed)
    assert plots._recorded_key(tmp_path / "best.png") is not None


def test_recorded_identity_is_reused_only_while_its_file_and_request_are_unchanged(tmp_path):
    from featx.extraction import BackboneSpec

    weights = tmp_path / "w.pth"
    weights.write_bytes(b"weights")
    spec = BackboneSpec("test_efficientnet", "file", "avg", weights_path=str(weights), weights_sha256="abc")
    bb = {"label": "tiny", "name": "test_efficientnet", "weights": str(weights), "pooling": "avg"}
    state: dict = {}
    identity = record_identity(state, bb, spec)
    state = json.loads(json.dumps(state))  # as read back from state.json
    assert cached_identity(state, bb) == identity
    assert cached_identity(state, {**bb, "pooling": "max"}) is None
    assert cached_identity(state, {**bb, "label": "other"}) is None
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # replaced in place
    assert cached_identity(state, bb) is None


def test_background_decode_hands_on_errors_and_stops_with_its_consumer():
    from featx.extraction._loader import BackgroundBatches

    def failing():
        yield 1
        raise ValueError("bad batch")

    stream = iter(BackgroundBatches(failing()))
    assert next(stream) == 1
    with pytest.raises(ValueError, match="bad batch"):
        next(stream)
    produced = []

    def endless():
        for i in range(10**6):
            produced.append(i)
            yield i

    stream = iter(BackgroundBatches(endless(), depth=2))
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()  # the consumer stops: the thread stops too, a few batches ahead at most
    count = len(produced)
    time.sleep(0.3)
    assert len(produced) == count <= 3 + 2 + 2


@pytest.fixture(scope="module")
def warm_out(tmp_path_factory):
    base = tmp_path_factory.mktemp("warm")
    images = write_image_folder(base / "images", n_per_class=8, classes=("red", "green"), size=(32, 32))
    config = base / "warm.yaml"
    config.write_text(yaml.safe_dump({
        "name": "warm", "source": {"path": str(images)}, "device": "auto", "out": str(base / "out"),
        "backbones": [{"name": "test_efficientnet", "weights": "random", "label": "tiny"}],
        "heads": ["logreg"], "raw_pixels": {"size": 8, "heads": ["logreg"]},
    }))
    run_pipeline(config, quiet=True)
    return config


def test_warm_run_imports_no_torch_timm_sklearn_or_matplotlib(warm_out):
    code = ("import sys; from featx.pipeline import run_pipeline; run = run_pipeline(sys.argv[1], quiet=True); "
            f"print(run.counts()); print([m for m in {HEAVY!r} if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code, str(warm_out)], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    counts, imported = done.stdout.strip().splitlines()[-2:]
    assert counts == "{'cached': 4}" and imported == "[]", done.stdout


def test_warm_run_still_sees_a_changed_config(warm_out, tmp_path):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(yaml.safe_load(warm_out.read_text())["out"], out)
    run = run_pipeline(warm_out, out=out, dry_run=True, overrides=["backbones.0.pooling=max"])
    assert {s.id: s.status for s in run.stages}["extract:tiny"] == "to run"
    with pytest.raises(Exception, match="backbones\\[0\\].*no_such_net"):
        run_pipeline(warm_out, out=out, dry_run=True, overrides=["backbones.0.name=no_such_net"])


def test_background_decode_gives_the_same_features(tmp_path, monkeypatch):
    from featx import FeatureStore, extract

    images = write_image_folder(tmp_path / "images", n_per_class=5, classes=("a", "b"), size=(40, 30))
    stores = {}
    for flag in ("0", "1"):
        monkeypatch.setenv("FEATX_DECODE_THREAD", flag)
        extract(images, "test_efficientnet", tmp_path / f"s{flag}.h5", weights="random", device="cpu", workers=0,
                batch_size=3, quiet=True)
        store = FeatureStore(tmp_path / f"s{flag}.h5")
        stores[flag] = (list(store.ids), np.asarray(store.features))
    assert stores["0"][0] == stores["1"][0]
    assert np.array_equal(stores["0"][1], stores["1"][1])
