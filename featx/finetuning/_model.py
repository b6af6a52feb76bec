"""A finished fine-tune as a saved model directory, like every other results row's model.

``OUT/model/`` holds ``model.safetensors`` (the best epoch's whole network, timm names),
``result.json`` (the run's results row) and ``manifest.json`` (``kind: finetune``, the
architecture to rebuild, the backbone identity it started from, the eval data config,
class names, library versions and the sha256 of every file). It is swapped in whole
(:func:`featx.core.io.atomic_dir`), with its row inside, before ``results.json`` is
updated; ``featx.load_model`` and ``featx predict --model OUT/model`` read it.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..core.io import atomic_dir
from ..core.modeldir import MODEL_FORMAT, seal_manifest, write_row
from ..core.runtime import library_versions
from ..extraction import BackboneSpec, jsonable_data_config

__all__ = ["MODEL_DIR", "WEIGHTS_FILE", "save_finetuned", "save_finished_run"]

MODEL_DIR, WEIGHTS_FILE = "model", "model.safetensors"


def save_finetuned(out: Path, model, spec: BackboneSpec, weights_record: dict, data_config: dict, class_names,
                   entry: dict) -> Path:
    """Save the (best-epoch) ``model`` of a fine-tune run as ``out/model``; sets ``entry["model"]``."""
    from safetensors.torch import save

    entry["model"] = MODEL_DIR
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    doc = {
        "featx_model_format": MODEL_FORMAT, "kind": "finetune", "head": entry["head"], "mode": entry["mode"],
        "architecture": {"model": spec.model, "model_kwargs": spec.model_kwargs, "pooling": spec.pooling,
                         "num_classes": len(class_names)},
        # What it started from (for scratch: random weights, the pretrained model's data config).
        "backbone": spec.identity(), "weights": weights_record,
        "class_names": list(class_names), "data_config": jsonable_data_config(data_config),
        "files": {"weights": WEIGHTS_FILE}, "splits_digest": entry.get("splits_digest"),
        "best_epoch": entry.get("params", {}).get("best_epoch"), "per_class": entry.get("per_class"),
        "seed": (entry.get("seeds") or [0])[0], "versions": library_versions(),
        "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    path = Path(out) / MODEL_DIR
    with atomic_dir(path) as tmp:
        (tmp / WEIGHTS_FILE).write_bytes(save(state, metadata={"featx": "fine-tuned model"}))
        write_row(tmp, entry)
        seal_manifest(tmp, doc)
    return path


def save_finished_run(out: Path, best_file: Path, model, spec: BackboneSpec, weights_record: dict, data_config: dict,
                      class_names, entry: dict) -> bool:
    """A run finished before fine-tunes saved a model: save its best checkpoint as one now.

    Returns whether the entry changed (it then names the model and must be recorded again).
    """
    from safetensors.torch import load_file

    if entry.get("model") or not Path(best_file).is_file():
        return False
    model.load_state_dict(load_file(str(best_file), device="cpu"))
    save_finetuned(out, model, spec, weights_record, data_config, class_names, entry)
    return True
