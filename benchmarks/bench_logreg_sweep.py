"""Time the logreg linear-probe sweep: featx's warm-started path vs. naive cold fits.

Data: a synthetic N x D, K-class problem with a linear signal in correlated features
(class centroids plus noise with a decaying spectrum, like pooled CNN embeddings), split
80/20 into train/val. featx's side is the warm-started path selection (``select_and_fit`` with
the ``logreg`` head switched to ``selection="path"``, the reference of ``featx bench logreg``;
the default is now the coarse-to-fine search, timed by ``featx bench logreg``): 45 C values from 1e-6 to 1e5, warm starts from strong to weak
L2, stopped once val accuracy has not improved for 8 points) plus its refit. The naive
side fits ``make_logreg(C)`` from scratch (lbfgs, max_iter=1000) at a few C values spread
over the same range the path walked; its per-C mean times the number of points the path
walked is what a naive sweep of that range would cost. Both sides run with the same BLAS
thread setting (``--blas-threads``, default one).

    python benchmarks/bench_logreg_sweep.py                       # 50,000 x 1,280, 10 classes
    python benchmarks/bench_logreg_sweep.py --n 5000 --naive 3    # quick look
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from featx.heads import get_head
from featx.heads._registry import make_logreg
from featx.heads._train import select_and_fit


def make_problem(n: int, dim: int, classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    centroids = rng.standard_normal((classes, dim)).astype(np.float32) * 0.05
    # Isotropic noise plus a strong low-rank component shared by all classes: correlated,
    # badly conditioned features, as pooled CNN embeddings are.
    factors = rng.standard_normal((64, dim)).astype(np.float32) * np.linspace(0.3, 0.03, 64, dtype=np.float32)[:, None]
    noise = rng.standard_normal((n, dim), dtype=np.float32) + rng.standard_normal((n, 64), dtype=np.float32) @ factors
    X = centroids[y] + noise + 1.0  # an offset, as non-negative pooled features have
    return X.astype(np.float32), y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000, help="training + validation items")
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--naive", type=int, default=4, help="C values fitted cold on the naive side")
    parser.add_argument("--blas-threads", type=int, default=1)
    args = parser.parse_args()

    X, y = make_problem(args.n, args.dim, args.classes)
    n_train = int(0.8 * args.n)
    train, val = (X[:n_train], y[:n_train]), (X[n_train:], y[n_train:])
    print(f"problem: {n_train} train + {args.n - n_train} val items, {args.dim} features, {args.classes} classes")

    with threadpool_limits(args.blas_threads, user_api="blas"):
        started = time.perf_counter()
        path = dataclasses.replace(get_head("logreg"), selection="path")
        _, record = select_and_fit(path, train, val, train, params={"engine": "sklearn"}, seed=0)
        ours = time.perf_counter() - started
        walked = [c["params"]["C"] for c in record["candidates"]]
        print(f"featx path: {len(walked)} of 45 C values walked ({walked[0]:.1e} .. {walked[-1]:.1e}), "
              f"chosen C={record['params']['C']:.3g} (val accuracy {record['val_accuracy']:.4f}); "
              f"sweep {record['selection_seconds']:.1f} s + refit {record['refit_seconds']:.1f} s = {ours:.1f} s")
        for c in record["candidates"]:
            print(f"  C={c['params']['C']:9.3g}  val {c['val_accuracy']:.4f}  {c['n_iter']:4d} iters  {c['seconds']:6.2f} s")

        picks = np.unique(np.linspace(0, len(walked) - 1, args.naive).round().astype(int))
        naive_times = []
        for i in picks:
            started = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model = make_logreg(C=walked[i]).fit(*train)
            naive_times.append(time.perf_counter() - started)
            print(f"naive cold fit C={walked[i]:9.3g}: {naive_times[-1]:6.1f} s, {int(model[-1].n_iter_[0])} iters, "
                  f"val {model.score(*val):.4f}")
    per_c = float(np.mean(naive_times))
    naive_sweep = per_c * len(walked)
    print(f"naive: {per_c:.1f} s per C (mean of {len(picks)}) x {len(walked)} C values = {naive_sweep:.0f} s "
          f"(the full 45-value grid: {per_c * 45:.0f} s)")
    print(f"speed-up of the warm-started path over naive cold fits of the same C values: {naive_sweep / ours:.1f}x "
          f"(vs. the full naive 45-value grid: {per_c * 45 / ours:.1f}x)")


if __name__ == "__main__":
    main()
