"""The report decides as it says: paired comparisons on shared test items, the stated rule, the
"cannot tell" wording, the hand-over commands, inference cost, the search section, label placement."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from featx.core.metrics import classification_metrics
from featx.core.predictions import load_correctness, prediction_record
from featx.pipeline._report import recommend, summarise, write_report
from featx.pipeline._report_decide import RULE, decide, handover, inference_ms
from featx.pipeline._report_sections import search_table

CLASSES = ["a", "b", "c"]


def _row(head, right, *, n=30, ms=0.1, ips=100.0, fit=1.0, kind="head", mode=None, **extra):
    """A results row scored on ``n`` shared test items, getting exactly the items in ``right`` right."""
    y = np.arange(n) % 3
    pred = (y + 1) % 3
    pred[list(right)] = y[list(right)]
    entry = {"kind": kind, "head": head if kind == "head" else f"finetune:{mode}", "mode": mode, "backbone": "net",
             "per_class": None, "n_train": 90, "splits_digest": "d", "fit_seconds": fit, "predict_seconds_per_1k": ms,
             "extract_seconds": 5.0, "extract_images_per_second": ips, "params": {}, "dataset": "toy",
             **classification_metrics(y, pred, CLASSES, n_boot=500),
             "test_predictions": prediction_record([f"img{i}" for i in range(n)], y, pred), **extra}
    if kind == "finetune":
        entry.update(train_seconds=fit, epochs_run=3, history=[{"val_macro_f1": f} for f in (0.5, 0.8, 0.7)],
                     params={"epochs": 3, "unfreeze": 1})
    return entry


def test_two_near_equal_rows_on_30_test_images_are_called_indistinguishable():
    accurate = _row("svm", range(24), ips=20.0)   # 24/30, 50 ms per image
    cheap = _row("logreg", range(1, 24), ips=100.0)  # 23/30, 10 ms per image
    text = summarise("toy", [accurate, cheap])
    assert "These 2 choices are indistinguishable on 30 test images" in text
    assert "the cheapest at inference is net + logreg" in text
    assert "recommended net + logreg" in text
    assert re.search(r"would take about [\d,]+ test images", text)
    assert "loses" not in text and "gains" not in text


def test_no_loses_n_points_when_the_paired_ci_includes_zero_and_a_real_loss_is_still_named():
    head = _row("logreg", range(24))
    tune = _row("partial", list(range(2, 24)) + [26], kind="finetune", mode="partial", fit=60.0, ms=30.0)
    text = summarise("toy", [head, tune])
    assert "loses" not in text and "gains" not in text
    assert "cannot be told apart on 30 shared test images" in text
    # 300 items where the fine-tune is wrong on 15 more items and right on no other: the two
    # unpaired CIs overlap, yet the paired test separates them, and then the summary says so.
    head = _row("logreg", range(270), n=300)
    tune = _row("partial", range(255), n=300, kind="finetune", mode="partial", fit=60.0, ms=30.0)
    assert head["accuracy_ci"][0] <= tune["accuracy_ci"][1]
    assert "loses 5.0 points over frozen features" in summarise("toy", [head, tune])


def test_rule_is_applied_as_stated_cheapest_at_inference_then_training_cost():
    best = _row("svm", range(27), ips=10.0, fit=1.0)                     # 90%, 100.1 ms
    tied_slow_train = _row("mlp", range(1, 27), ips=200.0, fit=90.0)     # 86.7%, 5.1 ms
    tied_fast_train = _row("logreg", range(2, 27), ips=200.0, fit=3.0)   # 83.3%, 5.1 ms
    separated = _row("tree", range(12), ips=1000.0, fit=0.1)             # 40%: cheaper, but clearly worse
    decision = decide([best, tied_slow_train, tied_fast_train, separated])
    assert decision.best is best
    assert separated not in decision.tied and decision.comparison(separated)["separated"]
    assert decision.recommended is tied_fast_train  # equal inference cost as shown: training cost decides
    assert recommend([best, tied_slow_train, tied_fast_train, separated]) == (best, tied_fast_train)
    assert "cheapest at inference" in RULE and "ties by training cost" in RULE and "paired" in RULE


def test_rows_without_predictions_fall_back_to_the_unpaired_check_and_say_so():
    best = _row("svm", range(27), ips=10.0)
    cheap = {**_row("logreg", range(1, 26), ips=200.0), "test_predictions": None}
    decision = decide([best, cheap])
    assert decision.recommended is cheap and decision.unpaired == [cheap]
    assert "without per-item predictions compared by their CIs" in summarise("toy", [best, cheap])


def test_inference_cost_is_backbone_plus_head_and_fine_tunes_use_their_forward():
    assert inference_ms(_row("logreg", range(3), ips=50.0, ms=0.5)) == pytest.approx(20.5)
    assert inference_ms(_row("full", range(3), kind="finetune", mode="full", ms=42.0)) == pytest.approx(42.0)
    both = _row("logreg", range(3), ms=1.0, stores=[{"path": "a.h5", "extract_images_per_second": 100.0},
                                                     {"path": "b.h5", "extract_images_per_second": 50.0}])
    assert inference_ms(both) == pytest.approx(10.0 + 20.0 + 1.0)
    assert inference_ms(_row("logreg", range(3), ips=None)) is None


def test_report_hands_over_the_recommended_model_with_its_commands(tmp_path):
    model = tmp_path / "runs" / "heads" / "logreg"
    model.mkdir(parents=True)
    (model / "manifest.json").write_text(json.dumps({"head": "logreg"}))
    rec = _row("logreg", range(24), ips=100.0, model=str(model))
    other = _row("xgboost", range(25), ips=10.0, model="heads/xgboost")
    write_report(tmp_path / "out", [rec, other])
    for name in ("report.html", "report.md"):
        text = (tmp_path / "out" / name).read_text()
        assert f"featx predict --model {model} IMAGES" in text, name
        assert f"featx export-model {model} --format onnx --out model.onnx" in text, name
        assert "Recommendation rule: among the rows" in text
    tree = handover(other, tmp_path / "out")
    assert tree["model"] == str(tmp_path / "out" / "heads" / "xgboost") and tree["export"] is None
    assert "xgboost heads do not export to ONNX" in tree["note"]
    tuned = handover(_row("full", range(3), kind="finetune", mode="full", model="ft/full"), tmp_path)
    assert tuned["export"] == f"featx export-model {tmp_path / 'ft' / 'full'} --format onnx --out model.onnx"
    assert handover(_row("knn", range(3)), tmp_path)["model"] is None
    comparisons = json.loads((tmp_path / "out" / "comparisons.json").read_text())["toy"]
    assert comparisons["recommended"] == "net + logreg" and comparisons["best"] == "net + xgboost"
    assert comparisons["vs_recommended"][0]["n"] == 30 and "p_exact" in comparisons["vs_recommended"][0]


def test_handover_offers_export_for_exactly_the_heads_export_model_writes(tmp_path):
    from featx.heads import EXPORTABLE_HEADS, list_heads

    assert set(EXPORTABLE_HEADS) <= set(list_heads())
    for kind in list_heads():
        (tmp_path / "heads" / kind).mkdir(parents=True)
        offer = handover(_row(kind, range(3), model=f"heads/{kind}"), tmp_path)
        assert (offer["export"] is not None) == (kind in EXPORTABLE_HEADS), kind


def test_train_heads_rows_carry_their_test_predictions_and_saved_head_folder(tmp_path):
    from featx.heads import train_heads
    from tests._head_stores import write_store

    store = write_store(tmp_path / "f.h5", n=150, dim=8)
    entries = train_heads(store, ["logreg", "knn"], out=tmp_path / "heads", n_boot=50)
    for entry in entries:
        ids, correct = load_correctness(entry)
        assert len(ids) == entry["n_test"] and correct.mean() == pytest.approx(entry["accuracy"])
        assert set(ids) <= set(store.ids.tolist())
        assert handover(entry, tmp_path)["model"] == str((tmp_path / "heads" / entry["head"]).resolve())
        # A `model` path this report cannot see (relative to another results folder): the saved head is still found.
        moved = {**entry, "model": entry["head"]}
        assert handover(moved, tmp_path / "elsewhere")["model"] == str((tmp_path / "heads" / entry["head"]).resolve())
    saved = json.loads((tmp_path / "heads" / "results.json").read_text())
    assert all(load_correctness(e) is not None for e in saved)
    # The run folder moved: the rows' predictions are found again inside their model folders.
    (tmp_path / "heads").rename(tmp_path / "moved")
    rows = [{**e, "model": e["head"]} for e in saved]
    assert all(load_correctness(e) is None for e in rows)
    write_report(tmp_path / "moved", rows)
    rebuilt = json.loads((tmp_path / "moved" / "comparisons.json").read_text())["results"]
    assert rebuilt["vs_best"][0]["n"] == entries[0]["n_test"]
    inline = train_heads(store, ["logreg"], n_boot=50)[0]
    assert len(inline["test_predictions"]["ids"]) == inline["n_test"]


def test_search_candidates_render_as_a_table(tmp_path):
    candidates = [
        {"config": {"backbone": "efficientnet_lite0", "crop_pct": 0.875}, "proxy_score": 0.71, "subsample_size": 600,
         "cost_seconds": 12.5, "status": "pruned", "round": 1, "reason": "below the top half"},
        {"config": {"backbone": "efficientnet_lite0", "crop_pct": 1.0}, "proxy_score": 0.7634, "subsample_size": 1200,
         "cost_seconds": 30.0, "chosen": True, "round": 2},
    ]
    header, rows = search_table(candidates)
    assert header[1] == "Configuration" and len(rows) == 2
    assert rows[0][1] == "backbone=efficientnet_lite0, crop_pct=0.875" and rows[0][-1] == "pruned: below the top half"
    assert rows[1][3] == "1,200" and rows[1][4] == "0.7634" and rows[1][-1] == "chosen"
    write_report(tmp_path, [_row("logreg", range(20))], search=candidates)
    md = (tmp_path / "report.md").read_text()
    assert "## Search" in md and "| 2 | backbone=efficientnet_lite0, crop_pct=1.0 | 2 | 1,200 | 0.7634 | 30.0 s | chosen |" in md


def test_pareto_labels_never_overlap_even_for_clustered_points():
    from featx.pipeline._report_plots import figure, place_labels

    fig = figure(7.5, 4.6)
    ax = fig.add_subplot()
    rng = np.random.default_rng(0)
    xs = list(10 ** rng.uniform(0.9, 1.1, 14)) + [100.0] * 4  # a tight cluster, and four identical points
    ys = list(rng.uniform(90, 91, 14)) + [80.0] * 4
    ax.scatter(xs, ys)
    ax.set_xscale("log")
    annotations = place_labels(ax, xs, ys, [str(i) for i in range(1, len(xs) + 1)])
    fig.canvas.draw()
    boxes = [a.get_window_extent() for a in annotations]
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            assert not boxes[i].overlaps(boxes[j]), (i + 1, j + 1)
