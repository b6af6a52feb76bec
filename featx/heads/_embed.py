"""Features for a saved head from images: the same backbones, preprocessing, layers and views.

A head's manifest says how its features were made: one backbone (``backbone``,
``data_config`` and, for stores with layers or views, ``features``), or, for a head
trained on a :class:`featx.FeatureSet`, one entry per concatenated input (``inputs``:
backbone identity, data config, extraction recipe, the sets taken). :func:`make_embedders`
rebuilds each input once; :func:`embed_images` runs a batch of decoded images through
each with its own eval transform and concatenates the sets in the recorded order.
"""

from __future__ import annotations

import numpy as np

from ..core.errors import FeatxError, FeatxUsageError
from ._persist import TrainedHead

__all__ = ["spec_for_identity", "make_embedders", "embed_images"]


def _files(weights) -> list[str]:
    return [w.strip() for w in str(weights).split(",") if w.strip()] if weights is not None else []


def spec_for_identity(identity: dict, head: TrainedHead, weights=None, multi: bool = False,
                      option: str = "weights=PATH"):
    """The backbone spec for one recorded backbone identity.

    ``weights`` is needed for checkpoint files; for a head on several backbones it may
    be a comma list, each file matched to its backbone by sha256 (``multi``: inputs
    that do not come from a file ignore it). ``option`` is how the caller names that
    argument in advice (``weights=PATH`` from Python, ``--weights PATH`` on the CLI).
    """
    from ..extraction import resolve_backbone

    recorded = identity.get("weights", {})
    kind = recorded.get("kind")
    if kind == "imported":
        raise FeatxUsageError(f"head {head.path} was trained on imported features ({identity['model']}), made outside "
                              "featx: featx has no backbone to embed images for it; embed them with the model that made "
                              "the features, then call featx.load_head(...).predict(features)")
    name = identity["model"]
    files = _files(weights)
    if kind == "file" and len(files) > 1:
        for path in files:
            spec = resolve_backbone(name, weights=path, pooling=identity.get("pooling", "avg"))
            if spec.identity() == identity:
                return spec
        raise FeatxUsageError(f"none of the {option.split('=')[0].split()[0]} files is the checkpoint of {name} "
                              f"(sha256 {recorded.get('sha256', '?')[:12]}...)")
    if multi and kind != "file":
        weights = None
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
                f"(sha256 {recorded.get('sha256', '?')[:12]}...): pass that file as {option}"
            )
    return resolve_backbone(name, weights=weights, pooling=identity.get("pooling", "avg"))


def _data_config(recorded: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in recorded.items()}


def make_embedders(head: TrainedHead, weights, device, precision: str = "fp32", option: str = "weights=PATH") -> list[dict]:
    """One ``{model, transform, normalize, recipe, sets}`` per input of the head's features, in order, on ``device``.

    As in extraction, the transform crops uint8 images on the host and ``normalize`` turns
    the batch into the model's input on the device.
    """
    from ..extraction import (
        DeviceNormalizer,
        FeatureRecipe,
        create_backbone,
        input_dtype,
        make_uint8_transform,
    )

    manifest = head.manifest
    inputs = manifest.get("inputs")
    if inputs:
        specs = [spec_for_identity(i["backbone"], head, weights, multi=True, option=option) for i in inputs]
        for spec, i in zip(specs, inputs):
            if spec.identity() != i["backbone"]:
                raise FeatxError(f"head {head.path} needs {i['backbone']['model']} features but its backbone resolves "
                                 f"to {spec.display_name} with other weights")
    else:
        inputs = [{"backbone": head.backbone, "features": manifest.get("features"), "data_config": manifest["data_config"],
                   "sets": ["pooled"]}]
        specs = [spec_for_identity(head.backbone, head, weights, option=option)]
        head.check_features(specs[0].identity(), head.dim, where=f"the backbone {specs[0].display_name}")
    out = []
    for spec, i in zip(specs, inputs):
        model, _ = create_backbone(spec)
        model.to(device)
        data_config = _data_config(i["data_config"])
        normalize = DeviceNormalizer(data_config["mean"], data_config["std"], device, input_dtype(device, precision))
        out.append({"model": model, "transform": make_uint8_transform(data_config), "normalize": normalize,
                    "sets": list(i["sets"]), "recipe": FeatureRecipe.from_config(i)})
    return out


def embed_images(embedders: list[dict], images: list, device, autocast) -> np.ndarray:
    """Concatenated features of decoded images: each input's transform, forward pass(es) and sets."""
    import torch

    from ..extraction import embed_batch

    blocks = []
    for e in embedders:
        batch = torch.stack([e["transform"](image) for image in images]).to(device)
        with torch.inference_mode(), autocast:
            sets = embed_batch(e["model"], e["normalize"](batch), e["recipe"])
        blocks += [sets[name].float().reshape(len(images), -1).cpu().numpy() for name in e["sets"]]
    return np.concatenate(blocks, axis=1)
