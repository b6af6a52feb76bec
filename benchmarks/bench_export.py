"""Exported EfficientNet-Lite0 + logreg on CPU onnxruntime vs `featx predict`, images per second.

    python benchmarks/bench_export.py                    # 160 digits images, batch 16, 1 thread
    python benchmarks/bench_export.py --threads 2 --n 320

Both sides start from the same decoded PIL images and do the same work per batch of
``--batch-size``: timm's eval resize/crop to 224 x 224 uint8, then the network and the head.
`featx predict` is ``featx.load_model(...).predict_proba``; the exported side runs the
resize/crop the preprocess.json describes (featx's own uint8 transform) and then the ONNX
graph (normalisation, backbone and head inside). The graph alone (pre-cropped pixels) is
reported too. Rounds alternate between the two sides; the median round is reported.
The head is a logreg trained here on lite0 features of the images.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=160, help="images (default 160: 16 per digit class)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch and onnxruntime intra-op threads (default 1)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import numpy as np
    import onnxruntime as ort
    import torch
    from sklearn.datasets import load_digits

    import featx
    from featx.extraction import make_uint8_transform

    torch.set_num_threads(args.threads)
    digits = load_digits()
    per = max(1, args.n // 10)
    rows = np.concatenate([np.flatnonzero(digits.target == c)[:per] for c in range(10)])
    gray = np.rint(digits.images[rows] * (255.0 / 16.0)).astype(np.uint8)
    source = featx.ArraySource(np.repeat(gray[..., None], 3, axis=-1), digits.target[rows],
                               class_names=[str(i) for i in range(10)])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store = featx.extract(source, "efficientnet_lite0", out=tmp / "f.h5", batch_size=32, workers=0, device="cpu",
                              quiet=True)
        featx.train_heads(store, heads=["logreg"], out=tmp / "heads", n_boot=100)
        model = featx.load_model(tmp / "heads" / "logreg", device="cpu", batch_size=args.batch_size)
        featx.heads.export_model(tmp / "heads" / "logreg", tmp / "m.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
        session = ort.InferenceSession(str(tmp / "m.onnx"), options, providers=["CPUExecutionProvider"])
        config = {k: tuple(v) if isinstance(v, list) else v for k, v in model.manifest["data_config"].items()}
        transform = make_uint8_transform(config)
        images = [source.load(i) for i in range(len(source))]
        b = args.batch_size

        def crop(batch):
            return np.stack([transform(i).permute(1, 2, 0).numpy() for i in batch])

        cropped = [crop(images[s:s + b]) for s in range(0, len(images), b)]
        sides = {
            "featx predict (load_model.predict_proba)": lambda: model.predict_proba(images),
            "onnxruntime, resize/crop + graph": lambda: [session.run(None, {"pixels": crop(images[s:s + b])})
                                                         for s in range(0, len(images), b)],
            "onnxruntime, graph only (pre-cropped)": lambda: [session.run(None, {"pixels": c}) for c in cropped],
        }
        for fn in sides.values():  # warm-up
            fn()
        times: dict[str, list[float]] = {name: [] for name in sides}
        for _ in range(args.rounds):
            for name, fn in sides.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        ref = np.concatenate([session.run(None, {"pixels": c})[0] for c in cropped])
        diff = float(np.abs(ref - model.predict_proba(images)).max())
    print(f"{len(images)} images, batch {b}, {args.threads} thread(s), median of {args.rounds} rounds; "
          f"max |p_onnx - p_featx| = {diff:.2e}")
    base = len(images) / statistics.median(times["featx predict (load_model.predict_proba)"])
    for name, values in times.items():
        rate = len(images) / statistics.median(values)
        print(f"  {name:45s} {rate:8.1f} img/s  ({rate / base:.2f}x featx predict)")


if __name__ == "__main__":
    main()
