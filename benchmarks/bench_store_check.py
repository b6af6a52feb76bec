"""What the store's staleness check costs on reuse: listing a folder, the old fingerprint
(stat of every file), and the per-item check (stat of every file, hashes only where stat
data changed), with nothing touched and with 1% of the files touched.

    python benchmarks/bench_store_check.py --n 20000          # --n 2000 for a quick run

No model runs: the item records are made by reading each file once, as extraction does.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from featx import ImageFolderSource
from featx.data import check_items, read_item_file


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="number of files (default 20000)")
    parser.add_argument("--size", type=int, default=2048, help="bytes per file (default 2048)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for c in range(10):
            folder = Path(tmp) / f"class{c}"
            folder.mkdir()
            for i in range(args.n // 10):
                (folder / f"{i:06d}.png").write_bytes(os.urandom(args.size))
        t_list, src = _timed(lambda: ImageFolderSource(tmp))
        paths = src.item_paths()
        records = [read_item_file(p)[1] for p in paths]
        stats = np.array([r.stat for r in records], dtype=np.int64)
        hashes = [r.digest for r in records]
        t_old, _ = _timed(src.fingerprint)
        t_new, check = _timed(lambda: check_items(paths, stats, hashes))
        assert not check.touched and not check.changed
        for p in paths[:: 100]:
            os.utime(p, ns=(time.time_ns(), time.time_ns() + 10**9))
        t_touched, check = _timed(lambda: check_items(paths, stats, hashes))
        print(f"{len(paths)} files of {args.size} B: listing {t_list:.3f} s, old fingerprint (stat all) {t_old:.3f} s, "
              f"item check unchanged {t_new:.3f} s, with 1% touched {t_touched:.3f} s "
              f"({len(check.touched)} re-hashed, {len(check.changed)} changed)")


if __name__ == "__main__":
    main()
