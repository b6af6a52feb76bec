"""The report's plots: accuracy vs cost (numbered points, labels that never overlap), the chosen
model's confusion matrix and per-class F1, the learning curve.

Every plot is a bare Matplotlib ``Figure`` on the Agg canvas (no pyplot state, no display)
rendered to memory and written atomically, so a full disk leaves the previous PNG.

A report rebuilt from unchanged results (a warm ``featx run``) draws nothing:
:func:`drawn` keys each PNG by what it is drawn from (the plot, its inputs, the drawing
code and Matplotlib's version) and writes that key into the PNG's own text chunk, so a PNG is
reused only when it decodes whole (every chunk's CRC) and carries the key of this draw;
anything else, a missing, damaged or replaced file included, is drawn again. Reuse then
costs a PNG read instead of Matplotlib's import and the rendering.
"""

from __future__ import annotations

import contextvars
import hashlib
import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path

from ..core.io import write_atomic
from . import _report_parts as _parts
from . import _report_rows as _rows

__all__ = ["drawn", "figure", "save_png", "plot_pareto", "plot_model", "plot_learning_curve", "place_labels", "pareto_front"]

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")


_KEY_FIELD = "featx-plot-key"
_DRAWING_KEY: contextvars.ContextVar[str | None] = contextvars.ContextVar("featx_plot_key", default=None)


def _code_digest() -> str:
    """The drawing code itself (this module and the row helpers it draws with): an edit redraws."""
    digest = hashlib.sha256()
    for module in (__file__, _parts.__file__, _rows.__file__):
        digest.update(Path(module).read_bytes())
    return digest.hexdigest()


def _plot_key(name: str, inputs) -> str:
    import importlib.metadata

    from ..core.io import json_default

    try:
        mpl = importlib.metadata.version("matplotlib")
    except importlib.metadata.PackageNotFoundError:
        mpl = "missing"
    payload = json.dumps({"plot": name, "inputs": inputs, "code": _code_digest(), "matplotlib": mpl}, sort_keys=True,
                         default=json_default)
    return hashlib.sha256(payload.encode()).hexdigest()


