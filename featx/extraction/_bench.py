"""``featx bench extract``: where extraction's time goes, measured side by side in one process.

Same model, batch size, precision and memory layout for every measurement:

* ``bare``: the model's forward on batches already decoded, cropped, normalised and on
  the device (a set of distinct batches cycled over, so the number of images matches);
* ``loader``: the uint8 loader alone (workers decode and crop, the device normalises),
  no model; and timm's float eval transform in the same number of workers (the path
  before issue 11), for the factor between them;
* ``end_to_end``: :func:`featx.extract` from the files into a fresh store in a temporary
  folder; ``end_to_end_img_s`` is its extraction loop (as the store's run info records
  it), ``end_to_end_wall_img_s`` the whole call, model build and listing included;
* ``bare_loop``: what a user writes without featx, on the same images, model, threads and
  allocator settings: per batch, open and decode each file with Pillow, timm's float eval
  transform, stack, forward; no store. ``loop_ratio`` is featx's extraction loop against
  it. The two run alternately, twice each, best of each (the first pass warms the page
  cache for both).

A benchmark is only as good as the cores it had: during the bare run the process's CPU
time is compared with the wall time (on CPU torch should keep its threads busy), and the
load average is read before and after; a shortfall is reported as "machine busy".
"""

from __future__ import annotations

import csv
import os
import tempfile
import time
from pathlib import Path

import torch

from ..core.cpus import usable_cpus
from ..core.runtime import autocast_context, resolve_device, resolve_precision, tune_malloc
from ..data import ArraySource, Source, open_source
from ._backbones import DEFAULT_BACKBONE, create_backbone, resolve_backbone
from ._engine import device_batches, prepare_model
from ._extractor import extract
from ._inputs import ItemDataset, make_eval_transform
from ._loader import DeviceNormalizer, input_dtype, make_loader, make_uint8_transform
from ._sizing import resolve_batch_size, resolve_workers

__all__ = ["bench_extract", "bare_loop", "subset_source", "check_cores", "sync", "format_table"]

_DISTINCT_BATCHES = 16


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def subset_source(source: Source, limit: int | None, folder: Path) -> Source:
    """Every k-th item (all classes represented) as a source of its own: a CSV of the files, or arrays."""
    n = len(source)
    if not limit or limit >= n:
        return source
    step = max(1, n // limit)
    picked = list(range(0, n, step))[:limit]
    if hasattr(source, "path_of"):
        manifest = folder / "bench.csv"
        with manifest.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "label"])
            for i in picked:
                writer.writerow([os.path.abspath(source.path_of(i)), source.class_names[source.items[i].label]])
        return open_source(manifest, max_pixels=getattr(source, "max_pixels", None))
    images = [source.load(i) for i in picked]
    return ArraySource(images, [source.items[i].label for i in picked], class_names=source.class_names,
                       ids=[source.items[i].id for i in picked], name=source.name)


def check_cores(cpu_seconds: float, wall_seconds: float, threads: int, load_before: float, load_after: float,
                cores: int, dev: torch.device) -> list[str]:
    """Reasons to distrust the numbers (empty when the run had the cores it assumed)."""
    reasons = []
    if dev.type == "cpu" and wall_seconds > 0:
        busy = cpu_seconds / wall_seconds
        if busy < 0.75 * min(threads, cores):
            reasons.append(f"bare forward kept {busy:.2f} cores busy, expected ~{min(threads, cores)} "
                           f"(torch threads {threads}, usable cores {cores})")
    # Our own run adds up to ``threads`` to the load; more than that came from elsewhere.
    others = max(load_before, load_after - min(threads, cores))
    if others > 0.5 * cores:
        reasons.append(f"load average {load_before:.2f} before / {load_after:.2f} after on {cores} usable cores")
    return reasons


def _loadavg() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:  # pragma: no cover - not on Linux
        return 0.0


def _preloaded(source: Source, data_config: dict, batch_size: int, dev, precision: str, channels_last: bool):
    transform = make_uint8_transform(data_config)
    normalizer = DeviceNormalizer(data_config["mean"], data_config["std"], dev, input_dtype(dev, precision),
                                  channels_last)
    n = min(len(source), batch_size * _DISTINCT_BATCHES)
    crops = []
    for i in range(n):
        try:
            crops.append(transform(source.load(i)))
        except Exception:  # noqa: BLE001 - a bad image is simply left out of the bare batches
            continue
    crops = crops or [torch.zeros(tuple(data_config["input_size"]), dtype=torch.uint8)]
    while len(crops) < batch_size:  # fewer good images than one batch: repeat them
        crops = crops + crops
    stacked = torch.stack(crops)
    return [normalizer(stacked[i:i + batch_size].to(dev)) for i in range(0, len(stacked) - batch_size + 1, batch_size)]


