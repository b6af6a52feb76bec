"""``featx bench extract --engine ray`` (and ``benchmarks/bench_ray.py``): the Ray engine's
overhead against the local engine, end to end on the same source, side by side.

Sides, interleaved over ``repeats`` rounds so machine noise hits each alike: the local
engine into one file, the local engine into shards, and the Ray engine with 1 and with
``actors`` actors on one Ray started once (cluster start-up is not counted: a cluster is
long-lived; each run still pays its actors' start-up and model build, as a real job does).
img/s is stored rows over the wall time of ``extract()``. Goal (issue 13): Ray local mode
>= 0.8x the local engine.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

__all__ = ["bench_ray_extract", "format_ray_table"]


def _one(source, spec, engine: dict, batch_size, workers) -> float:
    from ._extractor import extract

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / ("store" if engine else "store.h5")
        start = time.perf_counter()
        store = extract(source, spec, out, batch_size=batch_size, workers=workers, device="cpu", quiet=True, **engine)
        return store.n_done / (time.perf_counter() - start)


def bench_ray_extract(source, backbone: str, *, weights=None, batch_size: int = 8, workers: int = 1,
                      limit: int | None = None, shard_size: int = 128, actors: int = 2, cpus: int | None = None,
                      repeats: int = 1) -> dict:
    """img/s per side (best of ``repeats``) and the ratios; see the module docstring."""
    from ..data import open_source
    from ._backbones import resolve_backbone
    from ._bench import subset_source
    from ._ray import _import_ray, _quiet_backend

    ray = _import_ray()
    with tempfile.TemporaryDirectory() as folder:
        src = subset_source(open_source(source), limit, Path(folder))
        spec = resolve_backbone(backbone, weights=weights)
        sides = {"local": {}, "local sharded": {"shard_size": shard_size}}
        for n in sorted({1, actors}):
            sides[f"ray {n} actor{'s' if n > 1 else ''}"] = {"engine": "ray", "shard_size": shard_size,
                                                              "ray_options": {"actors": n}}
        started_here = not ray.is_initialized()
        if started_here:
            with _quiet_backend():
                ray.init(address="local", num_cpus=cpus, include_dashboard=False, logging_level="ERROR",
                         log_to_driver=False)
        try:
            load_before = os.getloadavg()
            runs = {name: [] for name in sides}
            for _ in range(repeats):
                for name, engine in sides.items():
                    runs[name].append(_one(src, spec, engine, batch_size, workers))
            ray_cpus = int(ray.cluster_resources().get("CPU", 0))
        finally:
            if started_here:
                ray.shutdown()
    best = {name: max(v) for name, v in runs.items()}
    ray_sides = [n for n in best if n.startswith("ray")]
    return {"settings": {"backbone": backbone, "n_images": len(src), "batch_size": batch_size, "workers": workers,
                         "shard_size": shard_size, "ray_cpus": ray_cpus, "repeats": repeats,
                         # The machine's load around the runs: on a shared machine the walls say how busy it was.
                         "load_average": {"before": [round(v, 2) for v in load_before],
                                          "after": [round(v, 2) for v in os.getloadavg()]}},
            "img_per_s": best, "runs": runs,
            "ray_over_local": {n: best[n] / best["local"] for n in ray_sides},
            "actors_scaling": best[ray_sides[-1]] / best[ray_sides[0]] if len(ray_sides) > 1 else None}


def format_ray_table(result: dict) -> str:
    s = result["settings"]
    lines = [f"{s['backbone']}, {s['n_images']} images, batch {s['batch_size']}, shard {s['shard_size']}, "
             f"Ray with {s['ray_cpus']} CPUs, best of {s['repeats']}, load average (1/5/15 min) "
             f"{'/'.join(map(str, s['load_average']['before']))} before, "
             f"{'/'.join(map(str, s['load_average']['after']))} after"]
    for name, value in result["img_per_s"].items():
        runs = ", ".join(f"{v:.1f}" for v in result["runs"][name])
        lines.append(f"  {name:14s} {value:8.1f} img/s   (runs: {runs})")
    lines.append("  " + "   ".join(f"{n} / local: {r:.2f}x" for n, r in result["ray_over_local"].items())
                 + "   (goal >= 0.8x)")
    if result["actors_scaling"] is not None:
        lines.append(f"  scaling, most / 1 actor: {result['actors_scaling']:.2f}x")
    return "\n".join(lines)
