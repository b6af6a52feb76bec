"""Ray engine vs local engine: end-to-end extraction img/s on the same source, side by side.

The same measurement as ``featx bench extract --engine ray`` (``featx.extraction.bench_ray_extract``:
local single file, local sharded, Ray local mode with 1 and 2 actors, interleaved), with a
``--quick`` sanity mode. Examples::

    OMP_NUM_THREADS=1 python benchmarks/bench_ray.py --quick          # test model, 64 images
    OMP_NUM_THREADS=1 python benchmarks/bench_ray.py --source digits --n 800 --repeats 2
    OMP_NUM_THREADS=1 featx bench extract --engine ray --source digits --limit 800
"""

from __future__ import annotations

import argparse

from featx.extraction import bench_ray_extract, format_ray_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="digits")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--n", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1, help="local engine DataLoader workers")
    parser.add_argument("--shard-size", type=int, default=128)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs given to the local Ray")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="test_efficientnet, random weights, 64 images, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.backbone, args.weights, args.n, args.repeats, args.shard_size = "test_efficientnet", "random", 64, 1, 16
    result = bench_ray_extract(args.source, args.backbone, weights=args.weights, batch_size=args.batch_size,
                               workers=args.workers, limit=args.n, shard_size=args.shard_size, actors=args.actors,
                               cpus=args.cpus, repeats=args.repeats)
    print(format_ray_table(result))


if __name__ == "__main__":
    main()
