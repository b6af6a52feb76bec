"""Report sections beyond the main table: paired comparisons, the hand-over of the chosen model,
and the search over configurations.

The ``search`` schema (one dict per candidate, from ``featx search`` or a pipeline's
``search:``): ``config`` (mapping of what was varied: backbone, img_size, crop_pct, ...),
``proxy_score`` (the proxy's val score), ``subsample_size`` (training items the proxy
saw), ``cost_seconds``, and the outcome: ``status`` ``"pruned"``/``"chosen"`` (or the
flags ``pruned``/``chosen``), with an optional ``round`` and ``reason``.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path

from ..core.paired import items_needed
from . import _report_rows as _rows
from ._report_decide import Decision, compare_rows, fmt_ms, handover, inference_ms

__all__ = ["comparison_rows", "COMPARISON_COLUMNS", "handover_parts", "search_table", "SEARCH_COLUMNS",
           "comparison_record", "MAX_COMPARED"]

MAX_COMPARED = 8
COMPARISON_COLUMNS = ("#", "Row", "Accuracy", "Difference vs ✓ (points, 95% paired CI)", "McNemar p",
                      "Only this right / only ✓ right", "Verdict", "Test images to separate this gap")
SEARCH_COLUMNS = ("#", "Configuration", "Round", "Subsample", "Proxy score (val)", "Cost", "Outcome")


def _verdict(result: dict) -> str:
    if not result["separated"]:
        return "cannot tell apart"
    return "more accurate" if result["diff"] > 0 else "less accurate"


def _needed(result: dict) -> str:
    if result["diff"] == 0:
        return "— (no gap)"
    n = items_needed(result["diff"], max(result["disagreement"], abs(result["diff"])))
    return f"≈{n:,}"


def comparison_record(entries: Sequence[dict], rec: dict) -> list[dict]:
    """The most accurate rows other than ``rec`` (at most :data:`MAX_COMPARED`), each with its paired
    comparison to ``rec`` (``diff`` = row - rec), or ``None`` where a row has no predictions."""
    others = sorted((e for e in entries if e is not rec), key=_rows.rank_key)[:MAX_COMPARED]
    return [{"entry": e, "result": compare_rows(e, rec)} for e in others]


def comparison_rows(compared: Sequence[dict], numbers: dict[int, int]) -> list[list[str]]:
    rows = []
    for item in compared:
        entry, result = item["entry"], item["result"]
        base = [str(numbers.get(id(entry), "")), _rows.label(entry), _rows.pct(entry.get("accuracy"))]
        if result is None:
            rows.append(base + ["—", "—", "—", "no per-item test predictions recorded: not compared", "—"])
            continue
        rows.append(base + [f"{_rows.points(result['diff'])} {_rows.dci(result['ci'])} on {result['n']} shared",
                            f"{result['p_exact']:.3g}", f"{result['only_a']} / {result['only_b']}",
                            _verdict(result), _needed(result)])
    return rows


def handover_parts(entry: dict, out: Path, decision: Decision) -> tuple[str, list[str]]:
    """(HTML, Markdown lines): the recommended model's path, the commands to use it, and what it is."""
    info = handover(entry, out)
    which = ("It is also the most accurate row." if entry is decision.best else
             f"The most accurate row is {_rows.label(decision.best)} ({_rows.pct(decision.best['accuracy'])}); "
             "the test images cannot tell the two apart, and this one is cheaper at inference.")
    lines = [f"Recommended: {_rows.label(entry)} — {_rows.pct(entry.get('accuracy'))} "
             f"{_rows.ci(entry.get('accuracy_ci'))}, {fmt_ms(inference_ms(entry))} ms per image at inference, "
             f"{_rows.secs(_rows.total_seconds(entry))} to train. {which}"]
    commands = []
    if info["model"]:
        lines.append(f"Model: {info['model']}")
        commands = [info["predict"]] + ([info["export"]] if info["export"] else [])
    if info["note"]:
        lines.append(info["note"][0].upper() + info["note"][1:] + ".")
    body = "".join(f"<p>{html.escape(line)}</p>" for line in lines)
    if commands:
        body += '<pre class="cmd">' + html.escape("\n".join(commands)) + "</pre>"
        body += f'<p class="legend">In Python: <code>{html.escape(info["python"])}</code></p>'
    md = ["### Hand-over: the recommended model", ""] + [line + "  " for line in lines] + [""]
    if commands:
        md += ["```", *commands, "```", "", f"In Python: `{info['python']}`", ""]
    return f'<h3>Hand-over: the recommended model</h3><div class="handover">{body}</div>', md


def _config_text(config) -> str:
    if isinstance(config, dict):
        return ", ".join(f"{k}={json.dumps(v) if isinstance(v, (list, dict)) else v}" for k, v in config.items())
    return str(config)


def _outcome(candidate: dict) -> str:
    status = candidate.get("status")
    if status is None:
        status = "chosen" if candidate.get("chosen") else "pruned" if candidate.get("pruned") else "?"
    reason = candidate.get("reason") or (candidate.get("pruned") if isinstance(candidate.get("pruned"), str) else "")
    return f"{status}: {reason}" if reason else str(status)


def search_table(candidates: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    """The search section's table, one row per candidate, in the order the search recorded them."""
    rows = []
    for i, c in enumerate(candidates, start=1):
        score = c.get("proxy_score")
        cost = c.get("cost_seconds")
        rows.append([str(i), _config_text(c.get("config")), "—" if c.get("round") is None else str(c["round"]),
                     "—" if c.get("subsample_size") is None else f"{int(c['subsample_size']):,}",
                     "—" if score is None else f"{float(score):.4f}",
                     "—" if cost is None else _rows.secs(float(cost)), _outcome(c)])
    return list(SEARCH_COLUMNS), rows
