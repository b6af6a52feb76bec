"""Pipeline files: one YAML config naming a dataset, backbones, heads and fine-tunes.

A pipeline file is validated before anything runs. Every mistake is reported with
the file, the line and the dotted key (``pipelines/x.yaml:7: heads[2]: unknown head
'svc'; known: ...``); unknown keys are errors, never ignored. Short forms are
expanded first (``source: digits`` is ``source: {path: digits}``, a backbone or head
may be a bare name), then ``--set key=value`` overrides apply (dotted keys, list
indices as numbers, values parsed as YAML), then defaults fill in, giving the
*resolved* config that a run writes next to its results.

Schema (defaults in brackets)::

    name: digits                       # [file stem] names the report and the default out dir
    source:                            # or just the path / built-in name
      path: digits                     # image folder, CSV manifest or built-in name
      val_fraction: 0.1                # [0.1]  carved per class when the source has no val split
      test_fraction: 0.2               # [0.2]
      split_seed: 0                    # [0]
      allow_unlabelled: false          # [false] keep samples without a label (extracted, in no split)
    backbones:                         # timm names, or mappings:
      - name: efficientnet_lite0
        weights: null                  # [null] offline/hub default, 'hub', 'random' or a file
        pooling: avg                   # [avg]
        batch_size: 8                  # [8]
        precision: auto                # [auto]
        dtype: float32                 # [float32] storage dtype of the features
        workers: auto                  # [auto] 0 on a <= 2-core CPU, else cores - 1
        label: lite0                   # [name] how rows and stage dirs are named
        layers: null                   # [null] extra layer sets, views, img_size, crop_pct,
                                       #   interpolation: see _feature_config
    heads: [logreg, {name: knn, params: {n_neighbors: 5}, label: knn5}]
    finetune:                          # [none] baselines, each run on every backbone unless
      - {mode: linear, epochs: 2}      #   `backbones: [label, ...]` restricts it
    per_class: [10, 100, all]          # [all] training images per class; a learning curve
    seeds: 1                           # [1] repeated head fits with different seeds
    repeats: 1                         # [1] small data: heads on R splits (split seeds), mean and spread
    device: auto                       # [auto]
    out: runs/digits                   # [runs/<name>] relative to the working directory
    feature_sets: [[lite0, mnv2]]      # [none] concatenations / layer sets, a row each
    search: {backbones: [...], space: {...}, budget_minutes: 30}   # [none] see _search_space;
                                       #   with it, `backbones` may be left out

Relative paths (source, weights, out) are taken from the working directory, like
every other featx command. Running the stages is :mod:`featx.pipeline._runner`'s job.
"""

from __future__ import annotations

import copy
import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..core.errors import FeatxUsageError
from ._controls import validate_raw_pixels
from ._feature_config import BACKBONE_FEATURE_DEFAULTS, validate_backbone_features, validate_feature_sets
from ._search_space import SearchSpec, validate_search
from ._yaml import load_yaml

__all__ = ["Pipeline", "load_pipeline", "parse_overrides", "check_backbone", "SPLIT_DEFAULTS"]

SPLIT_DEFAULTS = {"val_fraction": 0.1, "test_fraction": 0.2, "split_seed": 0}
_TOP_KEYS = ("name", "source", "backbones", "heads", "finetune", "per_class", "seeds", "repeats", "device", "out",
             "feature_sets", "raw_pixels", "search", "views")
VIEW_MODES = ("train", "test", "both")
_SOURCE_KEYS = ("path", *SPLIT_DEFAULTS, "allow_unlabelled")
_BACKBONE_DEFAULTS = {"weights": None, "pooling": "avg", "batch_size": 8, "precision": "auto", "dtype": "float32",
                      "workers": "auto", **BACKBONE_FEATURE_DEFAULTS}
_HEAD_KEYS = ("name", "params", "label")
# Fine-tune arguments the pipeline owns; every other keyword of ``finetune()`` is an option.
_FINETUNE_OWNED = {"source", "backbone", "weights", "pooling", "mode", "out", "per_class", "device", "resume", "quiet",
                   "split_seed", "val_fraction", "test_fraction", "splits", "callback"}

KeyPath = tuple  # a key path: str keys and int list indices


