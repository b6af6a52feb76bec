"""How far reduced precision moves cached features: relative L2 and cosine against CPU fp32.

Speed lives in ``featx bench extract``; this script keeps the one thing that command does
not measure, the feature drift of each precision (the numbers behind fp16 being the CUDA
default and fp32 the CPU default). Example::

    python benchmarks/precision_drift.py --source digits --limit 400
    python benchmarks/precision_drift.py --source /data/cifar10/test --limit 2000 --device cuda   # fp32/fp16/bf16 on GPU
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

import featx
from featx.extraction import subset_source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="digits")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--limit", type=int, default=400)
    parser.add_argument("--device", default="cpu", help="device of the reduced-precision runs; the reference is CPU fp32")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        source = subset_source(featx.open_source(args.source), args.limit, Path(tmp))
        runs = [("cpu", "fp32")] + [(args.device, p) for p in ("fp32", "fp16", "bf16") if (args.device, p) != ("cpu", "fp32")]
        features = {}
        for device, precision in runs:
            store = featx.extract(source, args.backbone, Path(tmp) / f"{device}-{precision}.h5", device=device,
                                  precision=precision, batch_size=args.batch_size, quiet=True)
            features[(device, precision)] = store.features
    ref = features[("cpu", "fp32")]
    for key, feats in features.items():
        if key == ("cpu", "fp32"):
            continue
        rel = np.linalg.norm(feats - ref, axis=1) / (np.linalg.norm(ref, axis=1) + 1e-12)
        cos = (feats * ref).sum(1) / (np.linalg.norm(feats, axis=1) * np.linalg.norm(ref, axis=1) + 1e-12)
        print(f"{key[0]} {key[1]:5s} vs cpu fp32: relative L2 mean {rel.mean():.4%} max {rel.max():.4%}; "
              f"cosine mean {cos.mean():.5f} min {cos.min():.5f}")


if __name__ == "__main__":
    main()