def _bare(model, batches, n_images: int, batch_size: int, dev, precision: str) -> tuple[float, float, float]:
    """(img/s, process CPU seconds, wall seconds) of ``n_images`` worth of forward passes."""
    steps = max(1, -(-n_images // batch_size))
    autocast = autocast_context(dev, precision)
    with torch.inference_mode(), autocast:
        for x in batches[:3]:  # warm-up: allocator, kernels, compile
            model(x)
        sync(dev)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for step in range(steps):
            model(batches[step % len(batches)])
        sync(dev)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return steps * batch_size / wall, cpu, wall


def _loader_alone(source: Source, data_config: dict, batch_size: int, workers: int, dev, precision: str,
                  channels_last: bool, decode: str) -> float:
    batches = [list(range(i, min(i + batch_size, len(source)))) for i in range(0, len(source), batch_size)]
    stream = device_batches(source, data_config, batches, dev=dev, precision=precision, workers=workers,
                            channels_last=channels_last, decode=decode)
    started = time.perf_counter()
    n = 0
    for _, images, _ in stream:
        n += len(images)
    sync(dev)
    return n / (time.perf_counter() - started)


def _float_loader_alone(source: Source, data_config: dict, batch_size: int, workers: int, dev) -> float:
    """The loader before issue 11: timm's float eval transform in the workers, float32 to the device."""
    batches = [list(range(i, min(i + batch_size, len(source)))) for i in range(0, len(source), batch_size)]
    dataset = ItemDataset(source, make_eval_transform(data_config), tuple(data_config["input_size"]))
    loader = make_loader(dataset, batches, workers, dev)
    started = time.perf_counter()
    n = 0
    for _, images, _ in loader:
        n += len(images.to(dev, non_blocking=True))
    sync(dev)
    return n / (time.perf_counter() - started)


def bare_loop(model, source: Source, data_config: dict, batch_size: int, dev, precision: str) -> float:
    """img/s of the plain loop a user would write: decode, eval transform, stack, forward, in turn."""
    from PIL import Image

    transform = make_eval_transform(data_config)
    path_of = getattr(source, "path_of", None)
    autocast = autocast_context(dev, precision)
    started = time.perf_counter()
    with torch.inference_mode(), autocast:
        for first in range(0, len(source), batch_size):
            rows = range(first, min(first + batch_size, len(source)))
            images = [Image.open(path_of(i)).convert("RGB") if path_of else source.load(i) for i in rows]
            model(torch.stack([transform(image) for image in images]).to(dev))
    sync(dev)
    return len(source) / (time.perf_counter() - started)


def _loop_and_featx(model, src: Source, spec, data_config, batch_size, dev, prec, workers, channels_last, compile,
                    decode, folder: Path) -> tuple[float, float, float]:
    """(bare loop img/s, featx extraction-loop img/s, featx whole-call wall s), alternated twice, best of each."""
    loop, e2e, wall = 0.0, 0.0, float("inf")
    for attempt in range(2):
        loop = max(loop, bare_loop(model, src, data_config, batch_size, dev, prec))
        started = time.perf_counter()
        store = extract(src, spec, folder / f"bench{attempt}.h5", batch_size=batch_size, device=str(dev),
                        workers=workers, precision=prec, channels_last=channels_last, compile=compile, decode=decode,
                        quiet=True)
        wall = min(wall, time.perf_counter() - started)
        e2e = max(e2e, float(store.run_info.get("images_per_second") or 0.0))
    return loop, e2e, wall


def _settings(spec, data_config, batch_size, auto, workers, prec, channels_last, compile, decode, n) -> dict:
    return {"backbone": spec.display_name, "input_size": list(data_config["input_size"]), "batch_size": batch_size,
            "batch_size_auto": auto, "workers": workers, "precision": prec, "channels_last": channels_last,
            "compile": compile, "decode": decode, "n_images": n, "torch_threads": torch.get_num_threads(),
            "usable_cores": usable_cpus()}


def bench_extract(source: str | os.PathLike | Source = "digits", backbone: str = DEFAULT_BACKBONE, *,
                  weights: str | None = None, batch_size: int | str = 8, workers: int | str = "auto", device: str = "auto",
                  precision: str = "auto", channels_last: bool | None = None, compile: bool = False,
                  decode: str = "cpu", limit: int | None = None, float_loader: bool = True) -> dict:
    """Measure bare forward, loader alone and end-to-end extraction img/s; the ratios; the settings."""
    tune_malloc()
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    workers = resolve_workers(workers, dev)
    spec = resolve_backbone(backbone, weights=weights)
    channels_last = dev.type == "cuda" if channels_last is None else bool(channels_last)
    with tempfile.TemporaryDirectory(prefix="featx-bench-") as tmp:
        src = subset_source(open_source(source), limit, Path(tmp))
        model, data_config = create_backbone(spec)
        model = prepare_model(model, dev, channels_last, compile=False)
        batch_size, auto = resolve_batch_size(batch_size, model, tuple(data_config["input_size"]), dev, prec,
                                              channels_last)
        fast = torch.compile(model) if compile else model
        batches = _preloaded(src, data_config, batch_size, dev, prec, channels_last)
        load_before = _loadavg()
        bare, cpu, wall = _bare(fast, batches, len(src), batch_size, dev, prec)
        load_after = _loadavg()
        # Alternated twice, best of each: the first pass also warms the page cache and the
        # worker start-up, which would otherwise count against whichever ran first.
        loader, float_rate = 0.0, None
        for _ in range(2):
            loader = max(loader, _loader_alone(src, data_config, batch_size, workers, dev, prec, channels_last, decode))
            if float_loader:
                rate = _float_loader_alone(src, data_config, batch_size, workers, dev)
                float_rate = max(float_rate or 0.0, rate)
        loop, e2e, wall_e2e = _loop_and_featx(model, src, spec, data_config, batch_size, dev, prec, workers,
                                              channels_last, compile, decode, Path(tmp))
        n = len(src)
    warnings = check_cores(cpu, wall, torch.get_num_threads(), load_before, load_after, usable_cpus(), dev)
    return {
        "bare_img_s": round(bare, 2), "loader_img_s": round(loader, 2), "end_to_end_img_s": round(e2e, 2),
        "end_to_end_wall_img_s": round(n / wall_e2e, 2), "ratio": round(e2e / bare, 3),
        "loader_ratio": round(loader / bare, 3), "bare_loop_img_s": round(loop, 2),
        "loop_ratio": round(e2e / loop, 3) if loop else None, "float_loader_img_s": None if float_rate is None else round(float_rate, 2),
        "uint8_vs_float_loader": None if not float_rate else round(loader / float_rate, 2),
        "device": _device_name(dev), "settings": _settings(spec, data_config, batch_size, auto, workers, prec,
                                                           channels_last, compile, decode, n),
        "cores": {"bare_cpu_seconds": round(cpu, 3), "bare_wall_seconds": round(wall, 3),
                  "loadavg_before": round(load_before, 2), "loadavg_after": round(load_after, 2),
                  "loadavg_end": round(_loadavg(), 2)},
        "machine_busy": bool(warnings), "warnings": warnings,
    }


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return f"{dev} ({torch.cuda.get_device_name(dev)})"
    return f"cpu ({usable_cpus()} usable cores)"


def format_table(result: dict) -> str:
    """The result as a small text table with the ratios."""
    s = result["settings"]
    lines = [f"{s['backbone']} at {s['input_size'][1]}px on {result['device']}: batch {s['batch_size']}, "
             f"{s['precision']}, channels_last {s['channels_last']}, compile {s['compile']}, workers {s['workers']}, "
             f"decode {s['decode']}, {s['n_images']} images, {s['torch_threads']} torch threads",
             f"{'what':34s} {'img/s':>10s} {'x bare':>8s}",
             f"{'bare forward (pre-loaded)':34s} {result['bare_img_s']:>10.1f} {1.0:>8.2f}",
             f"{'loader alone (uint8)':34s} {result['loader_img_s']:>10.1f} {result['loader_ratio']:>8.2f}"]
    if result["float_loader_img_s"]:
        lines.append(f"{'loader alone (float, before)':34s} {result['float_loader_img_s']:>10.1f} "
                     f"{result['float_loader_img_s'] / result['bare_img_s']:>8.2f}")
    lines += [f"{'bare loop (decode+transform+fwd)':34s} {result['bare_loop_img_s']:>10.1f} "
              f"{result['bare_loop_img_s'] / result['bare_img_s']:>8.2f}",
              f"{'end to end (extraction loop)':34s} {result['end_to_end_img_s']:>10.1f} {result['ratio']:>8.2f}",
              f"{'end to end (whole call)':34s} {result['end_to_end_wall_img_s']:>10.1f} "
              f"{result['end_to_end_wall_img_s'] / result['bare_img_s']:>8.2f}"]
    if result["loop_ratio"]:
        lines.append(f"featx extraction loop vs the bare loop from files: {result['loop_ratio']:.3f}x")
    lines.append(f"load average {result['cores']['loadavg_before']:.2f} before / {result['cores']['loadavg_end']:.2f} "
                 f"at the end, {s['usable_cores']} usable cores")
    if result["uint8_vs_float_loader"]:
        lines.append(f"uint8 loader vs float loader, same workers: {result['uint8_vs_float_loader']:.2f}x")
    if result["machine_busy"]:
        lines.append("machine busy: numbers unreliable (" + "; ".join(result["warnings"]) + ")")
    return "\n".join(lines)

