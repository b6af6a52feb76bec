"""Ray on a 2-node cluster started on this machine (``ray.cluster_utils.Cluster``, 2 worker nodes
of 1 CPU each, a head node with none), side by side in one run:

1. ``extract --engine ray --actors 2``: wall time, and which node wrote each shard (both must);
2. ``train --heads xgboost``: the local engine against the Ray head, once per ``--strategies``
   (``auto``, what a user gets, then ``data``: Ray Train workers and XGBoost's collective), on one
   imported store of ROWS x DIM (``featx.write_store``, Gaussian classes), wall times side by side.

Timing claims need the machine to itself: run it plainly (not under ``nice``), and read the
load average it prints. Examples::

    OMP_NUM_THREADS=1 python benchmarks/bench_ray_cluster.py --rows 5000 --dim 128 --images 128   # quick
    python benchmarks/bench_ray_cluster.py --skip extract --rows 50000 --dim 1280
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _load() -> str:
    return "/".join(f"{v:.2f}" for v in os.getloadavg())


def _extract_on_cluster(ray, cluster, source: str, backbone: str, images: int, shard_size: int) -> dict:
    import featx

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        store = featx.extract(source, backbone, Path(tmp) / "store", limit=images, shard_size=shard_size,
                              engine="ray", quiet=True, ray_options={"actors": 2, "address": cluster.address})
        wall = time.perf_counter() - started
        writers = {e["name"]: e["node"][:8] for e in sorted(store.manifest["shards"].values(), key=lambda e: e["index"])}
    return {"images": store.n_done, "wall_s": round(wall, 1), "img_per_s": round(store.n_done / wall, 2),
            "shards_by_node": writers, "nodes_writing": len(set(writers.values()))}


def _gaussian_store(path: Path, rows: int, dim: int, classes: int, shard_size: int):
    import featx

    rng = np.random.default_rng(0)
    y = rng.integers(0, classes, rows)
    centres = rng.standard_normal((classes, dim)).astype(np.float32) * (3.0 / np.sqrt(dim))
    X = centres[y] + rng.standard_normal((rows, dim), dtype=np.float32) * 0.6
    return featx.write_store(path, X, y, class_names=[f"c{k}" for k in range(classes)], shard_size=shard_size)


def _xgboost_side_by_side(ray, cluster, rows: int, dim: int, classes: int, workers: int, strategies) -> dict:
    """The local head, then the Ray head once per strategy (``auto``: what a user gets), on one store."""
    from featx.heads import train_heads, train_xgboost_ray

    report = {"rows": rows, "dim": dim, "classes": classes, "ray_workers": workers}
    with tempfile.TemporaryDirectory() as tmp:
        store = _gaussian_store(Path(tmp) / "store", rows, dim, classes, shard_size=max(1024, rows // 8))
        started = time.perf_counter()
        local = train_heads(store, ["xgboost"], out=Path(tmp) / "local", n_boot=100)[0]
        local_wall = time.perf_counter() - started
        report["local"] = {"wall_s": round(local_wall, 1), "accuracy": local["accuracy"], "params": local["params"]}
        for strategy in strategies:
            report[f"load_before_{strategy}"] = _load()
            started = time.perf_counter()
            on_ray = train_xgboost_ray(store, Path(tmp) / f"ray-{strategy}", workers=workers, address=cluster.address,
                                       n_boot=100, params={"strategy": strategy})
            wall = time.perf_counter() - started
            report[f"ray_{strategy}"] = {
                "wall_s": round(wall, 1), "ray_over_local_wall": round(wall / local_wall, 2),
                "strategy": on_ray["ray_strategy"]["strategy"], "accuracy": on_ray["accuracy"],
                "params": on_ray["params"], "selection_seconds": on_ray["selection"]["selection_seconds"],
                "refit_seconds": on_ray["selection"]["refit_seconds"]}
            print(json.dumps({strategy: report[f"ray_{strategy}"]}), file=sys.stderr, flush=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="digits", help="images for the extraction part (any featx source)")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--shard-size", type=int, default=32)
    parser.add_argument("--rows", type=int, default=50000)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2, help="Ray Train workers for xgboost")
    parser.add_argument("--strategies", default="auto,data",
                        help="Ray xgboost strategies to time beside the local head (auto: what a user gets)")
    parser.add_argument("--skip", choices=("extract", "xgboost"), default=None)
    args = parser.parse_args()
    import ray
    from ray.cluster_utils import Cluster

    report = {"load_before": _load(), "cpus": os.cpu_count()}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    nodes = [cluster.add_node(num_cpus=1), cluster.add_node(num_cpus=1)]
    report["nodes"] = [n.node_id[:8] for n in nodes]
    try:
        ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False, include_dashboard=False)
        if args.skip != "extract":
            report["extract"] = _extract_on_cluster(ray, cluster, args.source, args.backbone, args.images,
                                                    args.shard_size)
            print(json.dumps(report["extract"]), file=sys.stderr, flush=True)
        if args.skip != "xgboost":
            report["xgboost"] = _xgboost_side_by_side(ray, cluster, args.rows, args.dim, args.classes, args.workers,
                                                      args.strategies.split(","))
    finally:
        ray.shutdown()
        cluster.shutdown()
    report["load_after"] = _load()
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
