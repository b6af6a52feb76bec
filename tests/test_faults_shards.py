"""Fault injection on the sharded store's write path: a SIGKILL before every file-system step
of a sharded extraction (and of a sharded --overwrite), then a rerun; a full disk (a real 2 MB
tmpfs) during a shard commit and during export."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import featx.core.io as featx_io
from featx import FeatureStore, extract, resolve_backbone
from featx.cli import cli
from featx.store import verify_store

from .conftest import write_image_folder

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fault injection uses fork and tmpfs")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("kill") / "imgs", n_per_class=3, classes=("a", "b"),
                              size=(12, 10))


def _extract(folder, spec, out, **kwargs):
    return extract(folder, spec, out, shard_size=2, batch_size=2, workers=0, quiet=True, **kwargs)


@pytest.fixture(scope="module")
def fresh(folder, tiny_spec, tmp_path_factory):
    return _extract(folder, tiny_spec, tmp_path_factory.mktemp("fresh") / "s")


def _leftovers(root: Path) -> list[str]:
    """Temporary files, half-built replacements and moved-aside stores a run must not leave."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.name.endswith((".tmp", ".new", ".old", ".creating")) or ".progress" in p.name)


def _kill_before_step(n: int, action) -> bool:
    """Run ``action`` in a forked child that SIGKILLs itself before its ``n``-th file-system step
    (a rename, an fsync, a folder exchange or removal); True when the child was killed."""
    pid = os.fork()
    if pid == 0:
        steps = [0]

        def step(fn):
            def wrapped(*args, **kwargs):
                steps[0] += 1
                if steps[0] == n:
                    os.kill(os.getpid(), signal.SIGKILL)
                return fn(*args, **kwargs)
            return wrapped

        try:
            os.replace, os.fsync, shutil.rmtree = step(os.replace), step(os.fsync), step(shutil.rmtree)
            featx_io._exchange = step(featx_io._exchange)
            with contextlib.redirect_stderr(open(os.devnull, "w")):
                action()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


# Each step costs a fork and a rerun (seconds on a busy 2-core machine): the default suite kills
# at every 5th step, the slow one at every step.
STRIDES = [5, pytest.param(1, marks=pytest.mark.slow)]


@pytest.mark.parametrize("stride", STRIDES)
def test_a_kill_at_any_step_of_a_sharded_extraction_then_rerun_equals_uninterrupted(folder, tiny_spec, fresh,
                                                                                  tmp_path, stride):
    n = 1
    while True:
        out = tmp_path / f"run{n}" / "s"
        out.parent.mkdir()
        if not _kill_before_step(n, lambda out=out: _extract(folder, tiny_spec, out)):
            break
        if (out / "manifest.json").exists():  # whatever was left reads back, never a traceback
            assert CliRunner().invoke(cli, ["info", str(out)]).exit_code == 0
        resumed = _extract(folder, tiny_spec, out)
        assert resumed.complete and resumed.ids.tolist() == fresh.ids.tolist(), n
        np.testing.assert_array_equal(resumed.features, fresh.features)
        assert verify_store(out).ok and _leftovers(out.parent) == [], (n, _leftovers(out.parent))
        n += stride
    assert n > 10  # the sweep went through the whole write path (items, shards, manifests, finish)


@pytest.mark.parametrize("stride", STRIDES)
def test_a_kill_at_any_step_of_a_sharded_overwrite_leaves_the_old_or_the_new_store(folder, fresh, tmp_path, stride):
    max_spec = resolve_backbone("test_efficientnet", weights="random", pooling="max")
    n, seen = 1, set()
    while True:
        out = tmp_path / f"run{n}" / "s"
        shutil.copytree(fresh.path, out)
        killed = _kill_before_step(n, lambda out=out: _extract(folder, max_spec, out, overwrite=True))
        featx_io.recover_dir(out)  # as the next run does: puts back a store moved aside between two renames
        store = FeatureStore(out)
        pooling = store.config["backbone"]["pooling"]
        seen.add(pooling)
        assert store.complete and verify_store(out).ok, n
        if pooling == "avg":
            np.testing.assert_array_equal(store.features, fresh.features)
        again = _extract(folder, max_spec, out, overwrite=True)
        assert again.complete and again.config["backbone"]["pooling"] == "max"
        assert _leftovers(out.parent) == [], (n, _leftovers(out.parent))
        if not killed:
            break
        n += stride
    assert seen == {"avg", "max"} and n > 10


# -- a real full disk ------------------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path):
    """A 2 MB tmpfs (needs root: mount); skipped where it cannot be mounted."""
    where = tmp_path / "disk"
    where.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.decode().strip() or 'not root'})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _fill(disk: Path, leave: int) -> Path:
    """Fill the disk up to ``leave`` bytes free."""
    filler = disk / "filler"
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    filler.write_bytes(b"\0" * max(0, free - leave))
    return filler


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_full_disk_during_a_shard_commit_is_one_line_then_resumes(folder, tiny_spec, fresh, tiny_disk):
    out = tiny_disk / "s"
    filler = _fill(tiny_disk, _size(fresh.path) // 2)
    result = CliRunner().invoke(cli, ["extract", "--source", str(folder), "--backbone", "test_efficientnet",
                                      "--weights", "random", "--out", str(out), "--shard-size", "2",
                                      "--batch-size", "2", "--workers", "0", "-q"])
    assert result.exit_code == 1 and "no space left on device" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and _leftovers(tiny_disk) == []
    filler.unlink()
    resumed = _extract(folder, tiny_spec, out)
    np.testing.assert_array_equal(resumed.features, fresh.features)
    assert verify_store(out).ok


def test_full_disk_during_export_is_one_line_and_leaves_no_file(fresh, tmp_path, tiny_disk):
    probe = tmp_path / "probe.parquet"
    assert CliRunner().invoke(cli, ["export", str(fresh.path), str(probe)]).exit_code == 0
    _fill(tiny_disk, probe.stat().st_size // 3)
    result = CliRunner().invoke(cli, ["export", str(fresh.path), str(tiny_disk / "f.parquet")])
    assert result.exit_code == 1 and "no space left on device" in result.output, result.output
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["filler"]
