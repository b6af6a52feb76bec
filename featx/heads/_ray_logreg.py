"""``featx train --engine ray --heads logreg``: the out-of-core logreg as one Ray Train ``TorchTrainer`` task.

The same fit as the local streaming engine (:mod:`._stream_logreg`), data-parallel: each of
W Ray Train workers opens the store by its path and reads its share of the shards (a
contiguous run of shards, or of row blocks in a single-file store) through the store's
verified batch iterator (:class:`featx.store.BatchReader`: sha256 per shard, ids against
``items.h5``). Every sum over rows is a sum over the workers by ``torch.distributed``'s
all-reduce on the gloo process group Ray Train sets up: the scaler's counts, means and
variances, each L-BFGS loss and gradient, and the val counts. So every worker runs the same
L-BFGS steps on the full-batch objective and the same C search (C chosen on val, the
coarse-to-fine walk and its edge extension, refit on train+val warm-started from the chosen
C), in one worker group (one start-up per fit). The gradient is the loss's closed form
(:func:`logreg_loss_and_grad`) rather than autograd, so it is all-reduced directly instead
of through ``DistributedDataParallel``, which only hooks autograd's backward pass.

Rank 0 hands the fitted pipeline (``StandardScaler`` then ``TorchLogisticRegression``, the
local head's own classes) back in a Ray Train checkpoint; the driver then scores, saves and
records it through the local head's own path (``_train``), so ``featx.load_model`` and
``featx evaluate`` treat it as any logreg head. Ray Train's storage folder is removed after
the fit, whatever its outcome.
"""

from __future__ import annotations

import pickle
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..core.errors import missing_extra
from ..extraction import join_ray, ray_errors
from ._stream_logreg import select_logreg_stream

__all__ = ["select_logreg_ray", "worker_share"]

_TRAIN_DIR = ".ray-train"
_CHECKPOINT = "head.pkl"


def worker_share(store, rank: int, world: int, batch_rows: int) -> np.ndarray:
    """The done rows worker ``rank`` of ``world`` reads: whole shards (a single file: whole row
    blocks), in contiguous runs, so every worker reads only its own files' rows."""
    n = store.n_items
    if hasattr(store, "shards"):
        block, n_blocks = np.arange(n) // int(store.manifest["shard_size"]), int(store.manifest["n_shards"])
    else:
        block, n_blocks = np.arange(n) // max(1, batch_rows), -(-n // max(1, batch_rows))
    owner = block * world // max(1, n_blocks)
    return (owner == rank)[store.done_mask]


class _Share:
    """A worker's share of one split, seen with the whole split's size and labels (what the
    selection walk and the loss weights need), read through the verified :class:`BatchReader`."""

    def __init__(self, reader, n_rows: int, labels: np.ndarray):
        self.reader, self.n_rows, self.labels, self.dim = reader, n_rows, labels, reader.dim

    def __iter__(self):
        return iter(self.reader)

    def __len__(self) -> int:
        return self.n_rows


def _all_reduce(values: np.ndarray) -> np.ndarray:
    """The sum of ``values`` over the Ray Train workers (torch.distributed on gloo), in float64."""
    import torch
    import torch.distributed as dist

    tensor = torch.from_numpy(np.array(values, dtype=np.float64))
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.numpy()


def _worker_loop(config: dict) -> None:
    """Ray Train worker: its share of the rows, the whole selection and refit in step with the others."""
    import os

    import ray.train
    import torch

    from ..store import BatchReader, FeatureStore
    from ._registry import get_head

    torch.set_num_threads(int(config["threads"]))
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    store = FeatureStore(config["path"])
    mine = worker_share(store, rank, world, config["batch_rows"])
    readers = {}
    for name, packed in config["rows"].items():
        rows = np.unpackbits(packed, count=config["n_done"]).astype(bool)
        readers[name] = _Share(BatchReader(store, rows & mine, batch_rows=config["batch_rows"]), int(rows.sum()),
                               store.labels[rows])
    model, selection = select_logreg_stream(get_head(config["head"]), config["fixed"], config["seed"],
                                            readers["train"], readers["val"], readers["refit"], reduce=_all_reduce)
    if rank == 0:
        with tempfile.TemporaryDirectory() as folder:
            with open(os.path.join(folder, _CHECKPOINT), "wb") as fh:
                pickle.dump((model, selection), fh)
            ray.train.report({"rows": int(len(readers["refit"]))}, checkpoint=ray.train.Checkpoint.from_directory(folder))
    else:
        ray.train.report({})


def _fit(config: dict, workers: int, storage: Path) -> tuple:
    """One Ray Train run (one worker-group start-up): (fitted pipeline, selection record)."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    trainer = TorchTrainer(
        _worker_loop, train_loop_config=config, torch_config=TorchConfig(backend="gloo"),
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=False, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(storage_path=str(storage)),
    )
    result = trainer.fit()
    with result.checkpoint.as_directory() as folder, open(Path(folder) / _CHECKPOINT, "rb") as fh:
        return pickle.load(fh)


def select_logreg_ray(spec, fixed: dict, seed: int, train, val, refit, *, ray_options: dict, cache_dir=None,
                      **_) -> tuple:
    """The streaming selector's contract (:func:`select_logreg_stream`) with the fit on Ray Train.

    ``train``/``val``/``refit``: the driver's :class:`BatchReader` of each split (only their row
    masks travel, bit-packed); ``ray_options``: ``workers`` (default 2) and ``address``.
    """
    try:
        import ray
        import ray.train.torch  # noqa: F401
    except ImportError:
        raise missing_extra("--engine ray needs Ray Train", "ray") from None
    workers = int(ray_options.get("workers") or 2)
    store = train.store
    config = {"path": str(Path(store.path).resolve()), "head": spec.name, "fixed": dict(fixed), "seed": int(seed),
              "batch_rows": int(train.batch_rows), "threads": 1, "n_done": int(len(train.rows)),
              "rows": {name: np.packbits(reader.rows) for name, reader in
                       (("train", train), ("val", val), ("refit", refit))}}
    started_here = join_ray(ray, ray_options.get("address"))
    # Featx's own folder for Ray Train (beside the heads, which a cluster shares; else a temporary one).
    storage = Path(cache_dir).resolve() / _TRAIN_DIR if cache_dir is not None else \
        Path(tempfile.mkdtemp(prefix="featx-ray-train-"))
    shutil.rmtree(storage, ignore_errors=True)
    try:
        with ray_errors("logreg on Ray Train", cleanup=storage):
            model, selection = _fit(config, workers, storage)
    finally:
        shutil.rmtree(storage, ignore_errors=True)
        if started_here:
            ray.shutdown()
    return model, {**selection, "ray_workers": workers, "ray_train_runs": 1}
