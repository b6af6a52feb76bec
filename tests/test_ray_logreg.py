"""The streaming logreg as a data-parallel task (``featx train --engine ray --heads logreg``).

The collective logic (each worker's share of the shards, every sum over rows an all-reduce)
is checked without Ray: two threads play two workers, summing through a barrier, and must
make exactly the single-process streaming fit's choices. The Ray Train run itself (start-up
~60 s on 2 busy cores) is marked slow.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.datasets import make_classification

import featx
from featx.cli import cli
from featx.heads import get_head
from featx.heads._ray_logreg import _Share, worker_share
from featx.heads._stream_logreg import select_logreg_stream
from featx.store import BatchReader


def _store(path, n=3000, dim=20, shard_size=250):
    X, y = make_classification(n_samples=n, n_features=dim, n_informative=6, n_redundant=2, n_classes=3,
                               n_clusters_per_class=1, class_sep=0.7, flip_y=0.05, random_state=0)
    return featx.write_store(path, X.astype(np.float32), y, class_names=["a", "b", "c"], shard_size=shard_size)


class _ThreadSum:
    """An all-reduce among threads: each rank's part, summed in rank order, the same for all."""

    def __init__(self, world: int):
        self.barrier, self.parts = threading.Barrier(world), [None] * world

    def reduce_for(self, rank: int):
        def reduce(values):
            self.parts[rank] = np.array(values, dtype=np.float64)
            self.barrier.wait()
            total = sum(self.parts[1:], self.parts[0].copy())
            self.barrier.wait()  # nobody overwrites a part before every rank has summed
            return total
        return reduce


def _readers(store, masks, rank=None, world=None):
    mine = worker_share(store, rank, world, 4096) if world else np.ones(int(store.done_mask.sum()), bool)
    return [_Share(BatchReader(store, m & mine, batch_rows=128), int(m.sum()), store.labels[m]) for m in masks]


def test_shares_cover_every_row_once_in_whole_shards(tmp_path):
    store = _store(tmp_path / "s", n=1000, shard_size=100)
    shares = [worker_share(store, r, 3, 4096) for r in range(3)]
    assert (np.sum(shares, axis=0) == 1).all() and all(s.any() for s in shares)
    shard = np.arange(1000) // 100
    assert all(len(set(shard[s])) * 100 == s.sum() for s in shares)  # whole shards, none split
    single = featx.write_store(tmp_path / "f.h5", np.zeros((50, 4), np.float32), np.arange(50) % 2)
    assert sum(worker_share(single, r, 2, 16).sum() for r in range(2)) == 50


def test_two_workers_make_the_single_process_fit(tmp_path):
    """Data-parallel (every sum all-reduced) equals the one-process streaming fit: same C, same weights."""
    store = _store(tmp_path / "s", n=1200)
    split = np.array(["train", "train", "train", "val", "test"])[np.arange(1200) % 5]
    masks = [split == "train", split == "val", np.isin(split, ("train", "val"))]
    spec = get_head("logreg")
    alone, alone_sel = select_logreg_stream(spec, {}, 0, *_readers(store, masks))
    summed, results = _ThreadSum(2), {}

    def worker(rank):
        results[rank] = select_logreg_stream(spec, {}, 0, *_readers(store, masks, rank, 2),
                                             reduce=summed.reduce_for(rank))

    threads = [threading.Thread(target=worker, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert set(results) == {0, 1}
    for model, selection in results.values():
        assert selection["params"]["C"] == alone_sel["params"]["C"]
        assert [c["params"]["C"] for c in selection["candidates"]] == [c["params"]["C"] for c in alone_sel["candidates"]]
        np.testing.assert_allclose(model[0].mean_, alone[0].mean_, rtol=1e-9)
        np.testing.assert_allclose(model[0].scale_, alone[0].scale_, rtol=1e-7)
        np.testing.assert_allclose(model[-1].coef_, alone[-1].coef_, atol=2e-3)
    np.testing.assert_array_equal(results[0][0][-1].coef_, results[1][0][-1].coef_)  # the workers agree exactly


@pytest.mark.ray
@pytest.mark.slow
def test_train_logreg_on_ray_train(tmp_path):
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.train.torch")
    store = _store(tmp_path / "store")
    runner = CliRunner()
    local = runner.invoke(cli, ["train", "--features", str(store.path), "--heads", "logreg", "--out",
                                str(tmp_path / "local"), "-q", "--json"])
    assert local.exit_code == 0, local.output
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        result = runner.invoke(cli, ["train", "--features", str(store.path), "--heads", "logreg", "--engine", "ray",
                                     "--ray-workers", "2", "--out", str(tmp_path / "ray"), "-q", "--json"])
    finally:
        ray.shutdown()
    assert result.exit_code == 0, result.output
    mine, theirs = json.loads(result.output)[0], json.loads(local.output)[0]
    assert mine["engine"] == "ray" and mine["ray_train_runs"] == 1 and mine["memory_path"] == "streaming"
    assert abs(mine["accuracy"] - theirs["accuracy"]) <= 0.005, (mine["accuracy"], theirs["accuracy"])
    for key in ("n_train", "n_val", "n_test", "splits_digest", "refit_on"):
        assert mine[key] == theirs[key], key
    # Saved through the local head's path: it loads and reproduces its own test predictions.
    # (load_head: these features were imported, so there is no backbone for load_model to embed images with)
    head = featx.load_head(tmp_path / "ray" / "logreg")
    assert len(head.predict(store.features[:7])) == 7
    evaluated = runner.invoke(cli, ["evaluate", "--model", str(tmp_path / "ray" / "logreg"), "--features",
                                    str(store.path), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.output)["accuracy"] == mine["accuracy"]
    assert not (tmp_path / "ray" / ".ray-train").exists()
