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


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield ray
    ray.shutdown()


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
