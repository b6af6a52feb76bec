"""What one forward pass stores: extra layers, views and preprocessing choices.

A :class:`FeatureRecipe` says which embeddings an extraction computes per image:

* the default set ``pooled``: the model's pooled pre-logits embedding (``model(x)``);
* one set per requested layer (``layers``: indices into timm's
  ``forward_intermediates``, negative ones counted from the end, e.g. ``(-1, -2)``),
  each pooled spatially with the store's pooling, named ``layer<k>`` with ``k`` the
  absolute index;
* ``views``: ``("hflip",)`` averages every set over the image and its horizontal mirror;
  ``("mirror",)`` stores the mirror image's embeddings alone (what ``--views hflip`` adds to
  an existing store: the view's own pass, averaged with the stored one at train time).

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
from typing import TYPE_CHECKING

from ..core.errors import FeatxUsageError

if TYPE_CHECKING:  # torch is imported by the functions that run models, not to check options
    import torch
    from torch import nn

__all__ = ["FeatureRecipe", "DEFAULT_SET", "VIEWS", "INTERPOLATIONS", "parse_layers", "parse_views",
           "embed_batch", "feature_set_layout", "feature_options", "data_config_with", "preprocessing_overrides",
           "check_input_size", "IMG_SIZE_RANGE", "MIN_CROP_PCT"]

DEFAULT_SET = "pooled"
FEATURE_DTYPES = ("float32", "float16")  # storage dtypes of a store's features
VIEWS = ("hflip", "mirror")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "box", "hamming", "lanczos")
_SPATIAL_POOLINGS = ("avg", "max", "avgmax", "catavgmax")


def _entries(spec, what: str, example: str) -> list[str]:
    """The comma-separated entries of ``spec``; an empty one (``,``, ``-1,,-2``) is a usage error."""
    items = spec.split(",") if isinstance(spec, str) else ([spec] if isinstance(spec, int) else list(spec))
    texts = [str(item).strip() for item in items]
    if isinstance(spec, str) and not spec.strip():
        return []
    if any(not text for text in texts):
        raise FeatxUsageError(f"{what}: {spec!r} has an empty entry; give a comma-separated list like {example}")
    return texts


def parse_layers(spec: str | int | Sequence | None) -> tuple[int, ...]:
    """``"-1,-2"`` / ``[-1, -2]`` / ``-1`` -> ``(-1, -2)``; ``None`` or ``""`` -> ``()``; ``","`` or a repeat: usage error."""
    if spec is None:
        return ()
    out: list[int] = []
    for text in _entries(spec, "layers", "--layers -1,-2"):
        try:
            value = int(text)
        except ValueError:
            raise FeatxUsageError(f"layers: {text!r} is not a layer index (e.g. --layers -1,-2)") from None
        if value in out:
            raise FeatxUsageError(f"layers: index {value} is listed twice")
        out.append(value)
    return tuple(out)


def parse_views(spec: str | Sequence | None) -> tuple[str, ...]:
    """``"hflip"`` -> ``("hflip",)``; ``None``, ``""`` or ``"none"`` -> ``()``; a repeat is a usage error."""
    if spec is None:
        return ()
    out: list[str] = []
    for item in _entries(spec, "views", "--views hflip"):
        if item == "none":
            continue
        if item not in VIEWS:
            raise FeatxUsageError(f"views: unknown view {item!r}; known: {', '.join(VIEWS)} (or none)")
        if item in out:
            raise FeatxUsageError(f"views: {item!r} is listed twice")
        out.append(item)
    if len(out) > 1:
        raise FeatxUsageError("views: hflip already includes the mirror image; give one view")
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
    import torch

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
    import torch

    absolute = _absolute_layers(model, recipe.layers) if recipe.layers else []
    if "mirror" in recipe.views:
        return _one_view(model, torch.flip(images, dims=[3]), recipe, absolute)
    sets = _one_view(model, images, recipe, absolute)
    if "hflip" in recipe.views:
        mirrored = _one_view(model, torch.flip(images, dims=[3]), recipe, absolute)
        sets = {name: 0.5 * (value + mirrored[name]) for name, value in sets.items()}
    return sets


def feature_set_layout(model: nn.Module, input_size, device, recipe: FeatureRecipe) -> list[dict]:
    """Name, width and layer of every set the recipe gives, from one pass on a blank image."""
    import torch

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


# Bounds on the eval preprocessing: below 16 px no backbone sees anything; above 4096 px one
# image is 200 MB of float32 input, and timm resizes to img_size / crop_pct before cropping.
IMG_SIZE_RANGE = (16, 4096)
MIN_CROP_PCT = 0.1
MAX_RESIZE = 8192


def preprocessing_overrides(img_size: int | None = None, crop_pct: float | None = None,
                            interpolation: str | None = None) -> dict:
    """The overrides given, checked against their bounds; ``{}`` when none (the model's own eval config)."""
    out: dict = {}
    lo, hi = IMG_SIZE_RANGE
    if img_size is not None:
        if isinstance(img_size, bool) or not isinstance(img_size, int) or not lo <= img_size <= hi:
            raise FeatxUsageError(f"img_size must be a whole number of pixels in {lo}..{hi}, got {img_size!r}")
        out["img_size"] = img_size
    if crop_pct is not None:
        if isinstance(crop_pct, bool) or not isinstance(crop_pct, (int, float)) or not MIN_CROP_PCT <= crop_pct <= 1:
            raise FeatxUsageError(f"crop_pct must be in [{MIN_CROP_PCT}, 1] (1.0: no crop), got {crop_pct!r}")
        out["crop_pct"] = float(crop_pct)
        if img_size is not None and img_size / crop_pct > MAX_RESIZE:
            raise FeatxUsageError(f"img_size {img_size} with crop_pct {crop_pct} resizes every image to "
                                  f"{img_size / crop_pct:.0f} px before cropping (at most {MAX_RESIZE}); raise crop_pct")
    if interpolation is not None:
        if interpolation not in INTERPOLATIONS:
            raise FeatxUsageError(f"interpolation {interpolation!r} is not one of {', '.join(INTERPOLATIONS)}")
        out["interpolation"] = interpolation
    return out


def check_input_size(model_name: str, model_kwargs: dict, overrides: dict) -> dict:
    """``overrides``, once its ``img_size`` is one the model can take: checked before it is built for real.

    The architecture is built on PyTorch's meta device (no memory, no weights) to read its
    patch embedding: the size must be a multiple of the patch, and equal to the model's own
    size where the model has fixed position embeddings.
    """
    size = overrides.get("img_size")
    if size is not None:
        _check_patch_fit(model_name, model_kwargs, size)
    return overrides


def _check_patch_fit(model_name: str, model_kwargs: dict, size: int) -> None:
    import timm
    import torch

    try:
        with torch.device("meta"):
            model = timm.create_model(model_name, pretrained=False, **dict(model_kwargs))
    except Exception:  # noqa: BLE001 - an architecture that cannot be probed is checked when it runs
        return
    embed = getattr(model, "patch_embed", None)
    patch = getattr(embed, "patch_size", None)
    if embed is None or patch is None:
        return
    ph, pw = (patch, patch) if isinstance(patch, int) else tuple(patch)[:2]
    fixed = getattr(embed, "img_size", None)
    dynamic = bool(getattr(model, "dynamic_img_size", False)) or not getattr(embed, "strict_img_size", False)
    if not dynamic and fixed is not None and tuple(fixed) != (size, size):
        raise FeatxUsageError(f"{model_name} takes only {fixed[0]}x{fixed[1]} px inputs (fixed position embeddings); "
                              f"drop --img-size {size}")
    if not getattr(embed, "dynamic_img_pad", False) and (size % ph or size % pw):
        nearest = max(ph, round(size / ph) * ph)
        raise FeatxUsageError(f"img_size {size} is not a multiple of {model_name}'s {ph}x{pw} patch; use e.g. {nearest}")


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
