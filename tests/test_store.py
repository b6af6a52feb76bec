"""Feature store: contents, bad-image records, reuse, mismatch, resume after SIGKILL, in-use lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

import featx
from featx import FeatureStore, StoreInUseError, StoreMismatchError, extract

from .conftest import write_image_folder

ROOT = Path(__file__).resolve().parents[1]


def test_store_contents_and_layout(image_folder, tiny_spec, tmp_path):
    store = extract(image_folder, tiny_spec, tmp_path / "f.h5", quiet=True)
    assert store.complete and store.n_items == 8 and store.dim == 256
    assert store.features.shape == (8, 256) and store.features.dtype == np.float32
    assert np.isfinite(store.features).all() and store.features.std() > 0
    assert store.ids.tolist() == open_ids(image_folder)
    assert store.labels.tolist() == [0] * 4 + [1] * 4
    assert store.class_names == ["cat", "dog"]
    info = store.info()
    assert info["config"]["backbone"]["weights"] == {"kind": "random", "seed": 0}
    assert info["config"]["data_config"]["input_size"] == [3, 160, 160]
    assert set(info["versions"]) >= {"featx", "timm", "torch"}
    with h5py.File(store.path) as h5:
        assert set(h5) == {"features", "labels", "ids", "splits", "status", "skip_reasons", "item_hash", "item_stat"}
        assert h5["features"].fletcher32 and h5["status"].fletcher32
        assert h5.attrs["complete"]


def open_ids(folder):
    return featx.open_source(folder).ids


def test_features_match_a_direct_forward_pass(image_folder, tiny_spec, tmp_path):
    import torch

    from featx.extraction import make_eval_transform

    store = extract(image_folder, tiny_spec, tmp_path / "f.h5", batch_size=3, quiet=True)
    model, data_config = featx.create_backbone(tiny_spec)
    src = featx.open_source(image_folder)
    batch = torch.stack([make_eval_transform(data_config)(src.load(i)) for i in range(len(src))])
    with torch.inference_mode():
        direct = model(batch).numpy()
    np.testing.assert_allclose(store.features, direct, rtol=1e-4, atol=1e-5)


def test_bad_images_are_skipped_and_recorded_without_shifting_rows(image_folder, tiny_spec, tmp_path):
    (image_folder / "cat" / "001.png").write_bytes(b"")
    (image_folder / "dog" / "bad.jpg").write_text("not an image")
    (image_folder / "dog" / "readme.txt").write_text("hello")
    store = extract(image_folder, tiny_spec, tmp_path / "f.h5", batch_size=3, quiet=True)
    reasons = {s["id"]: s["reason"] for s in store.skipped}
    assert set(reasons) == {"cat/001.png", "dog/bad.jpg", "dog/readme.txt"}
    assert "empty" in reasons["cat/001.png"] and "not an image" in reasons["dog/bad.jpg"]
    assert "extension" in reasons["dog/readme.txt"]
    assert store.complete and store.n_items == 10 and len(store.ids) == 7 and "cat/001.png" not in store.ids
    # Rows of good images equal a store made without the bad files.
    for bad in ("cat/001.png", "dog/bad.jpg", "dog/readme.txt"):
        (image_folder / bad).unlink()
    good = extract(image_folder, tiny_spec, tmp_path / "good.h5", batch_size=3, quiet=True)
    assert good.ids.tolist() == store.ids.tolist()
    np.testing.assert_allclose(good.features, store.features, rtol=1e-4, atol=1e-5)


def test_strict_fails_on_first_bad_image(image_folder, tiny_spec, tmp_path):
    (image_folder / "dog" / "000.png").write_bytes(b"")
    with pytest.raises(featx.FeatxError, match="dog/000.png: empty file"):
        extract(image_folder, tiny_spec, tmp_path / "f.h5", strict=True, quiet=True)


def test_reuse_runs_no_backbone(image_folder, tiny_spec, tmp_path, monkeypatch):
    first = extract(image_folder, tiny_spec, tmp_path / "f.h5", quiet=True)

    def forbidden(*args, **kwargs):
        raise AssertionError("the backbone ran on a complete, matching store")

    monkeypatch.setattr(featx.extraction._extractor, "_run", forbidden)
    again = extract(image_folder, tiny_spec, tmp_path / "f.h5", quiet=True)
    np.testing.assert_array_equal(again.features, first.features)


def test_changed_config_or_source_is_never_silently_reused(image_folder, tiny_spec, tmp_path):
    out = tmp_path / "f.h5"
    extract(image_folder, tiny_spec, out, quiet=True)
    other_pool = featx.resolve_backbone("test_efficientnet", weights="random", pooling="max")
    with pytest.raises(StoreMismatchError, match="pooling: 'avg' -> 'max'"):
        extract(image_folder, other_pool, out, quiet=True)
    with pytest.raises(StoreMismatchError, match="float32' -> 'float16"):
        extract(image_folder, tiny_spec, out, dtype="float16", quiet=True)
    Image.new("RGB", (9, 9)).save(image_folder / "cat" / "new.png")
    with pytest.raises(StoreMismatchError, match="source content changed"):
        extract(image_folder, tiny_spec, out, quiet=True)
    replaced = extract(image_folder, tiny_spec, out, overwrite=True, quiet=True)
    assert replaced.n_items == 9


def test_float16_storage(image_folder, tiny_spec, tmp_path):
    store = extract(image_folder, tiny_spec, tmp_path / "f.h5", dtype="float16", quiet=True)
    assert store.feature_dtype == "float16" and store.features.dtype == np.float32


def test_reader_rejects_non_store_files(tmp_path):
    with h5py.File(tmp_path / "other.h5", "w") as h5:
        h5["x"] = [1]
    with pytest.raises(featx.FeatxError, match="not a featx feature store"):
        FeatureStore(tmp_path / "other.h5")
    (tmp_path / "text.h5").write_text("nope")
    with pytest.raises(featx.FeatxError, match="not a readable HDF5"):
        FeatureStore(tmp_path / "text.h5")


def _start_slow_extraction(folder: Path, out: Path, marker: Path, mark_after: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests._slow_source", str(folder), str(out), str(marker), str(mark_after)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def _wait_for(marker: Path, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"extraction ended early: {proc.stderr.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("extraction did not reach the marker in time")
        time.sleep(0.02)


@pytest.mark.parametrize("mark_after", [6, 27])
def test_sigkill_then_resume_equals_uninterrupted(tmp_path, tiny_spec, mark_after):
    folder = write_image_folder(tmp_path / "imgs", n_per_class=20, classes=("a", "b"))
    (folder / "a" / "005.png").write_bytes(b"")  # a skipped row inside the killed range
    out, marker = tmp_path / "killed.h5", tmp_path / "marker"
    proc = _start_slow_extraction(folder, out, marker, mark_after)
    try:
        _wait_for(marker, proc)
        # While it runs, a second writer is refused.
        with pytest.raises(StoreInUseError, match="in use"):
            extract(folder, tiny_spec, out, batch_size=4, quiet=True)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    partial = FeatureStore(out)
    assert not partial.complete and 0 < partial.n_pending < 40
    resumed = extract(folder, tiny_spec, out, batch_size=4, workers=0, quiet=True)
    fresh = extract(folder, tiny_spec, tmp_path / "fresh.h5", batch_size=4, workers=0, quiet=True)
    assert resumed.complete and resumed.ids.tolist() == fresh.ids.tolist()
    assert resumed.skipped == fresh.skipped and len(resumed.skipped) == 1
    np.testing.assert_array_equal(resumed.features, fresh.features)


def test_incomplete_store_refuses_training_use(tmp_path, tiny_spec):
    folder = write_image_folder(tmp_path / "imgs", n_per_class=20, classes=("a", "b"))
    out, marker = tmp_path / "killed.h5", tmp_path / "marker"
    proc = _start_slow_extraction(folder, out, marker, 10)
    try:
        _wait_for(marker, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with pytest.raises(featx.FeatxError, match="incomplete .* resume"):
        FeatureStore(out).require_complete()
