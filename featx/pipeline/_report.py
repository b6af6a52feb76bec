"""Benchmark reports: results entries in, a decision a person can read out and act on.

:func:`write_report` turns a list of results entries (the contract shared by the
heads and the fine-tune baselines) into ``report.html`` (one self-contained file:
inline CSS, plots embedded as PNG data URIs, no scripts, no fonts and no links),
``report.md``, the combined ``results.json``, ``comparisons.json`` (the paired
comparisons behind the recommendation) and the plots as PNG files.

How the report decides, per dataset (the rule itself: :mod:`featx.pipeline._report_decide`):

* The *main setting* is the full training set (``per_class`` null), or the largest
  few-shot size when only few-shot runs exist. The table, the Pareto plot, the
  comparisons and the recommendation use it; every size feeds the learning curve.
* *Total time to result* (training cost) is what a choice costs from raw images:
  extraction seconds of its feature store(s) plus the head's fit time, or the
  fine-tune's training time (see :mod:`featx.pipeline._report_parts` for the sharing rule).
  *Inference cost* is milliseconds per image, backbone + head.
* Rows are compared on the shared test items (paired bootstrap and McNemar), never by
  whether two independent CIs overlap; the summary says when the test split cannot
  separate the top rows, and how many test images it would take.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path

from ..core.errors import FeatxError, FeatxUsageError
from ..core.io import json_text, write_atomic, write_json_atomic
from ..core.results import RESULTS_FILE, read_results, skipped_reason
from . import _report_parts as _parts
from . import _report_plots as _plots
from . import _report_sections as _sections
from ._report_decide import (
    RULE,
    compare_rows,
    decide,
    fmt_ms,
    inference_ms,
    locate_predictions,
    needed_sentence,
)
from ._report_rows import (
    ci,
    dci,
    label,
    main_setting,
    pct,
    points,
    rank_key,
    secs,
    seed_note,
    size,
    total_seconds,
)

__all__ = ["write_report", "load_results", "total_seconds", "recommend", "summarise", "REPORT_FILES",
           "COMPARISONS_FILE"]

COMPARISONS_FILE = "comparisons.json"
REPORT_FILES = ("report.html", "report.md", RESULTS_FILE, COMPARISONS_FILE)


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


def recommend(entries: Sequence[dict]) -> tuple[dict, dict]:
    """Return (best, recommended) among ``entries`` (one setting of one dataset), by :data:`RULE`."""
    decision = decide(entries)
    return decision.best, decision.recommended


def _is_scratch(entry: dict) -> bool:
    return entry.get("kind") == "finetune" and entry.get("mode") == "scratch"


# --------------------------------------------------------------------------- summary


def _names(entries: Sequence[dict], limit: int = 5) -> str:
    shown = "; ".join(label(e) for e in entries[:limit])
    return shown + (f"; and {len(entries) - limit} more" if len(entries) > limit else "")


def _cannot_tell(decision, n_test) -> str:
    """The sentence for a test split that cannot separate the top rows."""
    tied, best, rec = decision.tied, decision.best, decision.recommended
    how = ("95% paired-bootstrap CI of each one's accuracy difference to the most accurate includes 0"
           + (f"; {len(decision.unpaired)} row(s) without per-item predictions compared by their CIs instead"
              if decision.unpaired else ""))
    text = (f" These {len(tied)} choices are indistinguishable on {n_test} test images ({how}): {_names(tied)}; "
            f"the cheapest at inference is {label(rec)}.")
    if rec is not best:
        result = decision.comparison(rec)
        gap = f", a difference of {points(result['diff'])} points (95% paired CI {dci(result['ci'])})" if result else ""
        text += f" The most accurate, {label(best)} ({pct(best['accuracy'])}), is not shown to be better{gap}."
    needed = needed_sentence(decision)
    return text + (" " + needed if needed else "")


def _clear_winner(decision, main: Sequence[dict]) -> str:
    others = sorted((e for e in main if e is not decision.best), key=rank_key)
    if not others:
        return ""
    nxt = others[0]
    result = decision.comparison(nxt)
    if result is None:
        return f" The next row, {label(nxt)} ({pct(nxt['accuracy'])}), lies outside its 95% CI."
    how = ("The paired test separates" if all(decision.comparison(e) is not None for e in others) else
           "The paired test (or, for rows without per-item predictions, the 95% CIs) separates")
    return (f" {how} it from every other row (next: {label(nxt)}, "
            f"{points(-result['diff'])} points, 95% paired CI {dci([-result['ci'][1], -result['ci'][0]])}).")


def summarise(dataset: str, entries: Sequence[dict]) -> str:
    """The generated summary of one dataset: the recommendation, what the test split cannot tell, the verdicts."""
    main = main_setting(entries)
    decision = decide(main)
    best, rec = decision.best, decision.recommended
    n_test = best.get("n_test", "?")
    setting = "full training set" if size(main[0]) is None else f"{size(main[0])} training images per class"
    text = (f"{dataset} ({setting}, {n_test} test images): recommended {label(rec)} — {pct(rec['accuracy'])} "
            f"{ci(rec.get('accuracy_ci'))}, {fmt_ms(inference_ms(rec))} ms per image at inference, "
            f"{secs(total_seconds(rec))} to train.")
    text += _cannot_tell(decision, n_test) if len(decision.tied) > 1 else (
        " It is the most accurate row." + _clear_winner(decision, main))
    # Fine-tunes are measured against heads on frozen backbone features, not against the
    # raw-pixel control, which gets its own sentence.
    heads = [e for e in main if e.get("kind") != "finetune" and not e.get("control")]
    controls = [e for e in main if e.get("kind") != "finetune" and e.get("control")]
    tuned = [e for e in main if e.get("kind") == "finetune" and not _is_scratch(e)]
    scratch = [e for e in main if _is_scratch(e)]
    if heads and controls:
        text += " " + _parts.control_verdict(min(heads, key=rank_key), min(controls, key=rank_key), pct, label,
                                             compare_rows)
    if heads and tuned:
        text += " " + _parts.finetune_verdict(min(heads, key=rank_key), tuned, pct, label, total_seconds, compare_rows)
    if scratch:
        best_scratch = min(scratch, key=rank_key)
        text += f" Training from scratch reaches {pct(best_scratch['accuracy'])} in {secs(total_seconds(best_scratch))}."
    return text


# --------------------------------------------------------------------------- tables


_COLUMNS = ("#", "Backbone", "Head", "Train/class", "Accuracy (95% CI)", "Macro-F1 (95% CI)", "Images/s",
            "Fit s", "Total s (training)", "Inference ms/img", "Dim", "Store MB")


def _row(entry: dict, number: int) -> list[str]:
    tuned = entry.get("kind") == "finetune"
    ips = entry.get("images_per_second") if tuned else entry.get("extract_images_per_second")
    store = entry.get("store_bytes")
    fit = entry.get("train_seconds", entry.get("fit_seconds")) if tuned else entry.get("fit_seconds")
    seed = seed_note(entry)
    return [
        str(number),
        _parts.group_of(entry) + (" (control)" if entry.get("control") else ""),
        label(entry).split(" + ", 1)[1] if tuned else str(entry.get("head", "?")),
        "all" if entry.get("per_class") is None else str(entry["per_class"]),
        f"{pct(entry.get('accuracy'))} {ci(entry.get('accuracy_ci'))}" + (f" ({seed})" if seed else ""),
        f"{pct(entry.get('macro_f1'))} {ci(entry.get('macro_f1_ci'))}",
        "—" if ips is None else f"{ips:.0f}" + (" (train)" if tuned else ""),
        secs(fit),
        secs(total_seconds(entry)),
        fmt_ms(inference_ms(entry)),
        "—" if entry.get("dim") is None else str(entry["dim"]),
        "—" if store is None else f"{store / 1e6:.1f}",
    ]


def _curve_table(entries: Sequence[dict]) -> tuple[list[str], list[list[str]]] | None:
    sizes = sorted({size(e) for e in entries}, key=lambda s: float("inf") if s is None else s)
    if len(sizes) < 2:
        return None
    header = ["Backbone + head"] + ["all" if s is None else str(s) for s in sizes]
    rows = []
    for name in sorted({label(e) for e in entries}):
        by_size = {size(e): e for e in entries if label(e) == name}
        rows.append([name] + [pct(by_size[s]["accuracy"]) if s in by_size else "—" for s in sizes])
    return header, rows


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(text: str) -> str:
    """Escaped cell text that may wrap after the separators of long names (feature sets, paths, configs)."""
    return re.sub(r"([+,:/_=])(?=\S)", r"\1<wbr>", html.escape(text))


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]], classes: Sequence[str] = ()) -> str:
    """A table inside a box that scrolls sideways when the table is wider than the page."""
    head = "".join(f"<th>{_cell(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if i < len(classes) and classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{_cell(c)}</td>" for c in row) + "</tr>")
    return f'<div class="tablebox"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


# --------------------------------------------------------------------------- documents


# Fits 900-1,400 px: tables wrap their cells and, when still too wide, scroll inside
# their own box; long commands wrap; plots scale down. No web fonts: system fonts only.
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;max-width:1280px;margin:24px auto;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}.meta{color:#666;font-size:12px}
.summary{background:#f3f7fb;border-left:4px solid #1f77b4;padding:10px 14px;margin:10px 0}
.tablebox{max-width:100%;overflow-x:auto;margin:8px 0}
table{border-collapse:collapse;font-size:12.5px;width:100%}
th,td{border:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f5f5f5;font-weight:600}tr.best td{font-weight:600}tr.rec td{background:#fff7e0}
td{font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto;border:1px solid #eee;margin:6px 0}
.handover{background:#fffaf0;border-left:4px solid #e6a000;padding:6px 14px;margin:10px 0}
pre.cmd{background:#f6f6f6;padding:8px 10px;white-space:pre-wrap;overflow-wrap:anywhere;font-size:12.5px}
code{overflow-wrap:anywhere}.rule{font-weight:600}
.legend{color:#555;font-size:12px}.gallery{display:flex;flex-wrap:wrap;gap:8px}
.mistake{margin:0;width:110px;font-size:11px;text-align:center}.mistake img{border:1px solid #ccc;image-rendering:pixelated}.failed{color:#b00020}.missing{color:#a06000}
"""


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "dataset"


