"""A cache that never lies and a listing that drops nothing: per-item content hashes with
stat checks, stores written before them, file names that are not UTF-8, broken links and
unreadable folders, CSV aliases, one file filter for extract and predict, workers that die
with their parent, and the progress view of a running extraction."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import featx
from featx import FeatureStore, FeatxUsageError, extract
from featx.cli import cli
from featx.data import _fingerprint

from .conftest import write_image_folder

ROOT = Path(__file__).resolve().parents[1]


def _extract(folder, spec, out, **kwargs):
    return extract(folder, spec, out, batch_size=2, workers=0, quiet=True, **kwargs)


def _forbid_backbone(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("the backbone ran on a store that should have been reused")

    monkeypatch.setattr(featx.extraction._extractor, "_run", forbidden)


def _png_bytes(seed: int, size=(24, 20)) -> bytes:
    import io

    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


# --------------------------------------------------------------------------- staleness


def test_touched_but_unchanged_files_keep_the_store(image_folder, tiny_spec, tmp_path, monkeypatch):
    out = tmp_path / "f.h5"
    first = _extract(image_folder, tiny_spec, out)
    for path in (image_folder / "cat").iterdir():
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    _forbid_backbone(monkeypatch)
    again = _extract(image_folder, tiny_spec, out)
    assert again.reused and again.store_id == first.store_id
    np.testing.assert_array_equal(again.features, first.features)
    # The new stat data were recorded: the next reuse reads no file at all.
    reads = []
    monkeypatch.setattr(_fingerprint, "read_item_file", lambda p: reads.append(p))
    assert _extract(image_folder, tiny_spec, out).reused and reads == []


def test_edit_with_same_size_and_mtime_is_reextracted(image_folder, tiny_spec, tmp_path, capsys):
    out = tmp_path / "f.h5"
    target = image_folder / "dog" / "001.png"
    # PNG readers ignore bytes after IEND: pad old and new to one length, so only the content differs.
    target.write_bytes(target.read_bytes().ljust(8192, b"\0"))
    first = _extract(image_folder, tiny_spec, out)
    before = first.features.copy()  # read now: FeatureStore reads its rows lazily
    st = target.stat()
    target.write_bytes(_png_bytes(99).ljust(8192, b"\0"))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert target.stat().st_size == st.st_size and target.stat().st_mtime_ns == st.st_mtime_ns
    assert FeatureStore(out).changed_items(featx.open_source(image_folder)) == ["dog/001.png"]
    again = extract(image_folder, tiny_spec, out, batch_size=2, workers=0)
    assert "1 file(s) changed since extraction (first: dog/001.png)" in capsys.readouterr().err
    fresh = _extract(image_folder, tiny_spec, tmp_path / "fresh.h5")
    np.testing.assert_array_equal(again.features, fresh.features)
    assert not np.array_equal(again.features, before)
    assert again.store_id != first.store_id  # heads fitted on the old rows are not reused


def _make_legacy(path: Path, source) -> None:
    """Turn a store into one written before per-item hashes (same layout as format 1 had)."""
    with h5py.File(path, "r+") as h5:
        del h5["item_hash"], h5["item_stat"]
        del h5.attrs["content_digest"], h5.attrs["header_sha256"]  # format 1 had no header hash either
        h5.attrs["fingerprint"] = source.fingerprint()
        h5.attrs["featx_format"] = 1


def test_stores_without_item_hashes_are_reused_as_before(image_folder, tiny_spec, tmp_path, monkeypatch):
    out = tmp_path / "f.h5"
    first = _extract(image_folder, tiny_spec, out)
    src = featx.open_source(image_folder)
    _make_legacy(out, src)
    legacy = FeatureStore(out)
    assert not legacy.has_item_hashes and legacy.content_digest is None
    with monkeypatch.context() as mp:
        _forbid_backbone(mp)
        again = _extract(image_folder, tiny_spec, out)
    assert again.reused and again.store_id == legacy.store_id
    np.testing.assert_array_equal(again.features, first.features)
    os.utime(image_folder / "cat" / "000.png", ns=(time.time_ns(), time.time_ns() + 10**9))
    with pytest.raises(featx.StoreMismatchError, match="source content changed"):
        _extract(image_folder, tiny_spec, out)


# --------------------------------------------------------------------------- what a folder listing finds


def test_non_utf8_file_names_become_escaped_ids(image_folder, tiny_spec, tmp_path):
    raw = os.fsencode(image_folder / "cat") + b"/bad-\xff\xfe.png"
    with open(raw, "wb") as handle:
        handle.write(_png_bytes(5))
    store = _extract(image_folder, tiny_spec, tmp_path / "f.h5")
    assert "cat/bad-\\xff\\xfe.png" in store.ids.tolist() and store.n_done == 9 and not store.skipped
    info = CliRunner().invoke(cli, ["info", str(store.path), "--json"])
    assert info.exit_code == 0


def test_broken_links_loops_and_unreadable_folders_are_skipped_with_reasons(image_folder, tiny_spec, tmp_path,
                                                                             monkeypatch):
    cat = image_folder / "cat"
    (cat / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (cat / "self.png").symlink_to(cat / "self.png")
    (cat / "up").symlink_to(cat)
    (cat / "locked").mkdir()
    (cat / "locked" / "x.png").write_bytes(_png_bytes(1))
    real_scandir = os.scandir

    def scandir(path):
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(featx.data._files.os, "scandir", scandir)
    store = _extract(image_folder, tiny_spec, tmp_path / "f.h5")
    reasons = {s["id"]: s["reason"] for s in store.skipped}
    assert reasons == {
        "cat/gone.png": "broken symbolic link (its target does not exist)",
        "cat/self.png": "symbolic link loop",
        "cat/up/": "symbolic link loop (points to a folder above it)",
        "cat/locked/": "cannot read folder: Permission denied",
    }
    assert store.n_done == 8


def test_csv_aliases_of_one_image_are_refused_naming_both_rows(image_folder):
    absolute = (image_folder / "cat" / "000.png").resolve()
    (image_folder / "cat" / "sub").mkdir()
    for second, label, word in [("./cat/sub/../000.png", "cat", "same label"), (str(absolute), "dog", "different")]:
        manifest = image_folder / "m.csv"
        manifest.write_text(f"path,label\ncat/000.png,cat\ndog/000.png,dog\n{second},{label}\n")
        with pytest.raises(FeatxUsageError) as info:
            featx.open_source(manifest)
        message = str(info.value)
        assert "line 2 ('cat/000.png')" in message and "line 4" in message and word in message


def test_csv_field_over_the_csv_limit_is_a_clear_error(tmp_path):
    import csv

    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\n" + "a" * (csv.field_size_limit() + 10) + ".png,x\n")
    result = CliRunner().invoke(cli, ["extract", "--source", str(manifest), "--backbone", "test_efficientnet",
                                      "--weights", "random", "--out", str(tmp_path / "f.h5")])
    assert result.exit_code == 2 and "m.csv:2: malformed CSV (field larger than field limit" in result.output


# --------------------------------------------------------------------------- one filter for extract and predict


@pytest.fixture(scope="module")
def head(tmp_path_factory, tiny_spec):
    root = tmp_path_factory.mktemp("filter")
    folder = write_image_folder(root / "images", n_per_class=4, classes=("cat", "dog"))
    store = extract(folder, tiny_spec, root / "tiny.h5", workers=0, quiet=True)
    featx.train_heads(store, heads=["logreg"], out=root / "run", n_boot=50)
    return root / "run" / "logreg"


def test_predict_rejects_what_extract_skips_and_escapes_odd_names(head, tiny_spec, tmp_path):
    folder = tmp_path / "new" / "x"
    folder.mkdir(parents=True)
    (folder / "png.txt").write_bytes(_png_bytes(2))
    (folder / "ok.png").write_bytes(_png_bytes(3))
    with open(os.fsencode(folder) + b"/odd-\xff.png", "wb") as handle:
        handle.write(_png_bytes(4))
    (folder / "gone.png").symlink_to(tmp_path / "nowhere.png")
    rows = {Path(r["id"]).name: r for r in featx.predict(head, [folder])}
    store = _extract(tmp_path / "new", tiny_spec, tmp_path / "f.h5")
    skipped = {s["id"].split("/")[-1]: s["reason"] for s in store.skipped}
    assert {name for name, r in rows.items() if r["error"]} == set(skipped) == {"png.txt", "gone.png"}
    assert rows["png.txt"]["error"] == skipped["png.txt"] and "extension" in skipped["png.txt"]
    assert rows["odd-\\xff.png"]["predicted"] in ("cat", "dog")
    out = tmp_path / "preds.csv"
    result = CliRunner().invoke(cli, ["predict", "--model", str(head), str(folder), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "odd-\\xff.png" in out.read_text(encoding="utf-8")


# --------------------------------------------------------------------------- a running extraction


def test_info_shows_progress_and_workers_die_with_a_killed_parent(tmp_path):
    folder = write_image_folder(tmp_path / "imgs", n_per_class=30, classes=("a", "b"), size=(12, 10))
    out, marker = tmp_path / "f.h5", tmp_path / "marker"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    # One worker, 0.4 s per image: without PR_SET_PDEATHSIG the worker finishes its batch
    # (up to 1.6 s) before it notices; with it, the kernel kills it with the parent.
    proc = subprocess.Popen([sys.executable, "-m", "tests._slow_source", str(folder), str(out), str(marker), "6", "1",
                             "0.4"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (marker.exists() and (tmp_path / "f.h5.progress.json").exists()):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the extraction did not start in time"
            time.sleep(0.05)
        info = CliRunner().invoke(cli, ["info", str(out)])
        assert info.exit_code == 0 and f"being written by featx (pid {proc.pid})" in info.output
        assert " of 60 rows" in info.output
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed = time.monotonic()
    lock = os.open(tmp_path / "f.h5.lock", os.O_RDWR)
    try:
        while True:  # the worker held the inherited lock; it must go with its parent, at once
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                assert time.monotonic() - killed < 0.6, "a DataLoader worker outlived its killed parent"
                time.sleep(0.01)
    finally:
        os.close(lock)


def _write_format1_store(path: Path, like: FeatureStore, source, done_rows: int) -> None:
    """A store exactly as featx wrote it before per-item hashes: contiguous datasets, text
    attributes, the fingerprint with sizes and mtimes; the first ``done_rows`` rows done."""
    import json

    with h5py.File(like.path, "r") as h5:
        features = h5["features"][:]
    n = like.n_items
    with h5py.File(path, "w") as h5:
        h5.attrs.update({"featx_format": 1, "config": json.dumps(like.config, sort_keys=True),
                         "fingerprint": source.fingerprint(), "class_names": json.dumps(like.class_names),
                         "versions": "{}", "complete": False, "created": "", "run": "{}", "finished": ""})
        h5.create_dataset("features", data=np.where(np.arange(n)[:, None] < done_rows, features, 0))
        h5.create_dataset("labels", data=like.labels)
        h5.create_dataset("ids", data=np.asarray(like.all_ids, dtype=object), dtype=h5py.string_dtype())
        h5.create_dataset("splits", data=np.asarray([""] * n, dtype=object), dtype=h5py.string_dtype())
        h5.create_dataset("status", data=(np.arange(n) < done_rows).astype(np.uint8))
        h5.create_dataset("skip_reasons", shape=(n,), dtype="S256", fillvalue=b"")


def test_an_incomplete_format1_store_resumes_and_verifies(image_folder, tiny_spec, tmp_path):
    fresh = _extract(image_folder, tiny_spec, tmp_path / "fresh.h5")
    old = tmp_path / "old.h5"
    _write_format1_store(old, fresh, featx.open_source(image_folder), done_rows=4)
    assert not FeatureStore(old).complete and FeatureStore(old).n_pending == 4
    resumed = _extract(image_folder, tiny_spec, old)
    assert resumed.complete and not resumed.has_item_hashes and resumed.run_info["rows_this_run"] == 4
    np.testing.assert_array_equal(resumed.features, fresh.features)
    report = featx.store.verify_store(old)
    assert report.ok and set(report.unchecksummed) == {"features", "labels", "status", "skip_reasons",
                                                       "header (format 1: no header_sha256)"}


def test_a_subclass_overriding_load_is_used_and_its_files_still_hashed(image_folder, tiny_spec, tmp_path, monkeypatch):
    calls = []

    class Counting(featx.ImageFolderSource):
        def load(self, index):
            calls.append(index)
            return super().load(index)

    out = tmp_path / "f.h5"
    _extract(Counting(image_folder), tiny_spec, out)
    assert sorted(calls) == list(range(8))
    _forbid_backbone(monkeypatch)
    assert _extract(Counting(image_folder), tiny_spec, out).reused
