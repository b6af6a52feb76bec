"""The ``raw_pixels:`` key of a pipeline: the raw-pixel control, on by default.

``raw_pixels: false`` turns it off; ``true`` (or leaving the key out) means the defaults;
a mapping may set ``size`` (pixels per side; images are box-downsampled to size x size
RGB, no crop) and ``heads`` (fitted on the pixels with the same splits and protocol as
every other head). The control exists so that a report shows when frozen ImageNet
features are not worth their cost: on scikit-learn's digits an RBF SVM on raw pixels
beats every frozen-feature head. RBF SVMs cost O(n^2): on large datasets list only
``logreg`` (``pipelines/cifar10.yaml`` does).
"""

from __future__ import annotations

__all__ = ["RAW_PIXELS_DEFAULTS", "validate_raw_pixels", "RAW_LABEL"]

RAW_PIXELS_DEFAULTS = {"size": 16, "heads": ["logreg", "rbf_svm"]}
RAW_LABEL = "raw_pixels"  # stage and directory name


def validate_raw_pixels(value, locator) -> dict | None:
    """``None`` when the control is off, else ``{"size": int, "heads": [head dicts]}``."""
    from ..heads import list_heads

    if value is False:
        return None
    if value is None or value is True:
        value = {}
    if not isinstance(value, dict):
        raise locator.error(("raw_pixels",), f"must be false, true or a mapping {{size, heads}}, got {value!r}")
    for key in value:
        if key not in RAW_PIXELS_DEFAULTS:
            raise locator.error(("raw_pixels", key), f"unknown key {key!r} in raw_pixels; allowed: size, heads")
    size = value.get("size", RAW_PIXELS_DEFAULTS["size"])
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 256:
        raise locator.error(("raw_pixels", "size"), f"must be a whole number of pixels in 1..256, got {size!r}")
    heads = value.get("heads", RAW_PIXELS_DEFAULTS["heads"])
    if isinstance(heads, str):
        heads = [heads]
    if not isinstance(heads, list) or not heads:
        raise locator.error(("raw_pixels", "heads"), "must be a non-empty list of head names")
    known = list_heads()
    for i, name in enumerate(heads):
        if name not in known:
            raise locator.error(("raw_pixels", "heads", i), f"unknown head {name!r}; known heads: {', '.join(known)}")
    return {"size": size, "heads": [{"name": h, "label": h, "params": {}} for h in heads]}