def _stage_rows(stages: Sequence[dict]) -> list[list[str]]:
    return [[s.get("stage", "?"), s.get("status", "?"), secs(s.get("seconds")), s.get("error") or ""] for s in stages]


class _Document:
    """The report as two parallel documents: HTML parts and Markdown lines."""

    def __init__(self) -> None:
        self.html: list[str] = []
        self.md: list[str] = []
        self.comparisons: dict[str, dict] = {}

    def add(self, html_part: str, md_lines: Sequence[str]) -> None:
        self.html.append(html_part)
        self.md.extend(md_lines)

    def write(self, out: Path, title: str) -> Path:
        document = (
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
            + "\n".join(self.html) + "</body></html>\n"
        )
        write_atomic(out / "report.md", "\n".join(self.md) + "\n")
        write_atomic(out / COMPARISONS_FILE, json_text(self.comparisons))
        return write_atomic(out / "report.html", document)


def write_report(
    out_dir: str | os.PathLike,
    entries: Sequence[dict] | None = None,
    *,
    title: str | None = None,
    stages: Sequence[dict] | None = None,
    search: Sequence[dict] | None = None,
) -> Path:
    """Write ``report.html``, ``report.md``, ``results.json``, ``comparisons.json`` and PNG plots into ``out_dir``.

    ``entries`` defaults to ``out_dir/results.json`` (so a report can be rebuilt with
    no recomputation). ``stages`` (dicts with ``stage``, ``status``, ``seconds``,
    ``error``) lists pipeline stages; failed and missing ones are shown so a partial
    report says what it lacks. ``search`` lists the candidates of a configuration search
    (schema: :mod:`featx.pipeline._report_sections`); rows carrying a ``search`` list add
    theirs. Returns the path of ``report.html``.
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
    locate_predictions(entries, out)
    write_json_atomic(out / RESULTS_FILE, entries + skipped)
    title = title or "featx benchmark report"
    datasets: dict[str, list[dict]] = {}
    for entry in entries:
        datasets.setdefault(str(entry.get("dataset") or "results"), []).append(entry)

    doc = _Document()
    _add_header(doc, out, title, entries, datasets)
    for name, group in datasets.items():
        suffix = "" if len(datasets) == 1 else f"-{_slug(name)}"
        _add_dataset(doc, out, name, group, suffix)
    candidates = list(search or []) + [c for e in entries if isinstance(e.get("search"), list) for c in e["search"]]
    if candidates:
        _add_search(doc, candidates)
    if stages:
        _add_stages(doc, stages)
    return doc.write(out, title)


def _add_header(doc: _Document, out: Path, title: str, entries: Sequence[dict], datasets: dict[str, list[dict]]) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M")
    versions = next((e.get("versions") for e in entries if e.get("versions")), {}) or {}
    meta = f"generated {stamp}; {len(entries)} result(s)" + "".join(f"; {k} {v}" for k, v in sorted(versions.items()))
    doc.add(f"<h1>{html.escape(title)}</h1>" + f'<p class="meta">{html.escape(meta)}</p>', [f"# {title}", "", f"_{meta}_", ""])
    if not entries:
        empty = "No results yet: every stage failed or none has run."
        doc.add(f'<p class="summary">{empty}</p>', [empty])
        return
    summaries = [summarise(name, group) for name, group in datasets.items() if group]
    doc.add("<h2>Summary</h2>" + "".join(f'<p class="summary">{html.escape(s)}</p>' for s in summaries)
            + f'<p class="rule">{html.escape(RULE)}</p>',
            ["## Summary", ""] + [f"> {s}" + "\n" for s in summaries] + [f"**{RULE}**", ""])
    for group in datasets.values():
        decision = decide(main_setting(group))
        doc.add(*_sections.handover_parts(decision.recommended, out, decision))


def _batch_note(main: Sequence[dict]) -> str:
    sizes = sorted({int(e["extract_batch_size"]) for e in main if e.get("extract_batch_size")})
    return f" Extraction batch size: {', '.join(map(str, sizes))}." if sizes else ""


def _split_note(main: Sequence[dict]) -> str:
    digests = {e.get("splits_digest") for e in main if e.get("kind") != "finetune" or e.get("splits_digest")}
    if len(digests - {None}) <= 1:
        return f"All rows are evaluated on the same test split (digest {next(iter(digests - {None}), '?')})."
    return "Warning: rows were evaluated on different test splits (splits_digest differs); compare with care."


def _add_dataset(doc: _Document, out: Path, name: str, group: list[dict], suffix: str) -> None:
    """One dataset: the ranked table with its legend, the paired comparisons, then the plots."""
    main = main_setting(group)
    decision = decide(main)
    best, rec = decision.best, decision.recommended
    ordered = sorted(main, key=rank_key)
    numbers = {id(e): i for i, e in enumerate(ordered, start=1)}
    marks = ["best rec" if e is best and e is rec else "best" if e is best else "rec" if e is rec else "" for e in ordered]
    rows = [_row(e, numbers[id(e)]) for e in ordered]
    for row, mark in zip(rows, marks):
        row[2] += " ★" if "best" in mark else ""
        row[2] += " ✓" if "rec" in mark else ""
    legend = (
        "★ most accurate; ✓ recommended (the rule is stated under the summary). Accuracy and macro-F1 on the test "
        "split with 95% bootstrap CIs. Images/s: extraction throughput of the feature store (fine-tunes: training "
        "throughput). Fit s: head selection + refit (fine-tunes: training). Total s (training): extraction + fit, or "
        "fine-tune training, i.e. compute from raw images to this result. Inference ms/img: from image file to class, "
        "backbone + head; the backbone's share is the store's recorded extraction throughput (decode, resize and "
        "forward at the store's batch size) and the head's is its measured predict time; fine-tunes: their measured "
        "forward on the test split." + _batch_note(main) + " Dim: feature dimension. Store MB: size of the feature "
        "store. " + _split_note(main)
    )
    section_title = f"{name}" + ("" if size(main[0]) is None else f" — {size(main[0])} training images per class")
    doc.add(f"<h2>{html.escape(section_title)}</h2>" + _html_table(_COLUMNS, rows, marks)
            + f'<p class="legend">{html.escape(legend)}</p>',
            [f"## {section_title}", "", _md_table(_COLUMNS, rows), "", f"_{legend}_", ""])
    _add_comparisons(doc, name, main, decision, numbers)
    _add_plots(doc, out, name, group, main, decision, numbers, suffix)


def _add_comparisons(doc: _Document, name: str, main: Sequence[dict], decision, numbers: dict[int, int]) -> None:
    rec = decision.recommended
    compared = _sections.comparison_record(main, rec)
    doc.comparisons[name] = {
        "rule": RULE, "best": label(decision.best), "recommended": label(rec),
        "indistinguishable_from_best": [label(e) for e in decision.tied],
        "vs_best": [{"row": label(e), **(decision.comparison(e) or {"paired": False})} for e in main
                    if e is not decision.best],
        "vs_recommended": [{"row": label(c["entry"]), **(c["result"] or {"paired": False})} for c in compared],
    }
    if not compared:
        return
    rows = _sections.comparison_rows(compared, numbers)
    note = (f"Each row against the recommended one (✓ {label(rec)}) on the test images both were scored on: the "
            "accuracy difference with its 95% paired-bootstrap CI (10,000 resamples of the shared items), McNemar's "
            "exact p on the items exactly one of the two got right, and how many test images McNemar's test would "
            "need to separate a gap of this size at this disagreement rate (5% level, 80% power). 'cannot tell apart': "
            "the CI includes 0.")
    heading = "Paired comparisons with the recommended choice"
    doc.add(f"<h3>{heading}</h3>" + _html_table(_sections.COMPARISON_COLUMNS, rows) + f'<p class="legend">{html.escape(note)}</p>',
            [f"### {heading}", "", _md_table(_sections.COMPARISON_COLUMNS, rows), "", f"_{note}_", ""])


def _add_plots(doc: _Document, out: Path, name: str, group, main, decision, numbers, suffix: str) -> None:
    best, rec = decision.best, decision.recommended
    which = ("Recommended and most accurate" if rec is best else "Recommended")
    model_note = ("" if rec is best else f" This is the recommended row; the most accurate row, {label(best)} "
                  f"({pct(best['accuracy'])}), is indistinguishable from it on the paired test.")
    pareto_title, model_title = f"{name}: accuracy vs total compute", f"{which}: {label(rec)}"
    pareto = out / f"pareto{suffix}.png"
    # What each plot is drawn from: a PNG drawn from the same inputs is reused (see _plots.drawn).
    pareto_inputs = {"entries": main, "rec": next((i for i, e in enumerate(main) if e is rec), rec), "title": pareto_title,
                     "numbers": [numbers.get(id(e)) for e in main]}
    plots = [
        (_plots.drawn(pareto, "pareto", pareto_inputs,
                      lambda: _plots.plot_pareto(main, rec, numbers, pareto, pareto_title)),
         "Accuracy vs total compute time",
         "Each point is one row of the table, numbered as there (circles: frozen features + head; squares: "
         "fine-tunes; crosses: from scratch), coloured by backbone, with its 95% CI. Cost: the row's own fit time plus "
         "the extraction of the store(s) it reads, each store once; heads on one store share that extraction (dotted "
         "line: the floor under all of them), it is not added per head to the pipeline's bill. The dashed step line is "
         "the Pareto front: the choices no cheaper choice beats. The ringed point is the recommendation. "
         + _cost_note(main)),
        (_plots.drawn(out / f"best{suffix}.png", "model", {"entry": rec, "title": model_title},
                      lambda: _plots.plot_model(rec, out / f"best{suffix}.png", model_title)), model_title,
         "Confusion matrix on the test split (cell = count, colour = share of the true class) and per-class F1."
         + model_note),
    ]
    curve = _curve_table(group)
    if curve is not None:
        plots.append((
            _plots.drawn(out / f"learning_curve{suffix}.png", "learning_curve", {"entries": group, "name": name},
                         lambda: _plots.plot_learning_curve(group, out / f"learning_curve{suffix}.png",
                                                            f"{name}: learning curve")),
            "Learning curve",
            "Test accuracy vs training images per class for the best head of each backbone, each fine-tune mode "
            "and training from scratch (dashed), all on the same test split.",
        ))
    groups_path, groups_title = out / f"feature_sets{suffix}.png", f"{name}: accuracy per feature set"
    grouped = _plots.drawn(groups_path, "feature_sets", {"entries": main, "title": groups_title},
                           lambda: _parts.plot_groups(main, groups_path, groups_title, _plots.figure, _plots.save_png))
    if grouped is not None:
        plots.append((grouped, "Accuracy per feature set", "The best head's test accuracy (95% CI) on each feature "
                      "set (or backbone; grey: the raw-pixel control), all on the same test split."))
    for path, heading, caption in plots:
        doc.add(f"<h3>{html.escape(heading)}</h3><p class=\"legend\">{html.escape(caption)}</p>"
                + f'<img src="{_data_uri(path)}" alt="{html.escape(heading)}">',
                [f"### {heading}", "", caption, "", f"![{heading}]({path.name})", ""])
    _add_gallery(doc, main, rec)
    if curve is not None:
        header, curve_rows = curve
        doc.add("<h3>Accuracy by training images per class</h3>" + _html_table(header, curve_rows),
                ["### Accuracy by training images per class", "", _md_table(header, curve_rows), ""])


def _add_gallery(doc: _Document, main: Sequence[dict], rec: dict) -> None:
    """The recommended row's worst mistakes; another row's only when it recorded none, and then said so."""
    shown = rec if rec.get("mistakes") else min((e for e in main if e.get("mistakes")), key=rank_key, default=None)
    if shown is None:
        return
    name = label(shown) + ("" if shown is rec else " (not the recommended row, which recorded no mistakes)")
    part = _parts.gallery(shown, name)
    if part is not None:
        doc.add(*part)


def _cost_note(entries: Sequence[dict]) -> str:
    cost = _parts.pipeline_cost(entries)
    return (f"This run's compute: {secs(cost['extraction'])} extraction ({cost['stores']} store(s), each once) + "
            f"{secs(cost['fits'])} head fits + {secs(cost['finetunes'])} fine-tunes = {secs(cost['total'])}.")


def _add_search(doc: _Document, candidates: Sequence[dict]) -> None:
    header, rows = _sections.search_table(candidates)
    classes = ["rec" if r[-1].startswith("chosen") else "" for r in rows]
    note = ("Every configuration the search tried, in order: the proxy's score on val (never test), the training "
            "subsample it saw, its cost, and whether it was pruned (and why) or chosen.")
    doc.add("<h2>Search</h2>" + _html_table(header, rows, classes) + f'<p class="legend">{html.escape(note)}</p>',
            ["## Search", "", _md_table(header, rows), "", f"_{note}_", ""])


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
