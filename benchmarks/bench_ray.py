"""Ray engine vs local engine: end-to-end extraction img/s on the same source, side by side.

Runs, interleaved so machine noise hits every side alike (``--repeats`` rounds):

* ``local``: ``featx.extract`` into a single file (DataLoader with ``--workers``, torch threads as set);
* ``local sharded``: the local engine writing ``--shard-size`` shards;
* ``ray 1 actor`` / ``ray 2 actors``: ``engine="ray"`` on a local Ray started once with
  ``--cpus`` CPUs (cluster start-up is not counted: a cluster is long-lived; each run
  still pays its actors' start-up and model build, as a real job does).

Each run writes a fresh store; img/s counts stored rows over wall time of ``extract()``.
Prints the best run per engine, Ray / local, and 2 / 1 actors. The goal (issue 13):
Ray local mode >= 0.8x the local engine. Examples::

    OMP_NUM_THREADS=1 python benchmarks/bench_ray.py --quick          # test model, 64 images: a sanity run
    OMP_NUM_THREADS=1 python benchmarks/bench_ray.py --source digits --n 800
    OMP_NUM_THREADS=1 python benchmarks/bench_ray.py --source data/cifar10/test --n 1000
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import featx


def subset(source, n: int):
    """Every k-th item, so all classes are represented."""
    sub = copy.copy(source)
    step = max(1, len(source.items) // n)
    sub.items = source.items[::step][:n]
    if hasattr(source, "images") and not hasattr(source, "root"):
        sub.images = source.images[::step][:n]
    return sub


def run(source, spec, args, **engine) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / ("store" if engine else "store.h5")
        start = time.perf_counter()
        store = featx.extract(source, spec, out, batch_size=args.batch_size, workers=args.workers, device="cpu",
                              quiet=True, **engine)
        return store.n_done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="digits")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--n", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1, help="local engine DataLoader workers")
    parser.add_argument("--shard-size", type=int, default=128)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs given to the local Ray")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="test_efficientnet, random weights, 64 images, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.backbone, args.weights, args.n, args.repeats, args.shard_size = "test_efficientnet", "random", 64, 1, 16

    import ray

    source = subset(featx.open_source(args.source), args.n)
    spec = featx.resolve_backbone(args.backbone, weights=args.weights)
    ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    sides = {
        "local": {},
        "local sharded": {"shard_size": args.shard_size},
        "ray 1 actor": {"engine": "ray", "shard_size": args.shard_size, "ray_options": {"actors": 1}},
        "ray 2 actors": {"engine": "ray", "shard_size": args.shard_size, "ray_options": {"actors": 2}},
    }
    print(f"{args.backbone}, {len(source)} images from {args.source}, batch {args.batch_size}, "
          f"shard {args.shard_size}, local Ray with {args.cpus} CPUs")
    results: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.repeats):
        for name, engine in sides.items():
            results[name].append(run(source, spec, args, **engine))
    ray.shutdown()
    best = {name: max(values) for name, values in results.items()}
    for name, values in results.items():
        print(f"  {name:14s} {best[name]:7.1f} img/s   (runs: {', '.join(f'{v:.1f}' for v in values)})")
    print(f"ray 1 actor / local: {best['ray 1 actor'] / best['local']:.2f}x   "
          f"ray 2 actors / local: {best['ray 2 actors'] / best['local']:.2f}x   (goal >= 0.8x)")
    print(f"ray 2 actors / 1 actor: {best['ray 2 actors'] / best['ray 1 actor']:.2f}x")


if __name__ == "__main__":
    main()
