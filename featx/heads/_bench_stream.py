"""``featx bench heads``: the in-memory and the streaming path of a head, side by side.

Synthetic separable data (Gaussian classes around random centres, overlapping enough
that accuracy is not 100%) is written as a sharded store block by block (never whole in
memory), then ``featx train`` runs once per path in its own subprocess: the in-memory
path with a budget large enough to hold everything, the streaming path under
``--max-memory``. Each subprocess is started by a small wrapper that reports
``getrusage(RUSAGE_CHILDREN).ru_maxrss``, the peak resident memory of that one run
(a child's figure, so the bench process's own memory never counts). Wall time, peak RSS
and test accuracy come from those runs and their ``results.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

__all__ = ["bench_heads", "separable_blocks"]

_IN_MEMORY_BUDGET = "1TiB"
_WRAPPER = (
    "import json, resource, subprocess, sys, time\n"
    "t = time.perf_counter()\n"
    "rc = subprocess.run(sys.argv[1:]).returncode\n"
    "wall = time.perf_counter() - t\n"
    "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024\n"  # Linux: KiB
    "print(json.dumps({'rc': rc, 'wall_s': wall, 'peak_rss_bytes': peak}))\n"
)


def separable_blocks(rows: int, dim: int, classes: int, seed: int = 0, block: int = 65536):
    """(labels, iterator of feature blocks): Gaussian classes around random centres, unequal feature scales."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, rows)
    # Centres about 3.5 noise sigmas apart on average whatever the dimension: not separable
    # to 100% (a logreg on 30,000 x 128, 10 classes, scored 0.79), so accuracies can differ.
    centres = (rng.standard_normal((classes, dim)) * (2.5 / np.sqrt(dim))).astype(np.float32)
    scales = rng.uniform(0.5, 2.0, dim).astype(np.float32)  # unequal scales: the standardiser matters

    def blocks():
        block_rng = np.random.default_rng(seed + 1)
        for start in range(0, rows, block):
            y = labels[start:start + block]
            noise = block_rng.standard_normal((len(y), dim), dtype=np.float32)
            yield (centres[y] + noise) * scales

    return labels, blocks()


def _run(cmd: list[str]) -> dict:
    done = subprocess.run([sys.executable, "-c", _WRAPPER, *cmd], capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        from ..core.errors import FeatxError

        raise FeatxError(f"bench run failed: {' '.join(cmd)}\n{done.stderr.strip().splitlines()[-1:] or ''}")
    return json.loads(lines[-1])


def bench_heads(rows: int, dim: int, classes: int, max_memory: str, *, heads: str = "logreg", seed: int = 0,
                shard_size: int | None = None, threads: int = 1, workdir: str | None = None, keep: bool = False,
                quiet: bool = True) -> dict:
    """Train ``heads`` on one synthetic sharded store in memory and streamed; wall, peak RSS, accuracy of each."""
    from ..core.memory import memory_plan, parse_size
    from ..store import write_store

    budget = parse_size(max_memory)
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="featx-bench-heads-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        started = time.perf_counter()
        labels, blocks = separable_blocks(rows, dim, classes, seed)
        store = root / "store"
        if store.exists():
            shutil.rmtree(store)
        write_store(store, blocks, labels, shard_size=shard_size or max(1000, rows // 20), source_name="synthetic")
        write_seconds = time.perf_counter() - started
        runs = {}
        for path, limit in (("in_memory", _IN_MEMORY_BUDGET), ("streaming", max_memory)):
            out = root / path
            cmd = [sys.executable, "-m", "featx.cli", "train", "--features", str(store), "--heads", heads, "--out",
                   str(out), "--max-memory", limit, "--bootstrap", "100", "--threads", str(threads), "-q"]
            if not quiet:
                print(f"featx: bench heads: {path} ...", file=sys.stderr, flush=True)
            measured = _run(cmd)
            results = json.loads((out / "results.json").read_text())
            runs[path] = {**measured, "rows": [{k: r.get(k) for k in ("head", "accuracy", "memory_path", "max_memory",
                                                                      "fit_seconds", "params", "skipped")}
                                               for r in results]}
        doc = {"settings": {"rows": rows, "dim": dim, "classes": classes, "max_memory": budget, "heads": heads,
                            "threads": threads, "store_bytes": sum(p.stat().st_size for p in store.iterdir()),
                            "write_seconds": round(write_seconds, 2),
                            "plan": memory_plan(rows, dim, max_memory)},
               "runs": runs, "machine": {"cores": os.cpu_count(), "loadavg": list(os.getloadavg())}}
        doc["accuracy_gap_points"] = {
            r["head"]: round(100 * (r["accuracy"] - m["accuracy"]), 3)
            for r, m in zip(runs["streaming"]["rows"], runs["in_memory"]["rows"])
            if r.get("accuracy") is not None and m.get("accuracy") is not None}
        return doc
    finally:
        if not keep and not workdir:
            shutil.rmtree(root, ignore_errors=True)
