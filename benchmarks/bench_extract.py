"""Extraction throughput: end to end (decode + transform + forward + HDF5 write) vs the bare model.

Measures, in one run and interleaved so machine noise hits both sides alike:

* ``bare``: ``model(batch)`` on tensors already decoded, transformed and stacked in memory;
* ``e2e``: ``featx.extract`` from the source into a fresh store (DataLoader workers, HDF5 writes);

each in fp32 and bf16 autocast, at the same batch size; then what bf16 does to the
features (cosine similarity to fp32, and a 5-fold logistic-regression accuracy on
both). Prints the ratios. Example::

    python benchmarks/bench_extract.py --source digits --n 800
    python benchmarks/bench_extract.py --source data/cifar10/test --n 400    # JPEG files
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import featx
from featx.core.runtime import tune_malloc
from featx.extraction import make_eval_transform


def subset(source, n: int):
    """Every k-th item, so all classes are represented."""
    sub = copy.copy(source)
    step = max(1, len(source.items) // n)
    sub.items = source.items[::step][:n]
    if hasattr(source, "images") and not hasattr(source, "root"):
        sub.images = source.images[::step][:n]
    return sub


def bare_forward(model, tensors: torch.Tensor, batch_size: int, precision: str) -> float:
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    start = time.perf_counter()
    with torch.inference_mode(), autocast:
        for i in range(0, len(tensors), batch_size):
            model(tensors[i : i + batch_size])
    return len(tensors) / (time.perf_counter() - start)


def end_to_end(source, backbone: str, batch_size: int, precision: str, workers: int) -> tuple[float, np.ndarray]:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        store = featx.extract(source, backbone, Path(tmp) / "bench.h5", batch_size=batch_size, precision=precision,
                              workers=workers, device="cpu", quiet=True)
        seconds = time.perf_counter() - start
        return store.n_done / seconds, store.features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="digits")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--n", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    tune_malloc()
    source = subset(featx.open_source(args.source), args.n)
    model, data_config = featx.create_backbone(args.backbone)
    transform = make_eval_transform(data_config)
    tensors = torch.stack([transform(source.load(i)) for i in range(len(source))])
    print(f"{args.backbone} at {data_config['input_size'][1]}px, {len(source)} images from {args.source}, "
          f"batch {args.batch_size}, {torch.get_num_threads()} torch threads, {args.workers} loader worker(s)")

    results: dict[str, list[float]] = {}
    features = {}
    bare_forward(model, tensors[: args.batch_size * 4], args.batch_size, "fp32")  # warm-up
    for _ in range(args.repeats):
        for precision in ("fp32", "bf16"):
            results.setdefault(f"bare {precision}", []).append(bare_forward(model, tensors, args.batch_size, precision))
            speed, feats = end_to_end(source, args.backbone, args.batch_size, precision, args.workers)
            results.setdefault(f"e2e {precision}", []).append(speed)
            features[precision] = feats
    best = {k: max(v) for k, v in results.items()}
    for key, values in results.items():
        print(f"  {key:10s} {best[key]:7.1f} img/s   (runs: {', '.join(f'{v:.1f}' for v in values)})")
    print(f"e2e / bare, fp32: {best['e2e fp32'] / best['bare fp32']:.2f}")
    print(f"e2e / bare, bf16: {best['e2e bf16'] / best['bare bf16']:.2f}")
    print(f"bf16 / fp32 speed-up: bare {best['bare bf16'] / best['bare fp32']:.2f}x, "
          f"e2e {best['e2e bf16'] / best['e2e fp32']:.2f}x")

    a, b = features["fp32"], features["bf16"]
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    rel = np.linalg.norm(a - b, axis=1) / (np.linalg.norm(a, axis=1) + 1e-12)
    print(f"bf16 vs fp32 features: cosine mean {cos.mean():.5f} min {cos.min():.5f}; "
          f"relative L2 error mean {rel.mean():.4f} max {rel.max():.4f}")
    labels = source.labels
    if len(np.unique(labels)) > 1 and np.bincount(labels).min() >= 5:
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import cross_val_score
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
        acc = {p: cross_val_score(probe, f, labels, cv=5).mean() for p, f in features.items()}
        print(f"5-fold logistic-regression accuracy: fp32 {acc['fp32']:.4f}, bf16 {acc['bf16']:.4f}")


if __name__ == "__main__":
    main()