def _recorded_key(path: Path) -> str | None:
    """The key in the PNG at ``path``, or None when it is absent, unreadable or does not decode whole."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()  # decodes every chunk: a truncated or damaged PNG raises here
            return image.text.get(_KEY_FIELD) if image.format == "PNG" else None
    except (OSError, SyntaxError, ValueError):
        return None


def drawn(path: Path, name: str, inputs, draw: Callable[[], Path | None]) -> Path | None:
    """``draw()`` unless the PNG at ``path`` already holds the drawing of ``name`` from ``inputs``.

    ``inputs`` must hold everything the drawing depends on (JSON-serialisable); ``draw``
    writes ``path`` through :func:`save_png` (or returns None: nothing to draw).
    """
    key = _plot_key(name, inputs)
    if path.is_file() and _recorded_key(path) == key:
        return path
    token = _DRAWING_KEY.set(key)
    try:
        return draw()
    finally:
        _DRAWING_KEY.reset(token)


def save_png(fig, path: Path) -> None:
    buffer = io.BytesIO()
    key = _DRAWING_KEY.get()
    fig.savefig(buffer, format="png", metadata={_KEY_FIELD: key} if key else None)
    write_atomic(path, buffer.getvalue())


def figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _log_axis(axis, decades: float) -> None:
    import math

    from matplotlib.ticker import FuncFormatter, LogLocator

    # Plain numbers; 1-2-3-5 ticks when runs span about a decade, fewer when they span more.
    subs = (1.0, 2.0, 3.0, 5.0) if decades <= 1.5 else (1.0, 3.0) if decades <= 3 else (1.0,)
    if not math.isfinite(decades):
        subs = (1.0,)
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(FuncFormatter(lambda value, _: ""))


def _colors(entries: Sequence[dict]) -> dict[str, str]:
    names = sorted({_parts.group_of(e) for e in entries} | {e.get("backbone", "?") for e in entries})
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def pareto_front(entries: Sequence[dict]) -> list[dict]:
    """Entries that no cheaper entry beats on accuracy, by increasing cost."""
    front, best_so_far = [], -1.0
    timed = (e for e in entries if _rows.total_seconds(e) is not None)
    for entry in sorted(timed, key=lambda e: (_rows.total_seconds(e), -e["accuracy"])):
        if entry["accuracy"] > best_so_far:
            front.append(entry)
            best_so_far = entry["accuracy"]
    return front


def _overlaps(box, others, pad: float = 1.0) -> bool:
    return any(box.x0 - pad < o.x1 and o.x0 < box.x1 + pad and box.y0 - pad < o.y1 and o.y0 < box.y1 + pad
               for o in others)


_DIRECTIONS = ((1, 0.6), (1, -0.6), (-1, 0.6), (-1, -0.6), (0, 1), (0, -1), (1, 0), (-1, 0))
_RADII = (6, 11, 17, 24, 32, 42, 54)


def place_labels(ax, xs: Sequence[float], ys: Sequence[float], texts: Sequence[str], *, fontsize: float = 7.5):
    """Annotate each point with its text at the first nearby offset whose box overlaps no label placed
    before it and no other point's marker (greedy, in display pixels); returns the annotations."""
    fig = ax.figure
    fig.canvas.draw()  # fixes the layout so display positions are final up to small shifts
    renderer = fig.canvas.get_renderer()
    from matplotlib.transforms import Bbox

    marks = []
    for x, y in zip(xs, ys):
        px, py = ax.transData.transform((x, y))
        marks.append(Bbox.from_extents(px - 5, py - 5, px + 5, py + 5))
    placed, annotations = [], []
    for i, (x, y, text) in enumerate(zip(xs, ys, texts)):
        others = [m for j, m in enumerate(marks) if j != i]
        ann = ax.annotate(text, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=fontsize, color="#222",
                          ha="center", va="center", annotation_clip=False)
        chosen = None
        for radius in _RADII:
            for dx, dy in _DIRECTIONS:
                ann.set_position((dx * radius + (4 if dx > 0 else -4 if dx < 0 else 0), dy * radius))
                box = ann.get_window_extent(renderer)
                if not _overlaps(box, placed + others):
                    chosen = box
                    break
            if chosen is not None:
                break
        if chosen is None:  # crowded beyond every ring: stack above the highest placed label
            top = max((b.y1 for b in placed), default=ax.transData.transform((x, y))[1])
            ann.set_position((0, (top - ax.transData.transform((x, y))[1]) * 72 / fig.dpi + 8))
            chosen = ann.get_window_extent(renderer)
        if abs(ann.xyann[0]) > 12 or abs(ann.xyann[1]) > 12:
            ax.annotate("", (x, y), xytext=ann.xyann, textcoords="offset points",
                        arrowprops={"arrowstyle": "-", "color": "#999", "lw": 0.6, "shrinkA": 4, "shrinkB": 3})
        placed.append(chosen)
        annotations.append(ann)
    return annotations


def plot_pareto(entries: Sequence[dict], rec: dict, numbers: dict[int, int], path: Path, title: str) -> Path:
    """Accuracy vs total compute; each point carries its row number in the table (``numbers``: id -> #)."""
    fig = figure(7.5, 5.4)
    ax = fig.add_subplot()
    colors = _colors(entries)
    markers = {"head": "o", "finetune": "s", "scratch": "X"}
    seen, xs, ys, texts = set(), [], [], []
    for entry in entries:
        cost = _rows.total_seconds(entry)
        if cost is None:
            continue
        kind = "scratch" if _rows.is_scratch(entry) else entry.get("kind", "head")
        ci = entry.get("accuracy_ci") or [entry["accuracy"]] * 2
        group = _parts.group_of(entry) if kind == "head" else entry.get("backbone", "?")
        label = f"{group} ({'fine-tune' if kind == 'finetune' else kind})"
        ax.errorbar(cost, 100 * entry["accuracy"],
                    yerr=[[100 * (entry["accuracy"] - ci[0])], [100 * (ci[1] - entry["accuracy"])]],
                    fmt=markers[kind], color=colors.get(group, "#555"), ms=6, capsize=3, alpha=0.85,
                    label=None if label in seen else label)
        seen.add(label)
        xs.append(cost)
        ys.append(100 * entry["accuracy"])
        texts.append(str(numbers.get(id(entry), "?")))
    for i, (store, seconds) in enumerate(sorted(_parts.store_floors(entries).items())):
        ax.axvline(seconds, color=colors.get(store, "#999"), ls=":", lw=1,
                   label="extraction of each store (shared floor)" if i == 0 else None)
    front = pareto_front(entries)
    if len(front) > 1:
        ax.step([_rows.total_seconds(e) for e in front], [100 * e["accuracy"] for e in front], where="post",
                color="#555", ls="--", lw=1, label="Pareto front")
    if _rows.total_seconds(rec) is not None:
        ax.scatter([_rows.total_seconds(rec)], [100 * rec["accuracy"]], s=240, facecolors="none", edgecolors="#e6a000",
                   linewidths=2, label="recommended", zorder=5)
    _finish_accuracy_axes(ax, title, "compute to result (s, log scale): extraction + fit, or fine-tune training; "
                          "numbers: row # in the table")
    place_labels(ax, xs, ys, texts)
    save_png(fig, path)
    return path


