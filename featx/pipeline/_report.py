"""Benchmark reports: results entries in, a decision a person can read out.

:func:`write_report` turns a list of results entries (the contract shared by the
heads and the fine-tune baselines, see the README) into ``report.html`` (one
self-contained file: inline CSS, plots embedded as PNG data URIs, no scripts and
no links), ``report.md``, the combined ``results.json`` and the plots as PNG files.

How the report decides, per dataset:

* The *main setting* is the full training set (``per_class`` null), or the largest
  few-shot size when only few-shot runs exist. The table, the Pareto plot, the
  confusion matrix and the recommendation use it; every size feeds the learning curve.
* *Total time to result* is what a choice costs from raw images: extraction seconds
  of its feature store(s) (summed over resumed runs, each store once) plus the head's
  fit time, or the fine-tune's training time. Heads on one store share its extraction
  (see :mod:`featx.pipeline._report_parts` for the exact rule).
* The *best* entry has the highest test accuracy; the *recommended* one is the
  cheapest entry whose accuracy lies inside the best entry's confidence interval,
  i.e. one that the test set cannot tell apart from the best.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path

from ..core.errors import FeatxError, FeatxUsageError
from ..core.io import write_atomic, write_json_atomic
from ..core.results import RESULTS_FILE, read_results, skipped_reason
from . import _report_parts as _parts

__all__ = ["write_report", "load_results", "total_seconds", "recommend", "REPORT_FILES"]

REPORT_FILES = ("report.html", "report.md", RESULTS_FILE)
_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")


def load_results(path: str | os.PathLike) -> list[dict]:
    """Read a results list from ``results.json`` (or a directory holding one), each row as
    committed with its saved model (:func:`featx.core.results.read_results`)."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    if not path.exists():
        raise FeatxUsageError(f"no results found: {path} does not exist (run `featx run` or `featx train` first)")
    try:
        if path.name == RESULTS_FILE:
            return read_results(path.parent)
        entries = json.loads(path.read_text())
    except ValueError as exc:
        raise FeatxError(f"{path} is not valid JSON ({exc}); re-run the stage that wrote it") from None
    except FeatxError as exc:
        raise FeatxError(f"{exc}; re-run the stage that wrote it") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise FeatxError(f"{path} is not a featx results list (expected a JSON list of entries)")
    return entries


# --------------------------------------------------------------------------- numbers


def total_seconds(entry: dict) -> float | None:
    """Compute spent from raw images to this result: extraction + head fit, or fine-tune training."""
    if entry.get("kind") == "finetune":
        value = entry.get("train_seconds", entry.get("fit_seconds"))
        return None if value is None else float(value)
    fit = entry.get("fit_seconds")
    if fit is None:
        return None
    return float(fit) + float(entry.get("extract_seconds") or 0.0)


def _size(entry: dict) -> int | None:
    return entry.get("per_class")


def _per_class_x(entry: dict) -> float:
    """Training images per class: the few-shot N, or the mean class size of the full training set."""
    if entry.get("per_class"):
        return float(entry["per_class"])
    n_classes = max(1, len(entry.get("class_names") or []) or 1)
    return float(entry.get("n_train") or 0) / n_classes


def _is_scratch(entry: dict) -> bool:
    return entry.get("kind") == "finetune" and entry.get("mode") == "scratch"


def _label(entry: dict) -> str:
    if entry.get("kind") == "finetune":
        flag = " [under-trained]" if _parts.is_under_trained(entry) else ""
        return f"{entry.get('backbone', '?')} + {_parts.describe_finetune(entry)}{flag}"
    control = " (control)" if entry.get("control") else ""
    return f"{_parts.group_of(entry)}{control} + {entry.get('head', '?')}"


def _main_setting(entries: Sequence[dict]) -> list[dict]:
    full = [e for e in entries if _size(e) is None]
    if full:
        return full
    largest = max(_size(e) for e in entries)
    return [e for e in entries if _size(e) == largest]