@dataclass
class Pipeline:
    """A validated, resolved pipeline config; ``to_dict()`` is what ``pipeline.resolved.yaml`` holds."""

    name: str
    source: dict
    backbones: list[dict]
    heads: list[dict]
    finetune: list[dict] = field(default_factory=list)
    per_class: list[int | None] = field(default_factory=lambda: [None])
    seeds: int = 1
    repeats: int = 1  # head stages on this many splits (split seeds split_seed ..)
    device: str = "auto"
    out: str = ""
    path: str | None = None  # the file it came from, for messages only
    raw_pixels: dict | None = None  # the raw-pixel control (see featx.pipeline._controls); None: off
    feature_sets: list[dict] = field(default_factory=list)  # combinations of stores/layers (_feature_config)
    search: SearchSpec | None = None  # a budgeted search whose choice joins the backbones (_search_space)
    views: str | None = None  # heads average the mirror view on train, test (val + test) or both rows

    def to_dict(self) -> dict:
        return {
            # What the search added is not written back: the `search:` block below reproduces it.
            "name": self.name, "source": dict(self.source),
            "backbones": [{k: v for k, v in b.items() if k != "where"} for b in self.backbones if not b.get("search")],
            "heads": [dict(h) for h in self.heads], "finetune": [dict(f) for f in self.finetune],
            "per_class": ["all" if n is None else n for n in self.per_class], "seeds": self.seeds,
            **({"repeats": self.repeats} if self.repeats != 1 else {}),
            "device": self.device, "out": self.out,
            "raw_pixels": False if self.raw_pixels is None else {
                "size": self.raw_pixels["size"], "heads": [h["name"] for h in self.raw_pixels["heads"]]},
            **({"feature_sets": [dict(f) for f in self.feature_sets if not f.get("search")]}
               if any(not f.get("search") for f in self.feature_sets) else {}),
            **({"search": self.search.to_dict()} if self.search is not None else {}),
            **({"views": self.views} if self.views is not None else {}),
        }


class _Locator:
    """Maps key paths to ``file:line`` (or to the ``--set`` that changed them) for error messages."""

    def __init__(self, filename: str, lines: dict[KeyPath, int]):
        self.filename, self.lines, self.overridden = filename, lines, {}

    @staticmethod
    def dotted(path: KeyPath) -> str:
        out = ""
        for part in path:
            out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
        return out or "(top level)"

    def where(self, path: KeyPath) -> str:
        for n in range(len(path), -1, -1):
            if path[:n] in self.overridden:
                return f"--set {self.overridden[path[:n]]}"
            if n and path[:n] in self.lines:
                return f"{self.filename}:{self.lines[path[:n]]}"
        return self.filename

    def error(self, path: KeyPath, message: str) -> FeatxUsageError:
        return FeatxUsageError(f"{self.where(path)}: {self.dotted(path)}: {message}")


def _line_map(node, path: KeyPath, lines: dict, filename: str) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                raise FeatxUsageError(f"{filename}:{key_node.start_mark.line + 1}: key {key!r} appears twice")
            seen.add(key)
            # Point at the key's line, which is where a reader looks for it.
            lines[(*path, key)] = key_node.start_mark.line + 1
            _line_map(value_node, (*path, key), lines, filename)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_map(item, (*path, i), lines, filename)


def _read_yaml(text: str, filename: str) -> tuple[dict, dict]:
    node, data = load_yaml(text, filename)  # bounded: no deep nesting, cycles or alias bombs
    if node is None:
        raise FeatxUsageError(f"{filename}: the pipeline file is empty")
    if not isinstance(data, dict):
        raise FeatxUsageError(f"{filename}:1: a pipeline file is a mapping of keys (name, source, backbones, heads, ...)")
    lines: dict = {}
    _line_map(node, (), lines, filename)
    return data, lines


def parse_overrides(pairs) -> list[tuple[str, object]]:
    """``["a.b=1", "heads=[logreg, knn]"]`` -> ``[("a.b", 1), ("heads", ["logreg", "knn"])]``."""
    out = []
    for pair in pairs or ():
        key, sep, raw = str(pair).partition("=")
        if not sep or not key.strip():
            raise FeatxUsageError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set seeds=3 or --set source.path=data/cifar10")
        value = load_yaml(raw, f"--set {pair!r}")[1] if raw.strip() else None
        out.append((key.strip(), value))
    return out


