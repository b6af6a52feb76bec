"""featx's extraction loop against a bare loop from files, with and without the background decode thread.

    python benchmarks/bench_decode_thread.py DIR [--limit 400] [--rounds 2] [--threads N]

One process, same model (EfficientNet-Lite0, offline weights), images, batch size, torch
threads and allocator settings (featx's ``tune_malloc`` is applied before anything runs,
so the bare loop gets it too). Each round runs, in turn: the bare loop (Pillow decode,
timm's float eval transform, stack, forward), ``featx.extract`` with the decode thread
(the default with 0 workers) and ``featx.extract`` without it (``FEATX_DECODE_THREAD=0``);
best of the rounds for each. Prints img/s, the ratios and the load average seen.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from featx.core.runtime import tune_malloc
from featx.data import open_source
from featx.extraction import bare_loop, create_backbone, extract, resolve_backbone, subset_source


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("source")
    parser.add_argument("--limit", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    tune_malloc()
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = resolve_backbone("efficientnet_lite0")
    model, data_config = create_backbone(spec)
    dev = torch.device("cpu")
    best = {"bare_loop": 0.0, "featx_thread": 0.0, "featx_no_thread": 0.0}
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="featx-decode-") as tmp:
        src = subset_source(open_source(args.source), args.limit, Path(tmp))
        for attempt in range(args.rounds):
            best["bare_loop"] = max(best["bare_loop"], bare_loop(model, src, data_config, args.batch_size, dev, "fp32"))
            for name, flag in (("featx_thread", "1"), ("featx_no_thread", "0")):
                os.environ["FEATX_DECODE_THREAD"] = flag
                store = extract(src, spec, Path(tmp) / f"{name}{attempt}.h5", batch_size=args.batch_size, device="cpu",
                                workers=0, quiet=True)
                best[name] = max(best[name], float(store.run_info["images_per_second"]))
            loads.append(os.getloadavg()[0])
    os.environ.pop("FEATX_DECODE_THREAD", None)
    result = {"img_s": {k: round(v, 2) for k, v in best.items()},
              "featx_thread_vs_loop": round(best["featx_thread"] / best["bare_loop"], 3),
              "featx_no_thread_vs_loop": round(best["featx_no_thread"] / best["bare_loop"], 3),
              "torch_threads": torch.get_num_threads(), "n_images": len(src), "rounds": args.rounds,
              "loadavg_1min": [round(v, 2) for v in loads], "time": time.strftime("%H:%M:%S")}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
