"""End-to-end prediction: images -> the head's backbone -> the saved head -> classes.

The backbone is rebuilt from the head's manifest (model, weights, pooling) and must
resolve to the very identity the head was trained on; images go through timm's eval
transform for the recorded data config, exactly as in ``featx extract``. A file that
cannot be used gives a row with its reason in ``error`` instead of stopping the run.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ..core.errors import BadImageError, FeatxUsageError
from ._persist import TrainedHead, load_head

__all__ = ["predict", "collect_images", "rows_to_csv", "backbone_for_head"]


def collect_images(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand folders (recursively, hidden files ignored, sorted) and keep files as given."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out.extend(sorted(p for p in path.rglob("*")
                              if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)))
        elif path.exists():
            out.append(path)
        else:
            raise FeatxUsageError(f"image or folder not found: {path}")
    if not out:
        raise FeatxUsageError("no images to predict: the folders given are empty")
    return out


def backbone_for_head(head: TrainedHead, weights: str | os.PathLike | None = None):
    """Resolve the backbone the head was trained on; ``weights`` is needed for file checkpoints."""
    spec = _spec_for(head.backbone, head, weights)
    head.check_features(spec.identity(), head.dim, where=f"the backbone {spec.display_name}")
    return spec


def _spec_for(identity: dict, head: TrainedHead, weights, multi: bool = False):
    """The backbone spec of one recorded identity.

    ``weights`` is a checkpoint file, or for a head on several backbones a comma list
    of files, each matched to its backbone by sha256 (``multi``: other inputs ignore them).
    """
    from ..extraction import resolve_backbone

    files = [w.strip() for w in str(weights).split(",") if w.strip()] if weights is not None else []
    if identity.get("weights", {}).get("kind") == "file" and len(files) > 1:
        for path in files:
            spec = resolve_backbone(identity["model"], weights=path, pooling=identity.get("pooling", "avg"))
            if spec.identity() == identity:
                return spec
        raise FeatxUsageError(f"none of the --weights files is the checkpoint of {identity['model']} "
                              f"(sha256 {identity.get('weights', {}).get('sha256', '?')[:12]}...)")
    if multi and identity.get("weights", {}).get("kind") != "file":
        weights = None
    recorded = identity.get("weights", {})
    kind = recorded.get("kind")
    name = identity["model"]
    if weights is None:
        if kind == "offline":
            name = recorded.get("name", name)
        elif kind == "hub":
            weights = "hub"
            if recorded.get("tag") not in (None, "default"):
                name = f"{name}.{recorded['tag']}"
        elif kind == "random":
            weights = "random"
        elif kind == "file":
            raise FeatxUsageError(
                f"head {head.path} was trained on {name} features from a checkpoint file "
                f"(sha256 {recorded.get('sha256', '?')[:12]}...): pass that file with --weights"
            )
    return resolve_backbone(name, weights=weights, pooling=identity.get("pooling", "avg"))


def _data_config(manifest: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in manifest["data_config"].items()}


def _embedders(head: TrainedHead, weights, dev) -> list[dict]:
    """One (model, transform, recipe, sets) per input the head's features came from, in order.

    A plain head has one input: its backbone, pooled set, recorded data config and
    extraction recipe (views); a head on a feature set has one per concatenated store.
    """
    from ..core.errors import FeatxError
    from ..extraction import FeatureRecipe, create_backbone, make_eval_transform

    manifest = head.manifest
    inputs = manifest.get("inputs")
    if inputs:
        specs = [_spec_for(i["backbone"], head, weights, multi=True) for i in inputs]
        for spec, i in zip(specs, inputs):
            if spec.identity() != i["backbone"]:
                raise FeatxError(f"head {head.path} needs {i['backbone']['model']} features but its backbone resolves "
                                 f"to {spec.display_name} with other weights")
    else:
        inputs = [{"backbone": head.backbone, "features": manifest.get("features"), "data_config": manifest["data_config"],
                   "sets": ["pooled"]}]
        specs = [backbone_for_head(head, weights)]
    out = []
    for spec, i in zip(specs, inputs):
        model, _ = create_backbone(spec)
        model.to(dev)
        out.append({"model": model, "transform": make_eval_transform(_data_config(i)), "sets": list(i["sets"]),
                    "recipe": FeatureRecipe.from_config(i)})
    return out


def _embed(embedders: list[dict], images: list, dev, autocast) -> np.ndarray:
    """Concatenated features of decoded images: each input's transform, forward pass(es) and sets."""
    import torch

    from ..extraction import embed_batch

    blocks = []
    for e in embedders:
        batch = torch.stack([e["transform"](image) for image in images]).to(dev)
        with torch.inference_mode(), autocast:
            sets = embed_batch(e["model"], batch, e["recipe"])
        blocks += [sets[name].float().reshape(len(images), -1).cpu().numpy() for name in e["sets"]]
    return np.concatenate(blocks, axis=1)


def predict(
    model_dir: str | os.PathLike,
    images: Sequence[str | os.PathLike],
    *,
    weights: str | os.PathLike | None = None,
    batch_size: int = 16,
    device: str = "auto",
    max_pixels: int | None = None,
) -> list[dict]:
    """Predict the class of every image (files or folders of them) with a saved head.

    Returns one row per file, in order: ``id`` (the path), ``predicted`` (class name),
    ``confidence``, ``probabilities`` ({class: p}) and ``error`` (``None``, or why
    the file was skipped, with ``predicted`` ``None``).
    """
    from ..core.runtime import autocast_context, resolve_device, resolve_precision
    from ..data import load_image

    if batch_size < 1:
        raise FeatxUsageError("batch size must be at least 1")
    head = load_head(model_dir)
    files = collect_images(images)
    dev = resolve_device(device)
    embedders = _embedders(head, weights, dev)
    autocast = autocast_context(dev, resolve_precision("auto", dev))
    classes = head.class_names
    rows: list[dict] = []
    for start in range(0, len(files), batch_size):
        batch, decoded = [], []
        for path in files[start:start + batch_size]:
            row = {"id": str(path), "predicted": None, "confidence": None, "probabilities": None, "error": None}
            try:
                decoded.append(load_image(path, max_pixels=max_pixels))
                batch.append(row)
            except BadImageError as exc:
                row["error"] = str(exc)
            rows.append(row)
        if not decoded:
            continue
        proba = head.predict_proba(_embed(embedders, decoded, dev, autocast))
        for row, p in zip(batch, proba):
            best = int(np.argmax(p))
            row.update(predicted=classes[best], confidence=float(p[best]),
                       probabilities={c: float(v) for c, v in zip(classes, p)})
    return rows


def rows_to_csv(rows: Sequence[dict], class_names: Sequence[str]) -> str:
    """CSV text: id, predicted, confidence, one ``p_<class>`` column per class, error."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "predicted", "confidence", *(f"p_{c}" for c in class_names), "error"])
    for row in rows:
        probs = row["probabilities"] or {}
        writer.writerow([row["id"], row["predicted"] or "", "" if row["confidence"] is None else f"{row['confidence']:.6f}",
                         *("" if c not in probs else f"{probs[c]:.6f}" for c in class_names), row["error"] or ""])
    return buffer.getvalue()
