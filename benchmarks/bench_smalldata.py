"""featx's logreg head against scikit-learn's LogisticRegressionCV on small digits subsets.

Features: EfficientNet-Lite0 (real ImageNet weights, 224 px) embeddings of scikit-learn's
8x8 digits, extracted once with ``featx.FeatureExtractor`` (kept in ``--cache``). For each
setting (``--sets``: PER_CLASSxCLASSES) and each draw (``--draws``, seeds 0..R-1), PER_CLASS
items of each of the first CLASSES digits are drawn as the labelled data and
``--test-per-class`` other items of each class as the test set. featx splits the labelled
data as ``featx train`` does (val about 1/8, so 1-4 val items per class here) and runs
``select_and_fit`` (its protocol decides val or CV); the reference is
``make_pipeline(StandardScaler(), LogisticRegressionCV(cv=StratifiedKFold(5)))`` fitted on
the same labelled items. Both are scored on the same test items. Prints one line per draw
and the mean per setting.

    python benchmarks/bench_smalldata.py                       # 12x3 and 30x10, 5 draws
    python benchmarks/bench_smalldata.py --sets 12x3 --draws 2
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np


def digits_images():
    from sklearn.datasets import load_digits

    digits = load_digits()
    gray = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1), digits.target


def draw(labels, per_class: int, classes: int, test_per_class: int, seed: int):
    """(labelled rows, val mask within them, test rows): disjoint, stratified, seeded."""
    rng = np.random.default_rng(seed)
    labelled, val, test = [], [], []
    n_val = max(1, round(per_class / 8))
    for c in range(classes):
        rows = rng.permutation(np.flatnonzero(labels == c))
        labelled += list(rows[:per_class])
        val += [True] * n_val + [False] * (per_class - n_val)
        test += list(rows[per_class:per_class + test_per_class])
    return np.array(labelled), np.array(val), np.array(test)


def compare(X, y, labelled, val, test, seed: int) -> dict:
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from featx.heads import select_and_fit

    Xl, yl = X[labelled], y[labelled]
    started = time.perf_counter()
    model, record = select_and_fit("logreg", (Xl[~val], yl[~val]), (Xl[val], yl[val]), (Xl, yl),
                                   params={"engine": "sklearn"}, seed=seed)
    featx_seconds = time.perf_counter() - started
    pred = model.predict(X[test])
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        folds = StratifiedKFold(n_splits=min(5, int(np.bincount(yl).min())), shuffle=True, random_state=seed)
        ref = make_pipeline(StandardScaler(), LogisticRegressionCV(cv=folds, max_iter=1000)).fit(Xl, yl)
    ref_seconds = time.perf_counter() - started
    return {"featx": float(np.mean(pred == y[test])), "featx_C": record["params"]["C"],
            "featx_method": record.get("method"), "featx_classes_predicted": len(np.unique(pred)),
            "ref": float(ref.score(X[test], y[test])), "ref_C": float(ref[-1].C_[0]),
            "featx_seconds": featx_seconds, "ref_seconds": ref_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="12x3,30x10")
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--test-per-class", type=int, default=20)
    parser.add_argument("--cache", default="/tmp/featx-bench-digits-lite0.h5")
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    from featx import FeatureExtractor

    images, labels = digits_images()
    sets = [tuple(int(v) for v in s.split("x")) for s in args.sets.split(",")]
    needed = sorted({int(r) for per, k in sets for seed in range(args.draws)
                     for part in draw(labels, per, k, args.test_per_class, seed)[::2] for r in part})
    extractor = FeatureExtractor("efficientnet_lite0", device="cpu", batch_size=32, cache=args.cache).fit()
    X = np.zeros((len(labels), extractor.n_features_out_), dtype=np.float32)
    started = time.perf_counter()
    for start in range(0, len(needed), 128):  # in chunks, so an interrupted run keeps what it cached
        rows = needed[start:start + 128]
        X[rows] = extractor.transform(images[rows])
    print(f"features: {len(needed)} images, {time.perf_counter() - started:.0f} s (cached in {args.cache})")
    with threadpool_limits(1):
        for per, k in sets:
            rows = []
            for seed in range(args.draws):
                labelled, val, test = draw(labels, per, k, args.test_per_class, seed)
                r = compare(X, labels, labelled, val, test, seed)
                rows.append(r)
                print(f"{per}x{k} draw {seed}: featx {r['featx']:.3f} (C={r['featx_C']:.3g}, {r['featx_method']}, "
                      f"{r['featx_classes_predicted']} classes predicted, {r['featx_seconds']:.1f} s)  "
                      f"LogisticRegressionCV {r['ref']:.3f} (C={r['ref_C']:.3g}, {r['ref_seconds']:.1f} s)")
            f, ref = np.mean([r["featx"] for r in rows]), np.mean([r["ref"] for r in rows])
            print(f"{per}x{k} mean over {len(rows)} draws: featx {f:.3f}, LogisticRegressionCV {ref:.3f}, "
                  f"difference {100 * (f - ref):+.1f} points")


if __name__ == "__main__":
    main()
