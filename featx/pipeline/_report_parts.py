"""Parts of the report that say what ran: fine-tune descriptions, the under-trained flag,
the fine-tune verdict, the gallery of worst mistakes, accuracy per feature set, shared
extraction costs.

Cost rule (the Pareto plot and the *Total s* column): a head's cost is its own fit time
plus the extraction time of each feature store it reads, each store counted once for that
row (a concatenation of two stores pays both extractions). Heads on the same store share
that extraction: it is the floor under all of them (drawn as a dotted line per store), not
something each head adds to a pipeline's bill. The pipeline's own compute, shown under the
plot, counts every store's extraction once, plus every fit and every fine-tune.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence

__all__ = ["fill_store_fields", "describe_finetune", "is_under_trained", "finetune_verdict", "control_verdict", "group_of", "pipeline_cost",
           "store_floors", "gallery", "plot_groups"]

_KIND_WORDS = {"linear": "linear fine-tune, backbone frozen", "full": "full fine-tune, every layer trained",
               "scratch": "trained from scratch (random initialisation)"}


def _epochs(entry: dict) -> str:
    ran = entry.get("epochs_run")
    planned = (entry.get("params") or {}).get("epochs")
    if ran is None:
        return f"{planned} epochs" if planned else "epochs unknown"
    if planned and planned != ran:
        return f"{ran} of {planned} epochs (early stop)"
    return f"{ran} epoch{'s' if ran != 1 else ''}"


def describe_finetune(entry: dict) -> str:
    """``"linear fine-tune, backbone frozen, 3 epochs"`` and the like, from the results entry."""
    mode = entry.get("mode") or "?"
    if mode == "partial":
        k = (entry.get("params") or {}).get("unfreeze") or len((entry.get("params") or {}).get("trainable_stages") or [])
        what = f"partial fine-tune, last {k} stage{'s' if k != 1 else ''} unfrozen"
    else:
        what = _KIND_WORDS.get(mode, f"{mode} fine-tune")
    return f"{what}, {_epochs(entry)}"


def is_under_trained(entry: dict) -> bool:
    """A fine-tune whose val score was still rising at its last epoch (and which ran out of epochs)."""
    history = [h.get("val_macro_f1") for h in entry.get("history") or [] if h.get("val_macro_f1") is not None]
    if entry.get("kind") != "finetune" or len(history) < 2:
        return False  # one epoch (or none recorded): no trend to read
    return history[-1] > max(history[:-1])


def _gap_phrase(first: dict, second: dict, compare, pct, label) -> str | None:
    """``None`` when the test items separate ``first`` from ``second``; else the words saying they do not
    (accuracies and the difference ``first - second`` in that order).

    Paired (McNemar-style bootstrap on the shared items) when both rows recorded their test
    predictions, else the unpaired check: the two 95% CIs overlap.
    """
    result = compare(first, second)
    if result is not None:
        if result["separated"]:
            return None
        return (f"cannot be told apart on {result['n']} shared test images ({pct(first['accuracy'])} vs "
                f"{pct(second['accuracy'])}, difference {100 * result['diff']:+.1f} points, 95% paired CI "
                f"[{100 * result['ci'][0]:+.1f}, {100 * result['ci'][1]:+.1f}])")
    a, b = first.get("accuracy_ci"), second.get("accuracy_ci")
    if a and b and a[0] <= b[1] and b[0] <= a[1]:
        return (f"cannot be told apart ({pct(first['accuracy'])} vs {pct(second['accuracy'])}; their 95% CIs overlap "
                "and no per-item predictions were recorded for a paired test)")
    return None


def finetune_verdict(best_head: dict, tuned: Sequence[dict], pct, label, cost, compare=lambda a, b: None) -> str:
    """The summary's sentence on fine-tuning, which never generalises from a short linear run,
    and never states a gain or loss that the paired test on the shared test items does not support.

    A verdict "fine-tuning gains/loses N points" needs a fine-tune that trained the
    backbone (partial or full) and was not still improving when it stopped; otherwise
    the sentence says what ran and why it does not settle the question.
    """
    best_tune = max(tuned, key=lambda e: e["accuracy"])
    gap = 100 * (best_tune["accuracy"] - best_head["accuracy"])
    where = f"{'above' if gap >= 0 else 'below'} the best head {label(best_head)} ({pct(best_head['accuracy'])})"
    trained_backbone = [e for e in tuned if e.get("mode") in ("partial", "full")]
    settled = [e for e in trained_backbone if not is_under_trained(e)]
    lines = []
    if settled:
        best = max(settled, key=lambda e: e["accuracy"])
        gap = 100 * (best["accuracy"] - best_head["accuracy"])
        ratio = (cost(best) or 0) / max(cost(best_head) or 1e-9, 1e-9)
        tie = _gap_phrase(best, best_head, compare, pct, label)  # in the sentence's order: fine-tune, then head
        if tie is not None:
            lines.append(f"Fine-tuning the backbone ({describe_finetune(best)}) and the best head on frozen features, "
                         f"{label(best_head)}, {tie}; the fine-tune costs {ratio:.1f}x the compute.")
        else:
            verdict = f"gains {gap:.1f} points" if gap >= 0 else f"loses {-gap:.1f} points"
            lines.append(f"Fine-tuning the backbone ({describe_finetune(best)}) {verdict} over frozen features "
                         f"({pct(best['accuracy'])} vs best head {label(best_head)} {pct(best_head['accuracy'])}) "
                         f"at {ratio:.1f}x the compute.")
    else:
        what = "; ".join(describe_finetune(e) for e in tuned)
        lines.append(f"The fine-tune{'s' if len(tuned) > 1 else ''} that ran ({what}) reached {pct(best_tune['accuracy'])}, "
                     f"{abs(gap):.1f} points {where}; "
                     + ("no fine-tune of the backbone finished training, so this does not say what fine-tuning would give."
                        if trained_backbone else
                        "only a new classifier was trained on the frozen network, so this does not say what "
                        "fine-tuning the backbone would give."))
    flagged = [e for e in tuned if is_under_trained(e)]
    if flagged:
        lines.append("Under-trained: " + "; ".join(describe_finetune(e) for e in flagged)
                     + " (val score still rising at the last epoch; more epochs would likely help).")
    return " ".join(lines)


def control_verdict(best_head: dict, control: dict, pct, label, compare=lambda a, b: None) -> str:
    """Whether frozen pretrained features beat the raw-pixel control, and by how many points
    (only when the test items separate the two)."""
    gap = 100 * (best_head["accuracy"] - control["accuracy"])
    tie = _gap_phrase(best_head, control, compare, pct, label)  # in the sentence's order: head, then control
    if tie is not None:
        return (f"The best head on frozen features, {label(best_head)}, and the raw-pixel control, {label(control)}, "
                f"{tie}: on this test set the pretrained features are not shown to pay for their extraction.")
    if gap <= 0:
        name = label(control)
        return (f"{name[:1].upper() + name[1:]} ({pct(control['accuracy'])}) is more accurate than the "
                f"best head on frozen features, {label(best_head)} ({pct(best_head['accuracy'])}): on this data the "
                "pretrained features do not pay for their extraction.")
    return (f"Frozen features beat the raw-pixel control by {gap:.1f} points ({label(best_head)} "
            f"{pct(best_head['accuracy'])} vs {label(control)} {pct(control['accuracy'])}).")


def group_of(entry: dict) -> str:
    """What the feature-set plot groups by: the feature set when rows name one, else the backbone."""
    return str(entry.get("feature_set") or entry.get("backbone") or "?")


def _row_stores(entry: dict) -> list[str]:
    stores = entry.get("stores")
    if isinstance(stores, list) and stores:
        return [str(s.get("path") if isinstance(s, dict) else s) for s in stores]
    return [str(entry["store_path"])] if entry.get("store_path") else []


def store_floors(entries: Sequence[dict]) -> dict[str, float]:
    """Each store's extraction seconds, once per store (key: a readable store label)."""
    floors: dict[str, float] = {}
    for entry in entries:
        if entry.get("kind") == "finetune" or entry.get("extract_seconds") is None:
            continue
        stores = _row_stores(entry)
        if len(stores) == 1:
            floors.setdefault(group_of(entry), float(entry["extract_seconds"]))
    return floors


