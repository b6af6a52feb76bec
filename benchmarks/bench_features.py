"""What the issue-12 extraction options cost: extra layers (one pass) and the hflip view, end to end.

Extracts the same N images into fresh stores, interleaved over ``--repeats`` rounds so
machine noise hits every variant alike:

* ``plain``: the pooled pre-logits (today's store);
* ``layers``: plus ``--layers`` (default ``-1,-2``) from the same forward pass;
* ``hflip``: the pooled embedding averaged with the mirror image's (two passes);

and prints each variant's median seconds, its ratio to ``plain`` and the stored width.
Expected: ``layers`` close to 1.0x (the layers are by-products of the pass), ``hflip``
about 2x the forward share. Example (a few minutes on 2 CPU cores)::

    OMP_NUM_THREADS=1 python benchmarks/bench_features.py --source digits --n 200 --repeats 3
"""

from __future__ import annotations

import argparse
import copy
import statistics
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="digits")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--layers", default="-1,-2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    source = subset(featx.open_source(args.source), args.n)
    spec = featx.resolve_backbone(args.backbone, weights=args.weights)
    variants = {"plain": {}, "layers": {"layers": args.layers}, "hflip": {"views": "hflip"}}
    seconds: dict[str, list[float]] = {k: [] for k in variants}
    widths: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.repeats):
            for name, options in variants.items():
                path = Path(tmp) / f"{name}-{round_}.h5"
                started = time.perf_counter()
                store = featx.extract(source, spec, path, batch_size=args.batch_size, device=args.device, quiet=True,
                                      **options)
                seconds[name].append(time.perf_counter() - started)
                widths[name] = sum(s["dim"] for s in store.feature_sets)
    base = statistics.median(seconds["plain"])
    print(f"{args.backbone} on {len(source)} images of {args.source}, batch {args.batch_size}, {args.repeats} rounds")
    for name in variants:
        med = statistics.median(seconds[name])
        print(f"  {name:7s} {med:7.2f} s  {med / base:5.2f}x plain  stored width {widths[name]}")


if __name__ == "__main__":
    main()