def _expand_short_forms(data: dict) -> None:
    if isinstance(data.get("source"), str):
        data["source"] = {"path": data["source"]}
    for key in ("backbones", "heads"):
        if isinstance(data.get(key), str):
            data[key] = [data[key]]
        if isinstance(data.get(key), list):
            data[key] = [{"name": v} if isinstance(v, str) else v for v in data[key]]
    if isinstance(data.get("finetune"), str):
        data["finetune"] = [data["finetune"]]
    if isinstance(data.get("finetune"), list):
        data["finetune"] = [{"mode": v} if isinstance(v, str) else v for v in data["finetune"]]
    if isinstance(data.get("per_class"), (int, str)):
        data["per_class"] = [data["per_class"]]


def _apply_override(data: dict, key: str, value, locator: _Locator) -> None:
    parts: list = [int(p) if p.isdigit() else p for p in key.split(".")]
    target = data
    for i, part in enumerate(parts[:-1]):
        here = tuple(parts[: i + 1])
        nxt = target[part] if isinstance(target, list) and isinstance(part, int) and part < len(target) else (
            target.get(part) if isinstance(target, dict) else None)
        if nxt is None and isinstance(target, dict):
            nxt = target[part] = {}
        if not isinstance(nxt, (dict, list)):
            raise FeatxUsageError(f"--set {key}: {locator.dotted(here)} is not a mapping or list, so it has no {parts[i + 1]!r}")
        target = nxt
    last = parts[-1]
    if isinstance(target, list) and (not isinstance(last, int) or last >= len(target)):
        raise FeatxUsageError(f"--set {key}: index {last} is out of range (the list has {len(target)} entries)")
    target[last] = value
    locator.overridden[tuple(parts)] = key


# ------------------------------------------------------------------ validation


def _check_keys(value, allowed, path: KeyPath, locator: _Locator, what: str) -> dict:
    if not isinstance(value, dict):
        raise locator.error(path, f"{what} must be a mapping, got {type(value).__name__}")
    for key in value:
        if key not in allowed:
            raise locator.error((*path, key), f"unknown key {key!r} in {what}; allowed: {', '.join(allowed)}")
    return value


def _int(value, path, locator, minimum=1, what="a whole number") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise locator.error(path, f"must be {what} >= {minimum}, got {value!r}")
    return value


def _str(value, path, locator, what="a string") -> str:
    if not isinstance(value, str) or not value.strip():
        raise locator.error(path, f"must be {what}, got {value!r}")
    return value


def _fraction(value, path, locator) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise locator.error(path, f"must be a number in [0, 1), got {value!r}")
    return float(value)


def _label_of(path_or_name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in path_or_name)


def _validate_source(value, locator) -> dict:
    src = _check_keys(value, _SOURCE_KEYS, ("source",), locator, "source")
    out = {"path": _str(src.get("path"), ("source", "path"), locator, "an image folder, a .csv or a built-in name")}
    for key, default in SPLIT_DEFAULTS.items():
        raw = src.get(key, default)
        out[key] = _int(raw, ("source", key), locator, 0) if key == "split_seed" else _fraction(raw, ("source", key), locator)
    if out["val_fraction"] + out["test_fraction"] >= 1:
        raise locator.error(("source",), "val_fraction + test_fraction must be below 1")
    keep = src.get("allow_unlabelled", False)
    if not isinstance(keep, bool):
        raise locator.error(("source", "allow_unlabelled"), f"must be true or false, got {keep!r}")
    if keep:  # only then, so the resolved config of every other pipeline stays as it was
        out["allow_unlabelled"] = True
    return out


def _validate_backbones(value, locator, resolve: bool = True) -> list[dict]:
    """The backbone entries with defaults; ``resolve=False`` leaves the name and weights check
    (:func:`check_backbone`, which imports timm) to the caller."""
    from ..core.runtime import PRECISIONS
    from ..extraction import FEATURE_DTYPES

    if not isinstance(value, list) or not value:
        raise locator.error(("backbones",), "must be a non-empty list of timm model names or mappings")
    out, labels = [], {}
    for i, raw in enumerate(value):
        path = ("backbones", i)
        spec = _check_keys(raw, ("name", "label", *_BACKBONE_DEFAULTS), path, locator, "a backbone")
        entry = {"name": _str(spec.get("name"), (*path, "name"), locator, "a timm model name")}
        for key, default in _BACKBONE_DEFAULTS.items():
            entry[key] = spec.get(key, default)
        if entry["weights"] is not None:
            entry["weights"] = _str(str(entry["weights"]), (*path, "weights"), locator)
        _int(entry["batch_size"], (*path, "batch_size"), locator)
        if entry["workers"] != "auto":
            _int(entry["workers"], (*path, "workers"), locator, 0, "'auto' or a whole number")
        if entry["precision"] not in PRECISIONS:
            raise locator.error((*path, "precision"), f"must be one of {', '.join(PRECISIONS)}")
        if entry["dtype"] not in FEATURE_DTYPES:
            raise locator.error((*path, "dtype"), f"must be one of {', '.join(FEATURE_DTYPES)}")
        validate_backbone_features(entry, path, locator)
        entry["where"] = locator.where(path) + f": {locator.dotted(path)}"  # for check_backbone's message
        if resolve:
            check_backbone(entry)
        default_label = entry["name"] + ("" if entry["weights"] is None else f"-{Path(str(entry['weights'])).stem}")
        entry["label"] = _label_of(_str(spec.get("label", default_label), (*path, "label"), locator))
        if entry["label"] in labels:
            raise locator.error(path, f"backbone label {entry['label']!r} is used twice (also backbones[{labels[entry['label']]}]); "
                                      "give one of them a distinct `label:`")
        labels[entry["label"]] = i
        out.append(entry)
    return out


