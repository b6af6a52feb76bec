"""Pipeline config for what features are: per-backbone extraction options and ``feature_sets:``.

Per backbone (all optional, recorded in the store config and the extract stage's key
only when given): ``layers`` (``-1,-2`` or a list: extra ``forward_intermediates``
layers stored as sets ``layer<k>``), ``views`` (``hflip``), ``img_size``,
``crop_pct``, ``interpolation`` (overrides of the model's eval preprocessing; a sweep
is two backbone entries with different labels).

``feature_sets:`` lists combinations to compare, each a row per head in the report::

    feature_sets:
      - [efficientnet_lite0, mobilenetv2_100]          # backbone labels: stores concatenated
      - {name: lite0-2l, stores: [efficientnet_lite0], layers: [pooled, -2]}

``layers`` picks the sets taken from every listed store (``pooled``, a layer index
as given to that backbone's ``layers`` (``-1`` or ``layer-1``), or a set name
``layer<k>``); the default is ``pooled``. A mapping gives each store its own sets::

      - {stores: [efficientnet_lite0, mobilenetv2_100],
         layers: {efficientnet_lite0: [pooled, -1, -2], mobilenetv2_100: [pooled]}}
 A single store with only ``pooled`` is that backbone's own row, so it is
refused as a duplicate.
"""

from __future__ import annotations

from ..core.errors import FeatxUsageError

__all__ = ["BACKBONE_FEATURE_DEFAULTS", "validate_backbone_features", "validate_feature_sets"]

BACKBONE_FEATURE_DEFAULTS = {"layers": None, "views": None, "img_size": None, "crop_pct": None, "interpolation": None}
_SET_KEYS = ("name", "stores", "layers")


def validate_backbone_features(entry: dict, path: tuple, locator) -> None:
    """Check and normalise a backbone's feature options in place (``layers`` -> list of ints, ``views`` -> list)."""
    from ..extraction import FeatureRecipe, preprocessing_overrides

    try:
        recipe = FeatureRecipe.create(entry["layers"], entry["views"], entry["pooling"])
    except FeatxUsageError as exc:
        key = "views" if str(exc).startswith("views") else "layers"
        raise locator.error((*path, key), str(exc)) from None
    entry["layers"] = list(recipe.layers) or None
    entry["views"] = list(recipe.views) or None
    for key in ("img_size", "crop_pct", "interpolation"):
        try:
            preprocessing_overrides(**{key: entry[key]})
        except FeatxUsageError as exc:
            raise locator.error((*path, key), str(exc)) from None


def _set_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-+" else "-" for c in text)


def _check_layer_tokens(layers, stores: list[str], by_label: dict, path: tuple, locator) -> list:
    """One list of set tokens for every store; a mapping ``{label: [sets]}`` gives each store its own
    (a store it leaves out takes ``pooled``), and comes back as a list of lists in store order."""
    if isinstance(layers, dict):
        for label in layers:
            if label not in stores:
                raise locator.error((*path, "layers", label), f"{label!r} is not one of this set's stores: {', '.join(stores)}")
        return [_check_tokens(layers.get(label, ["pooled"]), [label], by_label, (*path, "layers", label), locator)
                for label in stores]
    return _check_tokens(layers, stores, by_label, (*path, "layers"), locator)


def _check_tokens(layers, stores: list[str], by_label: dict, where: tuple, locator) -> list:
    if layers is None:
        return ["pooled"]
    layers = [layers] if isinstance(layers, (str, int)) else layers
    if not isinstance(layers, list) or not layers:
        raise locator.error(where, "must be a list of sets: pooled, a layer index or layer<k>")
    out = []
    for token in layers:
        if isinstance(token, bool) or not isinstance(token, (str, int)):
            raise locator.error(where, f"{token!r} is not a set name or layer index")
        if isinstance(token, str) and token.startswith("layer-") and token[6:].isdigit():
            token = int(token[5:])  # layer-1: the index as given to the backbone's layers
        if isinstance(token, int):
            for label in stores:
                if token not in (by_label[label].get("layers") or []):
                    raise locator.error(where, f"layer {token} is not extracted for backbone {label!r}; "
                                        f"add it to that backbone's `layers:`")
        elif token != "pooled" and not (token.startswith("layer") and token[5:].isdigit()):
            raise locator.error(where, f"unknown set {token!r}; use pooled, a layer index or layer<k>")
        if token in out:
            raise locator.error(where, f"{token!r} is listed twice")
        out.append(token)
    return out


def _default_name(stores: list[str], layers: list) -> str:
    if layers and isinstance(layers[0], list):
        return "+".join(label + ("" if sets == ["pooled"] else "." + "_".join(str(t) for t in sets))
                        for label, sets in zip(stores, layers))
    return "+".join(stores) + ("" if layers == ["pooled"] else "." + "_".join(str(t) for t in layers))


def validate_feature_sets(value, backbones: list[dict], locator) -> list[dict]:
    """``feature_sets:`` as a list of ``{name, stores: [labels], layers: [sets]}``, or a usage error with its line."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise locator.error(("feature_sets",), "must be a list; each entry a list of backbone labels or "
                                               "{name, stores, layers}")
    by_label = {b["label"]: b for b in backbones}
    out, names = [], set(by_label)
    for i, raw in enumerate(value):
        path = ("feature_sets", i)
        spec = {"stores": raw} if isinstance(raw, list) else raw
        if not isinstance(spec, dict):
            raise locator.error(path, "must be a list of backbone labels or a mapping {name, stores, layers}")
        for key in spec:
            if key not in _SET_KEYS:
                raise locator.error((*path, key), f"unknown key {key!r} in a feature set; allowed: {', '.join(_SET_KEYS)}")
        stores = spec.get("stores")
        if not isinstance(stores, list) or not stores or not all(isinstance(s, str) for s in stores):
            raise locator.error((*path, "stores") if isinstance(raw, dict) else path, "must be a non-empty list of backbone labels")
        for label in stores:
            if label not in by_label:
                raise locator.error(path, f"no backbone labelled {label!r}; labels: {', '.join(by_label)}")
        if len(set(stores)) != len(stores):
            raise locator.error(path, "lists a backbone twice")
        layers = _check_layer_tokens(spec.get("layers"), stores, by_label, path, locator)
        if len(stores) == 1 and layers in (["pooled"], [["pooled"]]):
            raise locator.error(path, f"{stores[0]!r} alone is already that backbone's own row; list two or more "
                                      "backbones, or other layers")
        default = _default_name(stores, layers)
        name = _set_name(str(spec.get("name", default)))
        if not name.strip("-"):
            raise locator.error((*path, "name"), "must be a non-empty name")
        if name in names:
            raise locator.error(path, f"name {name!r} is already used by a backbone or another feature set; give a distinct `name:`")
        names.add(name)
        out.append({"name": name, "stores": list(stores), "layers": layers})
    return out
