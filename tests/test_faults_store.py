"""Fault injection on every feature-store write path: SIGKILL at named points, ENOSPC/EIO
at every write, and damaged or truncated stores. Each case checks the invariant that
matters: nothing lost (earlier outputs intact), nothing stale (a rerun finishes with the
features of an uninterrupted run), nothing silently wrong (damage is reported as damage,
in one line)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

import featx
from featx import FeatureStore, StoreInUseError, extract
from featx.cli import cli
from featx.core.errors import DiskError, StoreDamagedError
from featx.store import _lock, _progress, _writer

from .conftest import write_image_folder

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def folder(tmp_path) -> Path:
    return write_image_folder(tmp_path / "imgs", n_per_class=4, classes=("a", "b"), size=(12, 10))


def _extract(folder, spec, out, **kwargs):
    return extract(folder, spec, out, batch_size=2, workers=0, quiet=True, **kwargs)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith((".creating", ".tmp", ".lock", ".new"))
                  or ".progress" in p.name)


def _run_until_killed(folder: Path, out: Path, point: str, *extra: str) -> None:
    # The killed run uses the same intra-op threads as this process: a float sum split over
    # another number of threads differs in its last bits, and resume must be bit-identical.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.run([sys.executable, "-m", "tests._store_kill", str(folder), str(out), point, *extra],
                          cwd=ROOT, env=env, capture_output=True, timeout=120)
    assert proc.returncode == -9, f"kill point {point} not reached (rc {proc.returncode}): {proc.stderr.decode()[-1500:]}"


# --------------------------------------------------------------------------- kill points


# Each case starts a Python with torch (several seconds on a busy 2-core machine): the
# two points that guard data by default, the rest with -m slow.
@pytest.mark.parametrize("point", [pytest.param("create", marks=pytest.mark.slow), "rows", "finish-run",
                                   pytest.param("finish-complete", marks=pytest.mark.slow)])
def test_sigkill_inside_a_store_write_path_then_rerun_equals_uninterrupted(folder, tiny_spec, tmp_path, point):
    out = tmp_path / "f.h5"
    _run_until_killed(folder, out, point)
    if out.exists():  # whatever was left reads back: attributes and all, never a traceback
        partial = FeatureStore(out)
        # Killed before `complete` was flushed: incomplete. After it was set, either is fine.
        assert point == "finish-complete" or not partial.complete
        assert CliRunner().invoke(cli, ["info", str(out)]).exit_code == 0
    else:
        assert point == "create"
    resumed = _extract(folder, tiny_spec, out)
    fresh = _extract(folder, tiny_spec, tmp_path / "fresh.h5")
    assert resumed.complete and resumed.ids.tolist() == fresh.ids.tolist()
    np.testing.assert_array_equal(resumed.features, fresh.features)
    assert resumed.run_info.get("extract_seconds_total") is not None
    assert _leftovers(tmp_path) == []


def test_sigkill_before_overwrite_replaces_keeps_the_old_store(folder, tiny_spec, tmp_path):
    out = tmp_path / "f.h5"
    old = _extract(folder, tiny_spec, out)
    _run_until_killed(folder, out, "replace", "overwrite")
    kept = FeatureStore(out)
    assert kept.config["backbone"]["pooling"] == "avg"
    np.testing.assert_array_equal(kept.features, old.features)
    # The same --overwrite again resumes the finished build beside it and replaces the old store.
    max_spec = featx.resolve_backbone("test_efficientnet", weights="random", pooling="max")
    new = _extract(folder, max_spec, out, overwrite=True)
    assert new.config["backbone"]["pooling"] == "max" and new.complete
    assert _leftovers(tmp_path) == []


@pytest.mark.slow
def test_sigkill_while_marking_changed_items_then_rerun_reextracts(folder, tiny_spec, tmp_path):
    out = tmp_path / "f.h5"
    _extract(folder, tiny_spec, out)
    target = folder / "a" / "000.png"
    write_image_folder(tmp_path / "other", n_per_class=1, classes=("a",), size=(12, 10), seed=7)
    target.write_bytes((tmp_path / "other" / "a" / "000.png").read_bytes())
    _run_until_killed(folder, out, "refresh")
    assert not FeatureStore(out).complete
    again = _extract(folder, tiny_spec, out)
    fresh = _extract(folder, tiny_spec, tmp_path / "fresh.h5")
    np.testing.assert_array_equal(again.features, fresh.features)


# --------------------------------------------------------------------------- full disk, I/O errors


def _raise(code: int):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    return fail


WRITE_PATHS = {
    # store creation: the skeleton's datasets (the item listing is written among them)
    "create": lambda mp, code: mp.setattr(_writer, "write_listing", _raise(code)),
    # rows: a batch's item records (after its features)
    "rows": lambda mp, code: mp.setattr(_writer.StoreWriter, "_write_records", _raise(code)),
    # the final flush and fsync in finish
    "finish": lambda mp, code: mp.setattr(_writer, "_fsync", _raise(code)),
    # the lock file
    "lock": lambda mp, code: mp.setattr(_lock.os, "open", _raise(code)),
}


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO])
@pytest.mark.parametrize("where", sorted(WRITE_PATHS))
def test_disk_error_on_a_store_write_path_is_one_line_and_leaves_nothing_behind(folder, tiny_spec, tmp_path, monkeypatch,
                                                                                 where, code):
    out = tmp_path / "f.h5"
    with monkeypatch.context() as mp:
        WRITE_PATHS[where](mp, code)
        with pytest.raises(DiskError) as info:
            _extract(folder, tiny_spec, out)
    message = str(info.value)
    assert "\n" not in message and "while writing" in message and str(out) in message
    assert ("no space left on device" if code == errno.ENOSPC else "input/output error") in message
    assert _leftovers(tmp_path) == []
    if out.exists():  # an incomplete store that reads back and resumes
        assert not FeatureStore(out).complete
    resumed = _extract(folder, tiny_spec, out)
    fresh = _extract(folder, tiny_spec, tmp_path / "fresh.h5")
    np.testing.assert_array_equal(resumed.features, fresh.features)


def test_disk_full_in_the_cli_is_one_line_exit_1(folder, tmp_path, monkeypatch):
    monkeypatch.setattr(_writer, "_fsync", _raise(errno.ENOSPC))
    out = tmp_path / "f.h5"
    result = CliRunner().invoke(cli, ["extract", "--source", str(folder), "--backbone", "test_efficientnet",
                                      "--weights", "random", "--out", str(out), "--workers", "0", "--quiet"])
    assert result.exit_code == 1
    assert result.output.strip() == f"featx: error: no space left on device while writing {out}"
    monkeypatch.undo()
    info = CliRunner().invoke(cli, ["info", str(out)])
    assert info.exit_code == 0 and "INCOMPLETE" in info.output


def test_disk_full_while_writing_the_progress_file_removes_its_temp(folder, tiny_spec, tmp_path, monkeypatch):
    import featx.core.io as io_module

    real_open = open

    class FullDisk:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io_module, "open", lambda p, mode="r", *a, **k: FullDisk(real_open(p, mode, *a, **k)),
                        raising=False)
    out = tmp_path / "f.h5"
    with pytest.raises(DiskError, match="no space left on device while writing .*f.h5.progress.json"):
        _extract(folder, tiny_spec, out)
    assert _leftovers(tmp_path) == []


def test_disk_full_during_overwrite_keeps_the_old_store(folder, tiny_spec, tmp_path, monkeypatch):
    out = tmp_path / "f.h5"
    old = _extract(folder, tiny_spec, out)
    monkeypatch.setattr(_writer.StoreWriter, "_write_records", _raise(errno.ENOSPC))
    max_spec = featx.resolve_backbone("test_efficientnet", weights="random", pooling="max")
    with pytest.raises(DiskError, match="no space left"):
        _extract(folder, max_spec, out, overwrite=True)
    kept = FeatureStore(out)
    assert kept.complete and kept.config["backbone"]["pooling"] == "avg"
    np.testing.assert_array_equal(kept.features, old.features)
    assert _leftovers(tmp_path) == []


# --------------------------------------------------------------------------- damaged and truncated stores


@pytest.fixture
def made(folder, tiny_spec, tmp_path) -> Path:
    out = tmp_path / "f.h5"
    _extract(folder, tiny_spec, out)
    return out


@pytest.mark.parametrize("keep", [0.5, 0.05])
def test_truncated_store_is_damaged_not_in_use(made, folder, tiny_spec, keep):
    data = made.read_bytes()
    made.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(StoreDamagedError) as info:
        FeatureStore(made)
    assert not isinstance(info.value, StoreInUseError)
    assert "in use" not in str(info.value) and "--overwrite" in str(info.value)
    result = CliRunner().invoke(cli, ["info", str(made)])
    assert result.exit_code == 1 and "in use" not in result.output and len(result.output.strip().splitlines()) == 1
    with pytest.raises(StoreDamagedError):
        _extract(folder, tiny_spec, made)
    assert _extract(folder, tiny_spec, made, overwrite=True).complete


def _flip_in_chunk(path: Path, dataset: str, chunk: int = 0, offset: int = 40) -> None:
    with h5py.File(path, "r") as h5:
        start = h5[dataset].id.get_chunk_info(chunk).byte_offset
    with open(path, "r+b") as handle:
        handle.seek(start + offset)
        byte = handle.read(1)
        handle.seek(start + offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


def test_flipped_feature_bytes_fail_at_read_and_verify_names_them(made):
    ok = CliRunner().invoke(cli, ["info", str(made), "--verify"])
    assert ok.exit_code == 0 and "OK" in ok.output
    _flip_in_chunk(made, "features")
    with pytest.raises(StoreDamagedError, match="damaged .*--overwrite"):
        _ = FeatureStore(made).features
    result = CliRunner().invoke(cli, ["info", str(made), "--verify"])
    assert result.exit_code == 1
    assert "DAMAGED" in result.output and "/features: 1 damaged chunk(s) (rows 0-" in result.output


@pytest.mark.parametrize("dataset", ["status", "labels", "skip_reasons", "item_hash"])
def test_damaged_per_row_arrays_are_reported(made, dataset):
    _flip_in_chunk(made, dataset, offset=2)
    if dataset in ("status", "labels"):  # read on open; the others when needed
        with pytest.raises(StoreDamagedError):
            FeatureStore(made)
    report = featx.store.verify_store(made)
    assert not report.ok and any(p.startswith(f"/{dataset}:") for p in report.problems)


def test_pipeline_rebuilds_a_damaged_cached_store(tmp_path):
    import yaml

    images = write_image_folder(tmp_path / "images", n_per_class=4, classes=("r", "g"), size=(12, 12))
    config = tmp_path / "p.yaml"
    config.write_text(yaml.safe_dump({
        "name": "t", "source": {"path": str(images)}, "device": "cpu", "out": str(tmp_path / "out"),
        "backbones": [{"name": "test_efficientnet", "weights": "random", "label": "tiny", "workers": 0}],
        "heads": [{"name": "decision_tree", "params": {"pca": None}}],
    }))
    assert CliRunner().invoke(cli, ["run", str(config)]).exit_code == 0
    store = tmp_path / "out" / "features" / "tiny.h5"
    _flip_in_chunk(store, "features")
    result = CliRunner().invoke(cli, ["run", str(config)])
    assert result.exit_code == 0, result.output
    assert featx.store.verify_store(store).ok and FeatureStore(store).complete


def test_progress_sidecar_is_written_atomically_and_removed(folder, tiny_spec, tmp_path, monkeypatch):
    seen = []
    real = _progress.ProgressFile.__call__

    def spy(self, done, total, force=False):
        real(self, done, total, force=True)
        seen.append(featx.store.read_progress(tmp_path / "f.h5"))

    monkeypatch.setattr(_progress.ProgressFile, "__call__", spy)
    (tmp_path / ".f.h5.progress.json.999999.tmp").write_text("{")  # left by a writer killed mid-write
    _extract(folder, tiny_spec, tmp_path / "f.h5")
    assert [s["done"] for s in seen] == [2, 4, 6, 8] and all(s["total"] == 8 for s in seen)
    assert _leftovers(tmp_path) == []