def check_backbone(entry: dict):
    """The entry's :class:`~featx.extraction.BackboneSpec` (timm name, weights, pooling resolved),
    or a usage error that names the entry's place in the pipeline file."""
    from ..extraction import resolve_backbone

    try:
        return resolve_backbone(entry["name"], weights=entry["weights"], pooling=entry["pooling"])
    except FeatxUsageError as exc:
        raise FeatxUsageError(f"{entry.get('where', 'pipeline')}: {exc}") from None


def _validate_heads(value, locator) -> list[dict]:
    from ..heads import check_head_params, list_heads

    if not isinstance(value, list):
        raise locator.error(("heads",), "must be a list of head names or mappings {name, params, label}")
    known = list_heads()
    out, labels = [], set()
    for i, raw in enumerate(value):
        path = ("heads", i)
        spec = _check_keys(raw, _HEAD_KEYS, path, locator, "a head")
        name = _str(spec.get("name"), (*path, "name"), locator, "a head name")
        if name not in known:
            raise locator.error((*path, "name"), f"unknown head {name!r}; known heads: {', '.join(known)}")
        params = spec.get("params") or {}
        if not isinstance(params, dict):
            raise locator.error((*path, "params"), "must be a mapping of estimator parameters")
        try:
            check_head_params(name, params)
        except FeatxUsageError as exc:
            raise locator.error((*path, "params"), str(exc)) from None
        label = _label_of(_str(spec.get("label", name), (*path, "label"), locator))
        if label in labels:
            raise locator.error(path, f"head {label!r} is listed twice; give one a distinct `label:`")
        labels.add(label)
        out.append({"name": name, "label": label, "params": params})
    return out