def _rank_key(entry: dict):
    cost = total_seconds(entry)
    return (-float(entry.get("accuracy", 0.0)), math.inf if cost is None else cost)


def recommend(entries: Sequence[dict]) -> tuple[dict, dict]:
    """Return (best, recommended) among ``entries`` (one setting of one dataset).

    Best: highest accuracy (ties: cheaper). Recommended: the cheapest entry whose
    accuracy is at least the lower end of the best entry's accuracy CI.
    """
    if not entries:
        raise ValueError("no entries to recommend from")
    best = min(entries, key=_rank_key)
    low = (best.get("accuracy_ci") or [best["accuracy"]])[0]
    close = [e for e in entries if e["accuracy"] >= low and total_seconds(e) is not None]
    recommended = min(close, key=lambda e: (total_seconds(e), -e["accuracy"])) if close else best
    return best, recommended


def _pareto(entries: Sequence[dict]) -> list[dict]:
    """Entries that no cheaper entry beats on accuracy, by increasing cost."""
    front, best_so_far = [], -1.0
    for entry in sorted((e for e in entries if total_seconds(e) is not None), key=lambda e: (total_seconds(e), -e["accuracy"])):
        if entry["accuracy"] > best_so_far:
            front.append(entry)
            best_so_far = entry["accuracy"]
    return front


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _ci(values) -> str:
    return f"[{100 * values[0]:.1f}, {100 * values[1]:.1f}]" if values else ""


