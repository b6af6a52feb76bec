#!/usr/bin/env bash
# Issue 11's GPU paths in one short run (about 5 min on an H100/H200 with lite0 and CIFAR-10):
# fp16 default, batch size auto, the side-stream loader and writer thread, --decode gpu,
# --compile, featx bench extract / finetune, and the precision drift against CPU fp32.
# Usage: bash benchmarks/gpu_check.sh CIFAR_DIR   (a folder with train/ and test/ of 32-px JPEGs)
set -euo pipefail
DATA=${1:?give the CIFAR-10 JPEG folder}
PY=${PY:-.venv/bin/python}
OUT=${OUT:-/tmp/featx-gpu-check}
mkdir -p "$OUT"
featx() { "$PY" -c 'import sys, featx.cli as c; sys.exit(c.main())' "$@"; }
featx extract --source "$DATA/test" --out "$OUT/fp16.h5" --device cuda --batch-size auto --workers auto --quiet
featx extract --source "$DATA/test" --out "$OUT/gpu-decode.h5" --device cuda --batch-size 256 --workers auto --decode gpu --quiet
"$PY" - "$OUT" <<'PY'
import sys, numpy as np, featx
a, b = featx.FeatureStore(f"{sys.argv[1]}/fp16.h5"), featx.FeatureStore(f"{sys.argv[1]}/gpu-decode.h5")
print("fp16 run:", a.run_info)
rel = np.linalg.norm(a.features - b.features, axis=1) / np.linalg.norm(a.features, axis=1)
print(f"gpu decode vs cpu decode: rel L2 mean {rel.mean():.4%} max {rel.max():.4%}; skipped {len(b.skipped)}")
PY
featx bench extract --source "$DATA/test" --device cuda --batch-size 256 --workers auto --json
featx bench extract --source "$DATA/test" --device cuda --batch-size 256 --workers auto --compile --no-float-loader --json
featx bench extract --source "$DATA/test" --device cuda --batch-size 256 --workers auto --decode gpu --no-float-loader --json
featx bench finetune --source "$DATA/train" --device cuda --batch-size 128 --workers auto --limit 20000 --json
"$PY" benchmarks/precision_drift.py --source "$DATA/test" --limit 2000 --device cuda --batch-size 256