def finetune_options() -> dict[str, object]:
    """The options a ``finetune:`` entry may set: the keywords of :func:`featx.finetune` the pipeline does not own."""
    from ..finetuning import finetune

    return {name: p.default for name, p in inspect.signature(finetune).parameters.items()
            if name not in _FINETUNE_OWNED and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def _validate_finetune(value, backbones, locator) -> list[dict]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise locator.error(("finetune",), "must be a list of modes or mappings {mode, epochs, ...}")
    from ..finetuning import MODES

    options = finetune_options()
    known_labels = [b["label"] for b in backbones]
    out, seen = [], set()
    for i, raw in enumerate(value):
        path = ("finetune", i)
        spec = _check_keys(raw, ("mode", "backbones", *options), path, locator, "a fine-tune entry")
        mode = spec.get("mode")
        if mode not in MODES:
            raise locator.error((*path, "mode"), f"unknown fine-tune mode {mode!r}; known: {', '.join(MODES)}")
        chosen = spec.get("backbones", known_labels)
        if isinstance(chosen, str):
            chosen = [chosen]
        if not isinstance(chosen, list) or not chosen:
            raise locator.error((*path, "backbones"), "must be a list of backbone labels")
        for label in chosen:
            if label not in known_labels:
                raise locator.error((*path, "backbones"), f"no backbone labelled {label!r}; labels: {', '.join(known_labels)}")
        for label in chosen:
            if (mode, label) in seen:
                raise locator.error(path, f"fine-tune mode {mode!r} on {label!r} is listed twice")
            seen.add((mode, label))
        out.append({"mode": mode, "backbones": list(chosen), **{k: v for k, v in spec.items() if k not in ("mode", "backbones")}})
    return out


def _validate_per_class(value, locator) -> list[int | None]:
    if value is None:
        return [None]
    if not isinstance(value, list) or not value:
        raise locator.error(("per_class",), "must be a list of training images per class, e.g. [10, 100, all]")
    out = []
    for i, n in enumerate(value):
        if n in ("all", None):
            out.append(None)
        else:
            out.append(_int(n, ("per_class", i), locator, 1, "a number of images per class (or 'all')"))
    if len(set(out)) != len(out):
        raise locator.error(("per_class",), "lists a size twice")
    return sorted(out, key=lambda n: float("inf") if n is None else n)


def load_pipeline(path: str | os.PathLike | dict, overrides=(), *, out: str | os.PathLike | None = None,
                  resolve_backbones: bool = True) -> Pipeline:
    """Read, override and validate a pipeline file (or an already parsed dict) into a :class:`Pipeline`.

    ``overrides`` are ``"key=value"`` strings (see :func:`parse_overrides`); ``out``
    replaces the config's output directory. ``resolve_backbones=False`` skips the check of
    backbone names and weights (it imports timm): :func:`run_pipeline` makes it before any
    stage runs, and only for backbones whose identity it has not recorded.
    """
    if isinstance(path, dict):
        filename, data, lines = "<pipeline>", copy.deepcopy(path), {}
    else:
        filename = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise FeatxUsageError(f"pipeline file not found: {path}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise FeatxUsageError(f"cannot read pipeline file {path}: {exc}") from None
        data, lines = _read_yaml(text, filename)
    locator = _Locator(filename, lines)
    _expand_short_forms(data)
    for key, value in parse_overrides(overrides):
        _apply_override(data, key, value, locator)
    _expand_short_forms(data)
    _check_keys(data, _TOP_KEYS, (), locator, "the pipeline")
    for required in ("source", "backbones", "heads"):
        if required not in data and not (required == "backbones" and data.get("search") is not None):
            raise FeatxUsageError(f"{filename}: missing required key {required!r} (a pipeline needs source, backbones and heads)")
    default_name = Path(filename).stem if filename != "<pipeline>" else "pipeline"
    name = _label_of(_str(data.get("name", default_name), ("name",), locator))
    searched = data.get("search") is not None and not data.get("backbones")  # the search provides them
    backbones = [] if searched else _validate_backbones(data["backbones"], locator, resolve_backbones)
    pipeline = Pipeline(
        name=name,
        source=_validate_source(data["source"], locator),
        backbones=backbones,
        heads=_validate_heads(data["heads"], locator),
        finetune=_validate_finetune(data.get("finetune"), backbones, locator),
        per_class=_validate_per_class(data.get("per_class"), locator),
        seeds=_int(data.get("seeds", 1), ("seeds",), locator),
        repeats=_int(data.get("repeats", 1), ("repeats",), locator),
        device=_str(data.get("device", "auto"), ("device",), locator),
        out=str(out) if out is not None else _str(data.get("out", f"runs/{name}"), ("out",), locator),
        path=None if filename == "<pipeline>" else filename,
        raw_pixels=validate_raw_pixels(data.get("raw_pixels"), locator),
        feature_sets=validate_feature_sets(data.get("feature_sets"), backbones, locator),
        search=validate_search(data.get("search"), locator),
        views=_views_mode(data.get("views"), locator),
    )
    if not pipeline.heads and not pipeline.finetune:
        raise locator.error(("heads",), "nothing to run: list at least one head or one fine-tune mode")
    _check_views_once(pipeline, locator)
    return pipeline


def _check_views_once(pipeline: Pipeline, locator) -> None:
    # A backbone's ``views:`` averages the mirror into its features at extraction; the pipeline's
    # ``views:`` keeps the mirror as a view of its own for the heads. Both at once would fail only
    # at the first head stage, after the extraction was paid for.
    if pipeline.views is None:
        return
    for i, bb in enumerate(pipeline.backbones):
        if bb.get("views"):
            raise locator.error(("backbones", i, "views"),
                                f"cannot be combined with the pipeline's views: {pipeline.views} (which adds the mirror "
                                "view to every store itself); drop one of the two")


def _views_mode(value, locator) -> str | None:
    """``views:``: the heads average each row with its mirror view (added to every store) on these rows."""
    if value in (None, False, "none"):
        return None
    if value not in VIEW_MODES:
        raise locator.error(("views",), f"must be one of {', '.join(VIEW_MODES)} (or none), got {value!r}")
    return value