def _secs(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 120:
        return f"{value / 60:.1f} min"
    return f"{value:.1f} s" if value >= 1 else f"{value:.2f} s"


def _seed_note(entry: dict) -> str:
    acc = (entry.get("seed_summary") or {}).get("accuracy")
    if acc and acc.get("n", 1) > 1:
        return f"mean {100 * acc['mean']:.1f}% ± {100 * acc['std']:.1f} over {acc['n']} seeds"
    return ""


def summarise(dataset: str, entries: Sequence[dict]) -> str:
    """The generated summary line of one dataset: the recommendation and why, and the fine-tune gain."""
    main = _main_setting(entries)
    best, rec = recommend(main)
    setting = "full training set" if _size(main[0]) is None else f"{_size(main[0])} training images per class"
    parts = [f"{dataset} ({setting}, {best.get('n_test', '?')} test images): recommended {_label(rec)}"]
    if rec is best:
        parts.append(f"— the most accurate ({_pct(rec['accuracy'])} {_ci(rec.get('accuracy_ci'))}) at {_secs(total_seconds(rec))} total")
    else:
        saving = (total_seconds(best) or 0) / max(total_seconds(rec) or 1e-9, 1e-9)
        parts.append(
            f"— {_pct(rec['accuracy'])} lies within the 95% CI of the best, {_label(best)} "
            f"({_pct(best['accuracy'])} {_ci(best.get('accuracy_ci'))}), at {_secs(total_seconds(rec))} total instead of "
            f"{_secs(total_seconds(best))} ({saving:.1f}x cheaper)"
        )
    # Fine-tunes are measured against heads on frozen backbone features, not against the
    # raw-pixel control, which gets its own sentence.
    heads = [e for e in main if e.get("kind") != "finetune" and not e.get("control")]
    controls = [e for e in main if e.get("kind") != "finetune" and e.get("control")]
    tuned = [e for e in main if e.get("kind") == "finetune" and not _is_scratch(e)]
    scratch = [e for e in main if _is_scratch(e)]
    text = " ".join(parts) + "."
    if heads and controls:
        text += " " + _parts.control_verdict(min(heads, key=_rank_key), min(controls, key=_rank_key), _pct, _label)
    if heads and tuned:
        text += " " + _parts.finetune_verdict(min(heads, key=_rank_key), tuned, _pct, _label, total_seconds)
    if scratch:
        best_scratch = min(scratch, key=_rank_key)
        text += f" Training from scratch reaches {_pct(best_scratch['accuracy'])} in {_secs(total_seconds(best_scratch))}."
    return text


# --------------------------------------------------------------------------- plots


def _save_png(fig, path: Path) -> None:
    """Render to memory, then one atomic write: a full disk leaves the previous PNG, not half of one."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    write_atomic(path, buffer.getvalue())


def _figure(width: float, height: float):
    # A bare Figure with the Agg canvas: no pyplot global state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _log_axis(axis) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator

    # 1-2-3-5 ticks with plain numbers: runs often span less than a decade.
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(FuncFormatter(lambda value, _: ""))


def _colors(entries: Sequence[dict]) -> dict[str, str]:
    names = sorted({_parts.group_of(e) for e in entries} | {e.get("backbone", "?") for e in entries})
    return {name: _PALETTE[i % len(_PALETTE)] for i, name in enumerate(names)}


def _plot_pareto(entries: Sequence[dict], rec: dict, path: Path, title: str) -> Path:
    fig = _figure(7.5, 4.6)
    ax = fig.add_subplot()
    colors = _colors(entries)
    markers = {"head": "o", "finetune": "s", "scratch": "X"}
    seen = set()
    for entry in entries:
        cost = total_seconds(entry)
        if cost is None:
            continue
        kind = "scratch" if _is_scratch(entry) else entry.get("kind", "head")
        ci = entry.get("accuracy_ci") or [entry["accuracy"]] * 2
        label = f"{_parts.group_of(entry) if kind == 'head' else entry.get('backbone')} ({'fine-tune' if kind == 'finetune' else kind})"
        ax.errorbar(
            cost, 100 * entry["accuracy"],
            yerr=[[100 * (entry["accuracy"] - ci[0])], [100 * (ci[1] - entry["accuracy"])]],
            fmt=markers[kind], color=colors[_parts.group_of(entry) if kind == "head" else entry.get("backbone", "?")], ms=7, capsize=3, alpha=0.9,
            label=None if label in seen else label,
        )
        seen.add(label)
        ax.annotate(entry.get("head", "?") if kind == "head" else entry.get("mode", "?"), (cost, 100 * entry["accuracy"]), textcoords="offset points",
                    xytext=(6, 4), fontsize=7.5, color="#333")
    for i, (store, seconds) in enumerate(sorted(_parts.store_floors(entries).items())):
        ax.axvline(seconds, color=colors.get(store, "#999"), ls=":", lw=1, label="extraction of each store (shared floor)"
                   if i == 0 else None)
    front = _pareto(entries)
    if len(front) > 1:
        ax.step([total_seconds(e) for e in front], [100 * e["accuracy"] for e in front], where="post",
                color="#555", ls="--", lw=1, label="Pareto front")
    if total_seconds(rec) is not None:
        ax.scatter([total_seconds(rec)], [100 * rec["accuracy"]], s=260, facecolors="none", edgecolors="#e6a000",
                   linewidths=2, label="recommended", zorder=5)
    return _save_accuracy_plot(fig, ax, path, title,
                               "total compute time to result (s, log scale): extraction + fit, or fine-tune training")


def _plot_best(entry: dict, path: Path) -> Path:
    names = list(entry.get("class_names") or [])
    conf = entry.get("confusion_matrix") or []
    per_class = entry.get("per_class_metrics") or {}
    k = len(names)
    side = min(9.0, 2.5 + 0.38 * k)
    fig = _figure(2 * side + 0.5, side)
    ax, bx = fig.subplots(1, 2)
    if conf:
        import numpy as np

        counts = np.asarray(conf, dtype=float)
        rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        if k <= 25:
            for i in range(k):
                for j in range(k):
                    if counts[i, j]:
                        ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=7,
                                color="white" if rates[i, j] > 0.6 else "#222")
        ax.set_xticks(range(k), names, rotation=90 if k > 6 else 0, fontsize=7)
        ax.set_yticks(range(k), names, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title("confusion matrix (counts; colour = row rate)", fontsize=9)
        fig.colorbar(image, ax=ax, shrink=0.8)
    f1 = [per_class.get(name, {}).get("f1", 0.0) for name in names]
    bx.barh(range(k), f1, color="#1f77b4")
    bx.set_yticks(range(k), names, fontsize=7)
    bx.invert_yaxis()
    bx.set_xlim(0, 1)
    bx.set_xlabel("F1 on the test split")
    bx.set_title("per-class F1", fontsize=9)
    bx.grid(True, axis="x", alpha=0.25)
    fig.suptitle(f"best: {_label(entry)} ({_pct(entry.get('accuracy'))} accuracy)", fontsize=10)
    _save_png(fig, path)
    return path


def _curve_series(entries: Sequence[dict]) -> dict[str, list[dict]]:
    """Lines of the learning curve: the best head per backbone, and every fine-tune mode per backbone."""
    series: dict[str, list[dict]] = {}
    main = _main_setting(entries)
    for backbone in sorted({e.get("backbone") for e in entries}):
        heads = [e for e in main if e.get("backbone") == backbone and e.get("kind") != "finetune"]
        if heads:
            head = min(heads, key=_rank_key)["head"]
            series[f"{backbone} + {head} (best head)"] = [
                e for e in entries if e.get("backbone") == backbone and e.get("head") == head and e.get("kind") != "finetune"
            ]
        for mode in sorted({e.get("mode") for e in entries if e.get("kind") == "finetune" and e.get("backbone") == backbone}):
            series[f"{backbone} + finetune:{mode}"] = [
                e for e in entries if e.get("kind") == "finetune" and e.get("backbone") == backbone and e.get("mode") == mode
            ]
    return {name: sorted(points, key=_per_class_x) for name, points in series.items()}


def _plot_learning_curve(entries: Sequence[dict], path: Path, title: str) -> Path:
    fig = _figure(7.5, 4.6)
    ax = fig.add_subplot()
    for i, (name, points) in enumerate(_curve_series(entries).items()):
        xs = [_per_class_x(e) for e in points]
        ys = [100 * e["accuracy"] for e in points]
        lo = [100 * (e["accuracy"] - (e.get("accuracy_ci") or [e["accuracy"]] * 2)[0]) for e in points]
        hi = [100 * ((e.get("accuracy_ci") or [e["accuracy"]] * 2)[1] - e["accuracy"]) for e in points]
        style = "--" if "scratch" in name else "-"
        ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o" + style, capsize=3, ms=5, label=name,
                    color=_PALETTE[i % len(_PALETTE)])
    return _save_accuracy_plot(fig, ax, path, title,
                               "training images per class (log scale; rightmost point = full training set when run)")


def _save_accuracy_plot(fig, ax, path: Path, title: str, xlabel: str) -> Path:
    """Shared finish of the accuracy plots: log x axis with plain ticks, labels, grid, legend."""
    ax.set_xscale("log")
    _log_axis(ax.xaxis)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%), 95% CI")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7.5, loc="best")
    _save_png(fig, path)
    return path


# --------------------------------------------------------------------------- tables


_COLUMNS = ("Backbone", "Head", "Train/class", "Accuracy (95% CI)", "Macro-F1 (95% CI)", "Images/s",
            "Fit s", "Total s", "Dim", "Store MB")


def _row(entry: dict) -> list[str]:
    tuned = entry.get("kind") == "finetune"
    ips = entry.get("images_per_second") if tuned else entry.get("extract_images_per_second")
    store = entry.get("store_bytes")
    fit = entry.get("train_seconds", entry.get("fit_seconds")) if tuned else entry.get("fit_seconds")
    seed = _seed_note(entry)
    return [
        _parts.group_of(entry) + (" (control)" if entry.get("control") else ""),
        _label(entry).split(" + ", 1)[1] if tuned else str(entry.get("head", "?")),
        "all" if entry.get("per_class") is None else str(entry["per_class"]),
        f"{_pct(entry.get('accuracy'))} {_ci(entry.get('accuracy_ci'))}" + (f" ({seed})" if seed else ""),
        f"{_pct(entry.get('macro_f1'))} {_ci(entry.get('macro_f1_ci'))}",
        "—" if ips is None else f"{ips:.0f}" + (" (train)" if tuned else ""),
        _secs(fit),
        _secs(total_seconds(entry)),
        "—" if entry.get("dim") is None else str(entry["dim"]),
        "—" if store is None else f"{store / 1e6:.1f}",
    ]


def _curve_table(entries: Sequence[dict]) -> tuple[list[str], list[list[str]]] | None:
    sizes = sorted({_size(e) for e in entries}, key=lambda s: math.inf if s is None else s)
    if len(sizes) < 2:
        return None
    header = ["Backbone + head"] + ["all" if s is None else str(s) for s in sizes]
    rows = []
    for label in sorted({_label(e) for e in entries}):
        by_size = {_size(e): e for e in entries if _label(e) == label}
        rows.append([label] + [_pct(by_size[s]["accuracy"]) if s in by_size else "—" for s in sizes])
    return header, rows


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]], classes: Sequence[str] = ()) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if i < len(classes) and classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


# --------------------------------------------------------------------------- documents


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;max-width:1180px;margin:24px auto;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}.meta{color:#666;font-size:12px}
.summary{background:#f3f7fb;border-left:4px solid #1f77b4;padding:10px 14px;margin:10px 0}
table{border-collapse:collapse;font-size:12.5px;margin:8px 0;width:100%}
th,td{border:1px solid #ddd;padding:4px 7px;text-align:left;white-space:nowrap}
th{background:#f5f5f5}tr.best td{font-weight:600}tr.rec td{background:#fff7e0}
td:nth-child(n+3){font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto;border:1px solid #eee;margin:6px 0}
.legend{color:#555;font-size:12px}.gallery{display:flex;flex-wrap:wrap;gap:8px}
.mistake{margin:0;width:110px;font-size:11px;text-align:center}.mistake img{border:1px solid #ccc;image-rendering:pixelated}.failed{color:#b00020}.missing{color:#a06000}
"""


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "dataset"


def _stage_rows(stages: Sequence[dict]) -> list[list[str]]:
    return [[s.get("stage", "?"), s.get("status", "?"), _secs(s.get("seconds")), s.get("error") or ""] for s in stages]


class _Document:
    """The report as two parallel documents: HTML parts and Markdown lines."""

    def __init__(self) -> None:
        self.html: list[str] = []
        self.md: list[str] = []

    def add(self, html_part: str, md_lines: Sequence[str]) -> None:
        self.html.append(html_part)
        self.md.extend(md_lines)

    def write(self, out: Path, title: str) -> Path:
        document = (
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
            + "\n".join(self.html) + "</body></html>\n"
        )
        write_atomic(out / "report.md", "\n".join(self.md) + "\n")
        return write_atomic(out / "report.html", document)


def write_report(
    out_dir: str | os.PathLike,
    entries: Sequence[dict] | None = None,
    *,
    title: str | None = None,
    stages: Sequence[dict] | None = None,
) -> Path:
    """Write ``report.html``, ``report.md``, ``results.json`` and PNG plots into ``out_dir``.

    ``entries`` defaults to ``out_dir/results.json`` (so a report can be rebuilt with
    no recomputation). ``stages`` (dicts with ``stage``, ``status``, ``seconds``,
    ``error``) lists pipeline stages; failed and missing ones are shown so a partial
    report says what it lacks. Returns the path of ``report.html``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    entries = load_results(out) if entries is None else [dict(e) for e in entries]
    # Heads the data could not support stay in results.json with their reason; they have no metrics to plot.
    skipped = [e for e in entries if skipped_reason(e)]
    entries = [e for e in entries if not skipped_reason(e)]
    missing_fields = [e.get("head", "?") for e in entries if "accuracy" not in e or "backbone" not in e]
    if missing_fields:
        raise FeatxError(f"results entries without accuracy/backbone ({', '.join(missing_fields[:3])}): not featx results")
    _parts.fill_store_fields(entries)
    write_json_atomic(out / RESULTS_FILE, entries + skipped)
    title = title or "featx benchmark report"
    datasets: dict[str, list[dict]] = {}
    for entry in entries:
        datasets.setdefault(str(entry.get("dataset") or "results"), []).append(entry)

    doc = _Document()
    _add_header(doc, title, entries, datasets)
    for name, group in datasets.items():
        suffix = "" if len(datasets) == 1 else f"-{_slug(name)}"
        _add_dataset(doc, out, name, group, suffix)
    if stages:
        _add_stages(doc, stages)
    return doc.write(out, title)


def _add_header(doc: _Document, title: str, entries: Sequence[dict], datasets: dict[str, list[dict]]) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M")
    versions = next((e.get("versions") for e in entries if e.get("versions")), {}) or {}
    meta = f"generated {stamp}; {len(entries)} result(s)" + "".join(f"; {k} {v}" for k, v in sorted(versions.items()))
    doc.add(f"<h1>{html.escape(title)}</h1>" + f'<p class="meta">{html.escape(meta)}</p>', [f"# {title}", "", f"_{meta}_", ""])
    if not entries:
        empty = "No results yet: every stage failed or none has run."
        doc.add(f'<p class="summary">{empty}</p>', [empty])
    summaries = [summarise(name, group) for name, group in datasets.items() if group]
    if summaries:
        doc.add("<h2>Summary</h2>" + "".join(f'<p class="summary">{html.escape(s)}</p>' for s in summaries),
                ["## Summary", ""] + [f"> {s}" + "\n" for s in summaries])


def _split_note(main: Sequence[dict]) -> str:
    digests = {e.get("splits_digest") for e in main if e.get("kind") != "finetune" or e.get("splits_digest")}
    if len(digests - {None}) <= 1:
        return f"All rows are evaluated on the same test split (digest {next(iter(digests - {None}), '?')})."
    return "Warning: rows were evaluated on different test splits (splits_digest differs); compare with care."


def _add_dataset(doc: _Document, out: Path, name: str, group: list[dict], suffix: str) -> None:
    """One dataset: the ranked table with its legend, then the plots."""
    main = _main_setting(group)
    best, rec = recommend(main)
    ordered = sorted(main, key=_rank_key)
    marks = ["best rec" if e is best and e is rec else "best" if e is best else "rec" if e is rec else "" for e in ordered]
    rows = [_row(e) for e in ordered]
    for row, mark in zip(rows, marks):
        row[1] += " ★" if "best" in mark else ""
        row[1] += " ✓" if "rec" in mark else ""
    legend = (
        "★ best accuracy; ✓ recommended (cheapest within the best entry's 95% CI). Accuracy and macro-F1 on the "
        "test split with 95% bootstrap CIs. Images/s: extraction throughput of the feature store (fine-tunes: "
        "training throughput). Fit s: head selection + refit (fine-tunes: training). Total s: extraction + fit, "
        "or fine-tune training, i.e. compute from raw images to this result. Dim: feature dimension. Store MB: "
        "size of the feature store. " + _split_note(main)
    )
    section_title = f"{name}" + ("" if _size(main[0]) is None else f" — {_size(main[0])} training images per class")
    doc.add(f"<h2>{html.escape(section_title)}</h2>" + _html_table(_COLUMNS, rows, marks)
            + f'<p class="legend">{html.escape(legend)}</p>',
            [f"## {section_title}", "", _md_table(_COLUMNS, rows), "", f"_{legend}_", ""])
    _add_plots(doc, out, name, group, main, best, rec, suffix)


def _add_plots(doc: _Document, out: Path, name: str, group, main, best: dict, rec: dict, suffix: str) -> None:
    plots = [
        (_plot_pareto(main, rec, out / f"pareto{suffix}.png", f"{name}: accuracy vs total compute"),
         "Accuracy vs total compute time",
         "Each point is one choice (circles: frozen features + head; squares: fine-tunes; crosses: from scratch), "
         "coloured by backbone, with its 95% CI. Cost: the row's own fit time plus the extraction of the store(s) it "
         "reads, each store once; heads on one store share that extraction (dotted line: the floor under all of "
         "them), it is not added per head to the pipeline's bill. The dashed step line is the Pareto front: the "
         "choices no cheaper choice beats. The ringed point is the recommendation. " + _cost_note(main)),
        (_plot_best(best, out / f"best{suffix}.png"), f"Best choice: {_label(best)}",
         "Confusion matrix on the test split (cell = count, colour = share of the true class) and per-class F1."),
    ]
    curve = _curve_table(group)
    if curve is not None:
        plots.append((
            _plot_learning_curve(group, out / f"learning_curve{suffix}.png", f"{name}: learning curve"),
            "Learning curve",
            "Test accuracy vs training images per class for the best head of each backbone, each fine-tune mode "
            "and training from scratch (dashed), all on the same test split.",
        ))
    grouped = _parts.plot_groups(main, out / f"feature_sets{suffix}.png", f"{name}: accuracy per feature set", _figure,
                                 _save_png)
    if grouped is not None:
        plots.append((grouped, "Accuracy per feature set", "The best head's test accuracy (95% CI) on each feature "
                      "set (or backbone; grey: the raw-pixel control), all on the same test split."))
    for path, heading, caption in plots:
        doc.add(f"<h3>{html.escape(heading)}</h3><p class=\"legend\">{html.escape(caption)}</p>"
                + f'<img src="{_data_uri(path)}" alt="{html.escape(heading)}">',
                [f"### {heading}", "", caption, "", f"![{heading}]({path.name})", ""])
    shown = best if best.get("mistakes") else min((e for e in main if e.get("mistakes")), key=_rank_key, default=None)
    part = _parts.gallery(shown, _label(shown)) if shown is not None else None
    if part is not None:
        doc.add(*part)
    if curve is not None:
        header, curve_rows = curve
        doc.add("<h3>Accuracy by training images per class</h3>" + _html_table(header, curve_rows),
                ["### Accuracy by training images per class", "", _md_table(header, curve_rows), ""])


def _cost_note(entries: Sequence[dict]) -> str:
    cost = _parts.pipeline_cost(entries)
    return (f"This run's compute: {_secs(cost['extraction'])} extraction ({cost['stores']} store(s), each once) + "
            f"{_secs(cost['fits'])} head fits + {_secs(cost['finetunes'])} fine-tunes = {_secs(cost['total'])}.")


def _add_stages(doc: _Document, stages: Sequence[dict]) -> None:
    classes = ["failed" if s.get("status") == "failed" else "missing" if s.get("status") in ("not run", "skipped") else ""
               for s in stages]
    header = ["Stage", "Status", "Seconds", "Error"]
    rows = _stage_rows(stages)
    doc.add("<h2>Pipeline stages</h2>" + _html_table(header, rows, classes),
            ["## Pipeline stages", "", _md_table(header, rows), ""])
    incomplete = [s for s in stages if s.get("status") in ("failed", "not run", "skipped")]
    if incomplete:
        note = (f"{len(incomplete)} stage(s) did not produce results; this report shows what exists. "
                "Re-run the same `featx run` command to resume.")
        doc.add(f'<p class="failed">{html.escape(note)}</p>', [f"**{note}**", ""])
