"""The Ray engine, in Ray's local mode on 2 CPUs: equality with the local engine, resume after
SIGKILL of the driver, a worker node lost mid-extraction, and its one-line failures.

One ``ray.init(num_cpus=2)`` serves the module; the two-node test runs last, on its own cluster.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from featx import FeatureStore, extract
from featx.cli import cli

from .conftest import write_image_folder

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[1]
TINY = ["--backbone", "test_efficientnet", "--weights", "random"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = write_image_folder(tmp_path_factory.mktemp("ray") / "imgs", n_per_class=8, classes=("a", "b"))
    (root / "a" / "003.png").write_bytes(b"")  # a skipped row inside a shard
    return root


@pytest.fixture(scope="module")
def local_store(folder, tiny_spec, tmp_path_factory):
    return extract(folder, tiny_spec, tmp_path_factory.mktemp("local") / "f.h5", quiet=True, workers=0)


def _assert_same_as_local(store, local):
    assert store.complete
    assert store.all_ids.tolist() == local.all_ids.tolist()
    assert len(set(store.ids.tolist())) == len(store.ids)
    assert store.skipped == local.skipped
    np.testing.assert_allclose(store.features, local.features, atol=1e-5)


# These two run before the shared Ray starts: connect() joins an already running Ray as is.
def test_unreachable_address_is_one_line_and_writes_nothing(folder, tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "store"
    result = CliRunner().invoke(cli, ["extract", "--source", str(folder), *TINY, "--out", str(out),
                                      "--engine", "ray", "--address", "127.0.0.1:1", "-q"])
    assert result.exit_code == 1
    assert "cannot reach the Ray cluster at 127.0.0.1:1" in result.output
    assert not out.exists()


def test_missing_ray_names_the_extra(folder, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, as without the extra
    out = tmp_path / "store"
    result = CliRunner().invoke(cli, ["extract", "--source", str(folder), *TINY, "--out", str(out),
                                      "--engine", "ray", "-q"])
    assert result.exit_code == 1 and "pip install -e '.[ray]'" in result.output
    assert not out.exists()


def test_ray_engine_equals_local_engine(ray_local, folder, tiny_spec, local_store, tmp_path):
    out = tmp_path / "ray"
    store = extract(folder, tiny_spec, out, engine="ray", shard_size=5, quiet=True)
    _assert_same_as_local(store, local_store)
    assert store.run_info["engine"] == "ray" and store.config == local_store.config
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and sorted(manifest["shards"]) == ["0", "1", "2", "3"]
    assert extract(folder, tiny_spec, out, engine="ray", shard_size=5, quiet=True).reused
    # The local engine reads (and would resume) the same directory.
    assert extract(folder, tiny_spec, out, shard_size=5, quiet=True).reused


def test_ray_engine_reads_webdataset_shards(ray_local, tiny_spec, tmp_path):
    """A tar-shard source goes through the Ray engine (pickled to the workers) as through the local one."""
    from .test_scale_sources import write_shards

    pattern = str(write_shards(tmp_path / "wds", n_shards=2, per_shard=3) / "{00000..00001}.tar")
    local = extract(pattern, tiny_spec, tmp_path / "local.h5", quiet=True, workers=0)
    store = extract(pattern, tiny_spec, tmp_path / "ray", engine="ray", shard_size=4, quiet=True)
    assert store.ids.tolist() == local.ids.tolist() == [f"0000{s}/0000{s}000{k}" for s in range(2) for k in range(3)]
    np.testing.assert_allclose(store.features, local.features, atol=1e-5)


def test_cuda_on_a_cluster_without_gpus(ray_local, folder, tmp_path):
    out = tmp_path / "store"
    result = CliRunner().invoke(cli, ["extract", "--source", str(folder), *TINY, "--out", str(out),
                                      "--engine", "ray", "--device", "cuda", "-q"])
    assert result.exit_code == 1 and "has no GPUs" in result.output
    assert not out.exists()


def test_a_failing_task_is_one_featx_line(ray_local, folder, tiny_spec, tmp_path):
    """A source whose reads fail with an unexpected error: Ray Data's pages become one line naming it."""
    from featx import FeatxError, ImageFolderSource

    class Exploding(ImageFolderSource):  # defined here: pickled by value to the Ray workers
        def load(self, index):
            raise RuntimeError("disk went away")

    with pytest.raises(FeatxError) as caught:
        extract(Exploding(folder), tiny_spec, tmp_path / "out", engine="ray", shard_size=8, quiet=True)
    message = str(caught.value)
    assert message.startswith("extraction on Ray failed: a Ray task failed (RuntimeError: disk went away)")
    assert "\n" not in message