def pipeline_cost(entries: Sequence[dict]) -> dict:
    """What the whole run cost: each store's extraction once, every head fit, every fine-tune."""
    per_store: dict[str, float] = {}
    fits = tunes = 0.0
    for entry in entries:
        if entry.get("kind") == "finetune":
            tunes += float(entry.get("train_seconds") or entry.get("fit_seconds") or 0.0)
            continue
        fits += float(entry.get("fit_seconds") or 0.0)
        stores = entry.get("stores") if isinstance(entry.get("stores"), list) else []
        for store in stores:  # a feature-set row: each of its stores with its own extraction seconds
            if isinstance(store, dict) and store.get("path") and store.get("extract_seconds") is not None:
                per_store[str(store["path"])] = float(store["extract_seconds"])
        if not stores and entry.get("store_path") and entry.get("extract_seconds") is not None:
            per_store[str(entry["store_path"])] = float(entry["extract_seconds"])
    extraction = sum(per_store.values())
    return {"stores": len(per_store), "extraction": extraction, "fits": fits, "finetunes": tunes,
            "total": extraction + fits + tunes}


def _thumbnail(source, index: dict, item_id: str, px: int = 72) -> str | None:
    from PIL import Image

    if item_id not in index:
        return None
    try:
        image = source.load(index[item_id]).convert("RGB")
    except Exception:  # noqa: BLE001 - a missing or changed image only costs its thumbnail
        return None
    image = image.resize((px, px), Image.Resampling.NEAREST if min(image.size) < px else Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _open_source(entry: dict):
    path = entry.get("source_path")
    if not path:
        return None, {}
    try:
        from ..data import open_source

        source = open_source(path)
    except Exception:  # noqa: BLE001 - a moved source: the gallery falls back to a table
        return None, {}
    return source, {item_id: i for i, item_id in enumerate(source.ids)}


def gallery(entry: dict, label: str) -> tuple[str, list[str]] | None:
    """(HTML, Markdown lines) of the entry's most confident test mistakes, or None when it has none."""
    mistakes = entry.get("mistakes") or []
    if not mistakes:
        return None
    source, index = _open_source(entry)
    cells, rows = [], ["| id | true | predicted | confidence |", "|---|---|---|---|"]
    for m in mistakes:
        conf = "—" if m.get("confidence") is None else f"{100 * m['confidence']:.0f}%"
        uri = _thumbnail(source, index, m["id"]) if source is not None else None
        picture = f'<img src="{uri}" alt="{html.escape(m["id"])}" width="72" height="72">' if uri else ""
        cells.append(f'<figure class="mistake">{picture}<figcaption>{html.escape(m["true"])} → '
                     f'<b>{html.escape(m["pred"])}</b> {conf}<br><span class="meta">{html.escape(m["id"])}</span>'
                     "</figcaption></figure>")
        rows.append(f"| {m['id']} | {m['true']} | {m['pred']} | {conf} |")
    note = (f"The {len(mistakes)} test images {label} got wrong with the highest confidence (true → predicted, "
            "confidence of the predicted class)." + ("" if source is not None else " Thumbnails need the source "
                                                     "images, which this report could not open."))
    body = (f"<h3>Worst mistakes: {html.escape(label)}</h3><p class=\"legend\">{html.escape(note)}</p>"
            f'<div class="gallery">{"".join(cells)}</div>')
    return body, [f"### Worst mistakes: {label}", "", note, "", *rows, ""]


def plot_groups(entries: Sequence[dict], path, title: str, figure, save):
    """Bar chart: the best head's test accuracy (95% CI) per feature set / backbone, raw pixels included."""
    best: dict[str, dict] = {}
    for entry in entries:
        if entry.get("kind") == "finetune":
            continue
        key = group_of(entry)
        if key not in best or entry["accuracy"] > best[key]["accuracy"]:
            best[key] = entry
    if len(best) < 2:
        return None
    names = sorted(best, key=lambda k: best[k]["accuracy"])
    fig = figure(7.5, 1.2 + 0.42 * len(names))
    ax = fig.add_subplot()
    accs = [100 * best[n]["accuracy"] for n in names]
    lo = [100 * (best[n]["accuracy"] - (best[n].get("accuracy_ci") or [best[n]["accuracy"]] * 2)[0]) for n in names]
    hi = [100 * ((best[n].get("accuracy_ci") or [best[n]["accuracy"]] * 2)[1] - best[n]["accuracy"]) for n in names]
    colors = ["#999999" if best[n].get("control") else "#1f77b4" for n in names]
    ax.barh(range(len(names)), accs, xerr=[lo, hi], color=colors, capsize=3)
    ax.set_yticks(range(len(names)), [f"{n} ({best[n].get('head')})" for n in names], fontsize=8)
    ax.set_xlim(max(0.0, min(accs) - 10), 100)
    ax.set_xlabel("test accuracy (%) of the best head, 95% CI")
    ax.set_title(title, fontsize=10)
    ax.grid(True, axis="x", alpha=0.25)
    save(fig, path)
    return path


def fill_store_fields(entries: list[dict]) -> None:
    """Add extraction cost and store size to head entries that name a readable store and lack them."""
    from pathlib import Path

    from ..core.errors import FeatxError
    from ..store import FeatureStore

    stores: dict[str, dict] = {}
    for entry in entries:
        path = entry.get("store_path")
        if entry.get("kind") == "finetune" or entry.get("extract_seconds") is not None or not path:
            continue
        if path not in stores:
            try:
                store = FeatureStore(path)
                stores[path] = {"store_id": store.store_id,
                                "extract_seconds": store.run_info.get("extract_seconds_total"),
                                "extract_images_per_second": store.run_info.get("images_per_second"),
                                "extract_batch_size": store.run_info.get("batch_size"),
                                "store_bytes": Path(path).stat().st_size}
            except (FeatxError, OSError):
                stores[path] = {}  # moved or deleted: the row shows fit time only
        # A store re-extracted since (another id) did not produce this entry's features.
        if stores[path] and stores[path]["store_id"] == entry.get("store_id"):
            entry.update({k: v for k, v in stores[path].items() if k != "store_id"})
