"""What one forward pass stores: extra layers, views and preprocessing choices.

A :class:`FeatureRecipe` says which embeddings an extraction computes per image:

* the default set ``pooled``: the model's pooled pre-logits embedding (``model(x)``);
* one set per requested layer (``layers``: indices into timm's
  ``forward_intermediates``, negative ones counted from the end, e.g. ``(-1, -2)``),
  each pooled spatially with the store's pooling, named ``layer<k>`` with ``k`` the
  absolute index;
* ``views``: ``("hflip",)`` averages every set over the image and its horizontal mirror.

With layers, every set of a view comes from **one** call of ``forward_intermediates``
(the final map goes through ``forward_head``, which is what ``model(x)`` does), so
asking for layers does not run the backbone twice. A recipe with neither layers nor
views calls ``model(x)`` exactly as before, and records nothing in the store config,
so existing stores keep their config, id and cache key.

:func:`data_config_with` applies ``img_size`` / ``crop_pct`` / ``interpolation``
overrides through timm's own ``resolve_model_data_config(args=...)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..core.errors import FeatxUsageError

__all__ = ["FeatureRecipe", "DEFAULT_SET", "VIEWS", "INTERPOLATIONS", "parse_layers", "parse_views",
           "embed_batch", "feature_set_layout", "feature_options", "data_config_with", "preprocessing_overrides"]

DEFAULT_SET = "pooled"
VIEWS = ("hflip",)
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "box", "hamming", "lanczos")
_SPATIAL_POOLINGS = ("avg", "max", "avgmax", "catavgmax")


def parse_layers(spec: str | int | Sequence | None) -> tuple[int, ...]:
    """``"-1,-2"`` / ``[-1, -2]`` / ``-1`` -> ``(-1, -2)``; ``None`` or ``""`` -> ``()``."""
    if spec is None:
        return ()
    items = spec.split(",") if isinstance(spec, str) else ([spec] if isinstance(spec, int) else list(spec))
    out: list[int] = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        try:
            value = int(text)
        except ValueError:
            raise FeatxUsageError(f"layers: {text!r} is not a layer index (e.g. --layers -1,-2)") from None
        if value in out:
            raise FeatxUsageError(f"layers: index {value} is listed twice")
        out.append(value)
    return tuple(out)


def parse_views(spec: str | Sequence | None) -> tuple[str, ...]:
    """``"hflip"`` -> ``("hflip",)``; ``None``, ``""`` or ``"none"`` -> ``()``."""
    if spec is None:
        return ()
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out = []
    for item in (str(i).strip() for i in items):
        if not item or item == "none":
            continue
        if item not in VIEWS:
            raise FeatxUsageError(f"views: unknown view {item!r}; known: {', '.join(VIEWS)} (or none)")
        if item not in out:
            out.append(item)
    return tuple(out)


@dataclass(frozen=True)
class FeatureRecipe:
    """Which embeddings an extraction computes per image (see the module docstring)."""

    layers: tuple[int, ...] = ()
    views: tuple[str, ...] = ()
    pooling: str = "avg"

    @classmethod
    def create(cls, layers=None, views=None, pooling: str = "avg") -> FeatureRecipe:
        recipe = cls(parse_layers(layers), parse_views(views), pooling)
        if recipe.layers and pooling not in _SPATIAL_POOLINGS:
            raise FeatxUsageError(f"--layers pools each layer spatially: use --pooling {'|'.join(_SPATIAL_POOLINGS)}, "
                                  f"not {pooling!r}")
        return recipe

    @property
    def is_default(self) -> bool:
        return not self.layers and not self.views

    def config(self) -> dict:
        """What the store config (and so its id and cache key) records; empty for the default."""
        if self.is_default:
            return {}
        return {"layers": list(self.layers), "views": list(self.views)}

    @classmethod
    def from_config(cls, store_config: dict) -> FeatureRecipe:
        """The recipe a store (or a head's manifest) was made with."""
        recorded = store_config.get("features") or {}
        pooling = (store_config.get("backbone") or {}).get("pooling", "avg")
        return cls(tuple(recorded.get("layers", ())), tuple(recorded.get("views", ())), pooling)


def _pool(x: torch.Tensor, pooling: str) -> torch.Tensor:
    """Global pooling of an NCHW map into (N, C) (or (N, 2C) for catavgmax), as timm pools."""
    if x.ndim == 2:
        return x
    avg = x.mean(dim=(2, 3)) if pooling in ("avg", "avgmax", "catavgmax") else None
    mx = x.amax(dim=(2, 3)) if pooling in ("max", "avgmax", "catavgmax") else None
    if pooling == "avg":
        return avg
    if pooling == "max":
        return mx
    if pooling == "avgmax":
        return 0.5 * (avg + mx)
    return torch.cat([avg, mx], dim=1)


def _absolute_layers(model: nn.Module, layers: Sequence[int]) -> list[int]:
    n = len(getattr(model, "feature_info", None) or [])
    if not n or not hasattr(model, "forward_intermediates"):
        raise FeatxUsageError(f"{type(model).__name__} has no forward_intermediates/feature_info: --layers is not supported for it")
    out = []
    for layer in layers:
        if not -n <= layer < n:
            raise FeatxUsageError(f"layer index {layer} is out of range: this backbone has {n} layers (0..{n - 1}, or -1..-{n})")
        out.append(layer % n)
    if len(set(out)) != len(out):
        raise FeatxUsageError(f"layers {list(layers)} name the same layer twice")
    return out


def _one_view(model: nn.Module, images: torch.Tensor, recipe: FeatureRecipe, absolute: list[int]) -> dict[str, torch.Tensor]:
    if not recipe.layers:
        return {DEFAULT_SET: model(images).reshape(len(images), -1)}
    final, intermediates = model.forward_intermediates(images, indices=absolute)
    out = {DEFAULT_SET: model.forward_head(final).reshape(len(images), -1)}
    # forward_intermediates returns the maps in increasing index order.
    for index, feature_map in zip(sorted(absolute), intermediates):
        out[f"layer{index}"] = _pool(feature_map, recipe.pooling)
    return out


def embed_batch(model: nn.Module, images: torch.Tensor, recipe: FeatureRecipe) -> dict[str, torch.Tensor]:
    """``{set name: (N, D) embeddings}`` of a preprocessed batch: one backbone pass per view."""
    absolute = _absolute_layers(model, recipe.layers) if recipe.layers else []
    sets = _one_view(model, images, recipe, absolute)
    if "hflip" in recipe.views:
        mirrored = _one_view(model, torch.flip(images, dims=[3]), recipe, absolute)
        sets = {name: 0.5 * (value + mirrored[name]) for name, value in sets.items()}
    return sets


def feature_set_layout(model: nn.Module, input_size, device, recipe: FeatureRecipe) -> list[dict]:
    """Name, width and layer of every set the recipe gives, from one pass on a blank image."""
    absolute = _absolute_layers(model, recipe.layers) if recipe.layers else []
    with torch.inference_mode():
        sets = embed_batch(model, torch.zeros((1, *input_size), device=device), FeatureRecipe(recipe.layers, (), recipe.pooling))
    info = list(getattr(model, "feature_info", None) or [])
    layout = [{"name": DEFAULT_SET, "dim": int(sets[DEFAULT_SET].shape[1]), "layer": None}]
    for spec, index in zip(recipe.layers, absolute):
        module = info[index].get("module") if index < len(info) else None
        layout.append({"name": f"layer{index}", "dim": int(sets[f"layer{index}"].shape[1]), "layer": index,
                       "spec": spec, "module": module})
    return layout


def preprocessing_overrides(img_size: int | None = None, crop_pct: float | None = None,
                            interpolation: str | None = None) -> dict:
    """The overrides given, checked; ``{}`` when none (the model's own eval config)."""
    out: dict = {}
    if img_size is not None:
        if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 8:
            raise FeatxUsageError(f"img_size must be a whole number of pixels >= 8, got {img_size!r}")
        out["img_size"] = img_size
    if crop_pct is not None:
        if isinstance(crop_pct, bool) or not isinstance(crop_pct, (int, float)) or not 0 < crop_pct <= 1:
            raise FeatxUsageError(f"crop_pct must be in (0, 1], got {crop_pct!r}")
        out["crop_pct"] = float(crop_pct)
    if interpolation is not None:
        if interpolation not in INTERPOLATIONS:
            raise FeatxUsageError(f"interpolation {interpolation!r} is not one of {', '.join(INTERPOLATIONS)}")
        out["interpolation"] = interpolation
    return out


def feature_options(recipe: FeatureRecipe, overrides: dict) -> dict:
    """Store-config keys for the options used (``features``, ``preprocessing``); ``{}`` when none,
    so stores made without them keep their config, id and cache key."""
    out: dict = {}
    if recipe.config():
        out["features"] = recipe.config()
    if overrides:
        out["preprocessing"] = dict(overrides)
    return out


def data_config_with(model: nn.Module, data_config: dict, overrides: dict) -> dict:
    """The model's eval data config with ``overrides`` applied by timm (unchanged when there are none)."""
    if not overrides:
        return data_config
    import timm.data

    return timm.data.resolve_model_data_config(model, args=dict(overrides))