def test_resume_after_driver_sigkill(ray_local, folder, tiny_spec, local_store, tmp_path):
    out = tmp_path / "killed"
    address = ray_local.get_runtime_context().gcs_address
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ADDRESS": address}
    proc = subprocess.Popen([sys.executable, "-m", "tests._ray_driver", str(folder), str(out)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while not list(out.glob("part-*.h5")):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no shard committed in time"
            time.sleep(0.05)
        assert proc.poll() is None  # killed mid-run, not after it finished
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    partial = FeatureStore(out)
    assert not partial.complete and partial.n_pending > 0
    resumed = extract(folder, tiny_spec, out, engine="ray", shard_size=4, quiet=True)
    assert resumed.run_info["rows_this_run"] < len(local_store.all_ids)  # committed shards were kept
    _assert_same_as_local(resumed, local_store)


def test_worker_node_removed_mid_extraction(ray_local, folder, tiny_spec, local_store, tmp_path):
    from ray.cluster_utils import Cluster

    ray_local.shutdown()
    # The head takes no work, so every shard runs on one of the two worker nodes.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = {node.node_id: node for node in (cluster.add_node(num_cpus=1), cluster.add_node(num_cpus=1))}
    ray_local.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    out, outcome = tmp_path / "two-nodes", {}

    def run():
        try:
            outcome["store"] = extract(folder, tiny_spec, out, engine="ray", shard_size=2, quiet=True,
                                       ray_options={"actors": 2})
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread's assert
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    try:
        thread.start()
        deadline = time.monotonic() + 120
        while not list(out.glob("part-*.h5")) and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert thread.is_alive(), outcome  # the node goes away while shards are still pending
        # Remove the node that demonstrably did work: the writer of the first committed shard.
        first = next(iter(json.loads((out / "manifest.json").read_text())["shards"].values()), None)
        victim = first["node"] if first else next(iter(workers))
        cluster.remove_node(workers[victim])  # Ray API: add/remove nodes on the main thread
        thread.join(timeout=180)
        assert not thread.is_alive() and "error" not in outcome, outcome
        store = outcome["store"]
        _assert_same_as_local(store, local_store)
        survivors = {e["node"] for e in store.manifest["shards"].values()} - {victim}
        assert survivors, "no shard was written after the node loss"
    finally:
        ray_local.shutdown()
        cluster.shutdown()


def _bmp_folder(root: Path, n: int = 4) -> Path:
    """Images of one size in a format whose file size depends on the size alone (same-size edits)."""
    from PIL import Image

    rng = np.random.default_rng(1)
    for c, name in enumerate(("a", "b")):
        (root / name).mkdir(parents=True)
        for i in range(n):
            pixels = rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)
            pixels[..., c] = 255
            Image.fromarray(pixels).save(root / name / f"{i:03d}.bmp")
    return root


def test_ray_written_shards_carry_item_hashes(ray_local, tiny_spec, tmp_path):
    """A touch is a refresh, a same-size same-mtime edit re-extracts its shard: as for local stores."""
    from PIL import Image

    folder, out = _bmp_folder(tmp_path / "imgs"), tmp_path / "ray"
    store = extract(folder, tiny_spec, out, engine="ray", shard_size=4, quiet=True)
    assert store.has_item_hashes and store.manifest["item_records"]
    stats, hashes = store.item_records()
    features = store.features.copy()
    assert all(len(h) == 64 for h in hashes) and (stats >= 0).all()
    os.utime(folder / "a" / "001.bmp")  # touched: same bytes, new mtime
    again = extract(folder, tiny_spec, out, engine="ray", shard_size=4, quiet=True)
    assert again.reused and again.item_records()[0][1].tolist() != stats[1].tolist()
    edited = folder / "b" / "002.bmp"
    before = edited.stat()
    Image.fromarray(np.zeros((20, 24, 3), dtype=np.uint8)).save(edited)
    os.utime(edited, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert edited.stat().st_size == before.st_size and edited.stat().st_mtime_ns == before.st_mtime_ns
    redone = extract(folder, tiny_spec, out, engine="ray", shard_size=4, quiet=True)
    assert not redone.reused and redone.run_info["rows_this_run"] == 4  # the edited item's shard, alone
    row = redone.all_ids.tolist().index("b/002.bmp")
    assert not np.allclose(redone.features[row], features[row])


def test_a_store_resumes_across_engines(ray_local, folder, tiny_spec, local_store, tmp_path):
    """Both engines write the same shards: a local store resumes on Ray, and a Ray store locally."""
    out = tmp_path / "both"
    first = extract(folder, tiny_spec, out, shard_size=4, quiet=True, workers=0)
    assert first.has_item_hashes
    (out / "part-00001.h5").unlink()  # as if that shard never landed
    on_ray = extract(folder, tiny_spec, out, engine="ray", shard_size=4, quiet=True)
    assert on_ray.run_info["engine"] == "ray" and on_ray.run_info["rows_this_run"] == 4
    _assert_same_as_local(on_ray, local_store)
    (out / "part-00002.h5").unlink()
    back = extract(folder, tiny_spec, out, shard_size=4, quiet=True, workers=0)
    assert back.run_info.get("engine", "local") == "local" and back.run_info["rows_this_run"] == 4
    _assert_same_as_local(back, local_store)
    assert extract(folder, tiny_spec, out, engine="ray", shard_size=4, quiet=True).reused


def test_quiet_ray_extraction_prints_no_ray_lines(ray_local, folder, tmp_path):
    """With -q, stderr holds featx's own lines only: none of Ray's banners, warnings or core-worker errors."""
    address = ray_local.get_runtime_context().gcs_address
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_BACKEND_LOG_LEVEL", None)
    done = subprocess.run([sys.executable, "-m", "featx.cli", "extract", "--source", str(folder), *TINY, "--out",
                           str(tmp_path / "q"), "--engine", "ray", "--address", address, "--actors", "2",
                           "--shard-size", "4", "-q"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines and all(line.startswith("featx: ") for line in lines), lines