def plot_model(entry: dict, path: Path, heading: str) -> Path:
    """Confusion matrix (counts, colour = row rate) and per-class F1 of one row."""
    names = list(entry.get("class_names") or [])
    conf = entry.get("confusion_matrix") or []
    per_class = entry.get("per_class_metrics") or {}
    k = len(names)
    side = min(9.0, 2.5 + 0.38 * k)
    fig = figure(2 * side + 0.5, side)
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
    fig.suptitle(f"{heading} ({_rows.pct(entry.get('accuracy'))} accuracy)", fontsize=10)
    save_png(fig, path)
    return path


def _curve_series(entries: Sequence[dict]) -> dict[str, list[dict]]:
    """Lines of the learning curve: the best head per backbone, and every fine-tune mode per backbone."""
    series: dict[str, list[dict]] = {}
    main = _rows.main_setting(entries)
    for backbone in sorted({e.get("backbone") for e in entries}):
        heads = [e for e in main if e.get("backbone") == backbone and e.get("kind") != "finetune"]
        if heads:
            head = min(heads, key=_rows.rank_key)["head"]
            series[f"{backbone} + {head} (best head)"] = [
                e for e in entries if e.get("backbone") == backbone and e.get("head") == head and e.get("kind") != "finetune"
            ]
        for mode in sorted({e.get("mode") for e in entries if e.get("kind") == "finetune" and e.get("backbone") == backbone}):
            series[f"{backbone} + finetune:{mode}"] = [
                e for e in entries if e.get("kind") == "finetune" and e.get("backbone") == backbone and e.get("mode") == mode
            ]
    return {name: sorted(pts, key=_rows.per_class_x) for name, pts in series.items()}


def plot_learning_curve(entries: Sequence[dict], path: Path, title: str) -> Path:
    fig = figure(7.5, 5.4)
    ax = fig.add_subplot()
    for i, (name, pts) in enumerate(_curve_series(entries).items()):
        xs = [_rows.per_class_x(e) for e in pts]
        ys = [100 * e["accuracy"] for e in pts]
        lo = [100 * (e["accuracy"] - (e.get("accuracy_ci") or [e["accuracy"]] * 2)[0]) for e in pts]
        hi = [100 * ((e.get("accuracy_ci") or [e["accuracy"]] * 2)[1] - e["accuracy"]) for e in pts]
        style = "--" if "scratch" in name else "-"
        ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o" + style, capsize=3, ms=5, label=name, color=PALETTE[i % len(PALETTE)])
    _finish_accuracy_axes(ax, title, "training images per class (log scale; rightmost point = full training set when run)")
    save_png(fig, path)
    return path


def _finish_accuracy_axes(ax, title: str, xlabel: str) -> None:
    """Shared finish of the accuracy plots: log x axis with plain ticks, labels, grid, legend outside the points."""
    import math

    ax.set_xscale("log")
    lo, hi = ax.get_xlim()
    _log_axis(ax.xaxis, math.log10(hi / lo) if lo > 0 and hi > lo else math.inf)
    ax.set_xlabel(xlabel, fontsize=8.5)
    ax.set_ylabel("test accuracy (%), 95% CI")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    # Below the axes, never on the points or their numbers.
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
