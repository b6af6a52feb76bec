"""After the search: the chosen configuration extracted on the full source and its heads fitted
(``featx search``), or handed to a pipeline as backbones and a feature set (``search:``).

The first row that comes out of the chosen configuration carries the whole ``search``
list (one entry per candidate; once, so a report lists each candidate once), every such
row the one-line ``search_summary``, in ``results.json``; ``search.json`` beside it holds
the full search document.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import FeatxUsageError
from ._search import SEARCH_FILE, run_search
from ._search_space import SearchSpec

__all__ = ["SearchFit", "search_and_fit", "chosen_backbones", "tag_search_rows", "SEARCH_ROW", "store_label", "cached_search",
           "apply_search"]

SEARCH_ROW = "search"
_SHORT = {"img_size": "img", "crop_pct": "crop", "interpolation": "", "layers": "L", "views": ""}


@dataclass
class SearchFit:
    """Options of :func:`search_and_fit` beyond the search itself."""

    heads: tuple[str, ...] = ("logreg",)
    split_seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    device: str = "auto"
    quiet: bool = False
    final: bool = True  # extract the chosen configuration on the full source and fit the heads
    n_boot: int = 1000


def store_label(chosen: dict) -> str:
    """A readable label unique to a chosen backbone's configuration (so its full store is cached per config)."""
    parts = [chosen["backbone"]["label"]]
    for key, value in chosen["options"].items():
        shown = "_".join(str(v) for v in value) if isinstance(value, list) else str(value)
        parts.append(f"{_SHORT.get(key, key)}{shown}")
    return ".".join("".join(c if c.isalnum() or c in "._-" else "-" for c in p) for p in parts)


def _sets(chosen: dict) -> list[str]:
    return list(chosen["sets"])


def tag_search_rows(entries: list[dict], doc: dict, row_label: str) -> list[dict]:
    """Add the summary to the rows whose backbone label is ``row_label``, and the search list to the first."""
    tagged = False
    for entry in entries:
        if entry.get("backbone_label", entry.get("backbone")) == row_label or entry.get("feature_set") == row_label:
            if not tagged:
                entry["search"], tagged = doc["search"], True
            entry["search_summary"] = doc["summary"]
    return entries


def search_and_fit(source, spec: SearchSpec, out, options: SearchFit | None = None) -> tuple[dict, list[dict]]:
    """Run the search into ``out/search``, then (``final``) extract the chosen stores on the full source into
    ``out/features`` and fit ``heads`` on them (``out/<head>``, ``out/results.json``). Returns (document, rows)."""
    from ..core.io import json_text, write_atomic
    from ..core.results import RESULTS_FILE
    from ..extraction import extract, resolve_backbone
    from ..heads import FeatureSet, train_heads

    options = options or SearchFit()
    out = Path(out)
    split = {"split_seed": options.split_seed, "val_fraction": options.val_fraction,
             "test_fraction": options.test_fraction}
    doc = run_search(source, spec, out / "search", split=split, device=options.device, quiet=options.quiet)
    if not options.final:
        return doc, []
    stores = []
    for chosen in doc["chosen"]:
        bb = chosen["backbone"]
        stores.append(extract(source, resolve_backbone(bb["name"], weights=bb["weights"]),
                              out / "features" / f"{store_label(chosen)}.h5", batch_size=spec.batch_size,
                              workers=spec.workers, threads=spec.threads, device=options.device, quiet=options.quiet,
                              **chosen["options"]))
    features = FeatureSet(stores, [_sets(c) for c in doc["chosen"]])
    entries = train_heads(features, heads=list(options.heads), out=out, split_seed=options.split_seed,
                          val_fraction=options.val_fraction, test_fraction=options.test_fraction,
                          quiet=options.quiet, n_boot=options.n_boot)
    for k, entry in enumerate(entries):
        entry["search_summary"], entry["search_seconds"] = doc["summary"], doc["seconds"]
        if k == 0:
            entry["search"] = doc["search"]
    results = out / RESULTS_FILE
    rows = json.loads(results.read_text()) if results.exists() else []
    names = {e["head"] for e in entries}
    rows = [r for r in rows if r.get("head") not in names] + entries
    write_atomic(results, json_text(rows))
    return doc, entries


def chosen_backbones(doc: dict, pipeline) -> tuple[list[dict], dict | None, str]:
    """Pipeline backbone entries for the chosen stores, the feature set joining them (None for one
    store with pooled only) and the label of the search's own row."""
    known = {b["label"] for b in pipeline.backbones if not b.get("search")}
    defaults = {"pooling": "avg", "batch_size": doc["spec"]["batch_size"], "precision": "auto", "dtype": "float32",
                "workers": doc["spec"]["workers"], "layers": None, "views": None, "img_size": None, "crop_pct": None,
                "interpolation": None}
    entries, labels = [], []
    for chosen in doc["chosen"]:
        label = store_label(chosen)
        if label in known:
            raise FeatxUsageError(f"search: its chosen store label {label!r} is already a backbone label; rename that backbone")
        entries.append({"name": chosen["backbone"]["name"], "weights": chosen["backbone"]["weights"], **defaults,
                        **chosen["options"], "label": label, "search": True})
        labels.append(label)
    if len(entries) == 1 and _sets(doc["chosen"][0]) == ["pooled"]:
        return entries, None, labels[0]
    layers = [_sets(c) for c in doc["chosen"]]
    return entries, {"name": SEARCH_ROW, "stores": labels, "layers": layers, "search": True}, SEARCH_ROW


def cached_search(out: Path) -> dict | None:
    """The search document a previous run wrote under ``out``, if any."""
    path = Path(out) / SEARCH_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def apply_search(pipeline, out: Path, *, run: bool, quiet: bool) -> tuple[dict | None, str | None]:
    """Run (or, ``run=False``, read back) the pipeline's search into ``out/search`` and add its choice to
    ``pipeline`` in place: the chosen stores as backbones, joined by a feature set when there are several
    or layers. Returns (search document, label of the search's row), or (None, None) when not run yet."""
    spec = pipeline.search
    split = {k: pipeline.source[k] for k in ("split_seed", "val_fraction", "test_fraction")}
    if run:
        doc = run_search(pipeline.source["path"], spec, Path(out) / "search", split=split, device=pipeline.device,
                         quiet=quiet)
    else:
        doc = cached_search(Path(out) / "search")
        if doc is None or doc.get("spec") != spec.to_dict():
            return None, None
    entries, feature_set, row = chosen_backbones(doc, pipeline)
    known = {b["label"] for b in pipeline.backbones}
    pipeline.backbones.extend(e for e in entries if e["label"] not in known)
    if feature_set is not None:
        pipeline.feature_sets.append(feature_set)
    return doc, row
