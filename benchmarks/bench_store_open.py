"""What the single-file store's header check costs when a store is opened: the same file opened
as a format 2 store (``header_sha256`` checked against its attributes and item listing) and as
a format 1 store (no header hash), alternately, in one run.

    python benchmarks/bench_store_open.py --n 200000          # --n 20000 for a quick run

No model runs: the store is written with the store's own writer (8 zero features per row).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from featx import FeatureStore
from featx.store import StoreWriter


def _write(path: Path, n: int) -> None:
    ids = [f"class{i % 10}/img_{i:07d}.jpg" for i in range(n)]
    writer = StoreWriter.create(path, config={"backbone": {"model": "bench", "weights": "random"}}, fingerprint="bench",
                                ids=ids, labels=[i % 10 for i in range(n)], splits=[""] * n,
                                class_names=[str(i) for i in range(10)], dim=8, dtype="float32")
    step = 50_000
    for start in range(0, n, step):
        rows = min(step, n - start)
        writer.write_batch(start, np.zeros((rows, 8), np.float32), [None] * rows)
    writer.finish({"seconds_this_run": 0.0})
    writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        hashed, unhashed = Path(tmp) / "v2.h5", Path(tmp) / "v1.h5"
        _write(hashed, args.n)
        shutil.copy(hashed, unhashed)
        with h5py.File(unhashed, "r+") as h5:  # as a format 1 store: no header hash to check
            h5.attrs["featx_format"] = 1
            del h5.attrs["header_sha256"]
        print(f"load average before: {os.getloadavg()}")
        times: dict[str, list[float]] = {"format 2 (header checked)": [], "format 1 (no header hash)": []}
        for _ in range(args.repeats):
            for name, path in zip(times, (hashed, unhashed)):
                start = time.perf_counter()
                FeatureStore(path)
                times[name].append(time.perf_counter() - start)
        for name, values in times.items():
            print(f"{name}: median {np.median(values):.3f} s over {args.repeats} opens of {args.n} rows")
        ratio = np.median(times["format 2 (header checked)"]) / np.median(times["format 1 (no header hash)"])
        print(f"ratio (checked / unchecked): {ratio:.2f}")
        print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
