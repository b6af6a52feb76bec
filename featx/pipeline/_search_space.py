"""What ``featx search`` (and a pipeline's ``search:``) may try: backbones, a space of extraction
options, the halving schedule and the budget; validated into a :class:`SearchSpec`.

YAML (defaults in brackets)::

    search:
      backbones: [efficientnet_lite0, {name: mobilenetv2_100, weights: FILE, label: mnv2}]
      space:                              # each a list; a key left out keeps the model's own value
        img_size: [null, 256]             #   null: the backbone's eval default
        crop_pct: [0.875, 1.0]
        interpolation: [bicubic, bilinear]
        layers: ['', '-1,-2']             #   '': pooled only; '-1,-2': pooled + those layers
        views: ['', hflip]
      budget_minutes: 30                  # [30] bounds the search (the final extraction is extra)
      min_per_class: 20                   # [20] first rung: train and val items per class
      eta: 3                              # [3] keep the best 1/eta per rung; the next rung is eta x larger
      combine: true                       # [true] try concatenating the best of each backbone
      proxy: logreg                       # [logreg] val accuracy of logreg; or logme (LogME evidence, no head fitted)
      seed: 0                             # [0] seed of the subsamples
      batch_size: 32                      # [32] extraction batch size of every candidate
      workers: auto                       # [auto] loader workers (auto: as featx extract)
      threads: null                       # [null] torch CPU threads

A candidate is one backbone with one value per space key: one extraction, so one
store, cached under its own key. When the source's images are much smaller than a
backbone's input (CIFAR's 32 px against 224 px) and the space does not set
``crop_pct``, :func:`informed_space` adds ``crop_pct: 1.0`` to it: the default centre
crop throws away 12.5% of each side of an image that was upscaled anyway.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from ..core.errors import FeatxUsageError

__all__ = ["SearchSpec", "Candidate", "validate_search", "parse_search", "candidates", "informed_space",
           "SPACE_KEYS", "SEARCH_KEYS"]

SPACE_KEYS = ("img_size", "crop_pct", "interpolation", "layers", "views")
SEARCH_KEYS = ("backbones", "space", "budget_minutes", "min_per_class", "eta", "combine", "seed", "batch_size",
               "workers", "threads", "proxy")
PROXY_NAMES = ("logreg", "logme")
# A source whose images are at most this fraction of the backbone's input side counts as "much smaller".
SMALL_IMAGE_RATIO = 0.25


@dataclass
class SearchSpec:
    """A validated search: ``backbones`` as ``{name, weights, label}``, ``space`` as lists per key."""

    backbones: list[dict]
    space: dict[str, list] = field(default_factory=dict)
    budget_minutes: float = 30.0
    min_per_class: int = 20
    eta: int = 3
    combine: bool = True
    seed: int = 0
    batch_size: int = 32
    workers: int | str = "auto"
    threads: int | None = None
    proxy: str = "logreg"

    def to_dict(self) -> dict:
        return {"backbones": [dict(b) for b in self.backbones],
                "space": {k: [_yaml_value(k, v) for v in values] for k, values in self.space.items()},
                "budget_minutes": self.budget_minutes, "min_per_class": self.min_per_class, "eta": self.eta,
                "combine": self.combine, "seed": self.seed, "batch_size": self.batch_size, "workers": self.workers,
                "threads": self.threads, **({"proxy": self.proxy} if self.proxy != "logreg" else {})}


def _yaml_value(key: str, value):
    if key == "layers":
        return ",".join(str(i) for i in value) if value else ""
    if key == "views":
        return ",".join(value) if value else ""
    return value


@dataclass(frozen=True)
class Candidate:
    """One backbone with one value per space key (``None``: the model's own)."""

    backbone: dict
    options: tuple  # ((key, value), ...) over SPACE_KEYS, values hashable

    @property
    def label(self) -> str:
        return self.backbone["label"]

    def option(self, key: str):
        return dict(self.options).get(key)

    def extract_options(self) -> dict:
        """Keyword arguments of :func:`featx.extract` for this candidate."""
        out = {k: v for k, v in self.options if v is not None}
        for key in ("layers", "views"):
            if key in out:
                out[key] = list(out[key])
        return out

    def config(self) -> dict:
        """What a results row records of the candidate: backbone, weights and the options it sets."""
        return {"backbone": self.backbone["name"], "weights": self.backbone.get("weights"), **self.extract_options()}

    @property
    def id(self) -> str:
        parts = [self.label]
        for key, value in self.options:
            if value is None:
                continue
            shown = ",".join(str(v) for v in value) if isinstance(value, tuple) else str(value)
            parts.append(f"{key}={shown}")
        return " ".join(parts)


class _PlainLocator:
    """Errors as ``search.KEY: message`` where there is no file to point into (CLI, Python)."""

    @staticmethod
    def error(path: tuple, message: str) -> FeatxUsageError:
        dotted = ".".join(str(p) for p in path)
        return FeatxUsageError(f"{dotted}: {message}")


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _space_value(key: str, value, where: tuple, locator):
    from ..extraction import FeatureRecipe, preprocessing_overrides

    try:
        if key == "layers":
            layers = FeatureRecipe.create(None if value in (None, "", "none") else value, None).layers
            return layers or None
        if key == "views":
            views = FeatureRecipe.create(None, None if value in (None, "", "none") else value).views
            return views or None
        if value is None:
            return None
        if key == "img_size" and isinstance(value, float) and value.is_integer():
            value = int(value)
        preprocessing_overrides(**{key: value})
        return float(value) if key == "crop_pct" else value
    except FeatxUsageError as exc:
        raise locator.error(where, str(exc)) from None


def _validate_space(value, locator) -> dict[str, list]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise locator.error(("search", "space"), f"must be a mapping of {', '.join(SPACE_KEYS)} to lists of values")
    out = {}
    for key, raw in value.items():
        if key not in SPACE_KEYS:
            raise locator.error(("search", "space", key), f"unknown key {key!r}; the space has {', '.join(SPACE_KEYS)}")
        values = []
        for i, item in enumerate(_as_list(raw)):
            normal = _space_value(key, item, ("search", "space", key, i), locator)
            if normal in values:
                raise locator.error(("search", "space", key), f"{item!r} is listed twice")
            values.append(normal)
        if not values:
            raise locator.error(("search", "space", key), "must list at least one value")
        out[key] = values
    return out


def _validate_backbones(value, locator) -> list[dict]:
    from ..extraction import resolve_backbone

    if not isinstance(value, list) or not value:
        raise locator.error(("search", "backbones"), "must be a non-empty list of timm model names or {name, weights, label}")
    out, labels = [], set()
    for i, raw in enumerate(value):
        where = ("search", "backbones", i)
        entry = {"name": raw} if isinstance(raw, str) else raw
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise locator.error(where, "must be a timm model name or a mapping {name, weights, label}")
        for key in entry:
            if key not in ("name", "weights", "label"):
                raise locator.error((*where, key), f"unknown key {key!r}; allowed: name, weights, label")
        weights = None if entry.get("weights") is None else str(entry["weights"])
        try:
            resolve_backbone(entry["name"], weights=weights)
        except FeatxUsageError as exc:
            raise locator.error(where, str(exc)) from None
        label = "".join(c if c.isalnum() or c in "._-" else "-" for c in str(entry.get("label", entry["name"])))
        if label in labels:
            raise locator.error(where, f"label {label!r} is used twice; give one a distinct `label:`")
        labels.add(label)
        out.append({"name": entry["name"], "weights": weights, "label": label})
    return out


def _number(data: dict, key: str, default, locator, minimum, kind=int):
    value = data.get(key, default)
    if value is None and key == "threads":
        return None
    if key == "workers" and value == "auto":
        return value
    ok = not isinstance(value, bool) and isinstance(value, (int, float) if kind is float else int) and value >= minimum
    if not ok or (kind is float and value <= 0):
        raise locator.error(("search", key), f"must be a number >= {minimum}, got {value!r}")
    return kind(value)


def validate_search(value, locator) -> SearchSpec | None:
    """``search:`` of a pipeline as a :class:`SearchSpec` (``None`` when absent), or a usage error with its line."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise locator.error(("search",), "must be a mapping {backbones, space, budget_minutes, ...}")
    for key in value:
        if key not in SEARCH_KEYS:
            raise locator.error(("search", key), f"unknown key {key!r} in search; allowed: {', '.join(SEARCH_KEYS)}")
    combine = value.get("combine", True)
    if not isinstance(combine, bool):
        raise locator.error(("search", "combine"), f"must be true or false, got {combine!r}")
    proxy = value.get("proxy", "logreg")
    if proxy not in PROXY_NAMES:
        raise locator.error(("search", "proxy"), f"must be one of {', '.join(PROXY_NAMES)}, got {proxy!r}")
    return SearchSpec(
        backbones=_validate_backbones(value.get("backbones"), locator), space=_validate_space(value.get("space"), locator),
        budget_minutes=_number(value, "budget_minutes", 30.0, locator, 0, float),
        min_per_class=_number(value, "min_per_class", 20, locator, 2), eta=_number(value, "eta", 3, locator, 2),
        combine=combine, seed=_number(value, "seed", 0, locator, 0), batch_size=_number(value, "batch_size", 32, locator, 1),
        workers=_number(value, "workers", "auto", locator, 0), threads=_number(value, "threads", None, locator, 1), proxy=proxy)


def parse_search(value: dict) -> SearchSpec:
    """:func:`validate_search` for a plain mapping (CLI, Python): errors read ``search.KEY: ...``."""
    spec = validate_search(value, _PlainLocator())
    if spec is None:
        raise FeatxUsageError("search: give at least `backbones`")
    return spec


def candidates(spec: SearchSpec, space: dict[str, list] | None = None) -> list[Candidate]:
    """Every (backbone, one value per space key) combination, in a stable order."""
    space = spec.space if space is None else space
    keys = [k for k in SPACE_KEYS if k in space]
    out = []
    for backbone in spec.backbones:
        for values in itertools.product(*(space[k] for k in keys)):
            out.append(Candidate(backbone, tuple(zip(keys, values))))
    return out


def informed_space(spec: SearchSpec, image_side: float | None, input_sides: dict[str, int]) -> tuple[dict, str | None]:
    """The space with ``crop_pct: [model default, 1.0]`` added when the images are much smaller than
    every backbone's input and the space leaves crop_pct open; and a sentence saying so (or None)."""
    if image_side is None or "crop_pct" in spec.space or not input_sides:
        return dict(spec.space), None
    smallest = min(input_sides.values())
    if image_side > SMALL_IMAGE_RATIO * smallest:
        return dict(spec.space), None
    note = (f"the images are about {image_side:.0f} px, the backbones' inputs {smallest}+ px: the space includes "
            f"crop_pct 1.0 (no centre crop of an upscaled image) beside each model's default")
    return {**spec.space, "crop_pct": [None, 1.0]}, note
