"""The report: recommendation rule, files, self-containment, and `featx report` rebuilding it."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

from featx.cli import cli
from featx.core.metrics import classification_metrics
from featx.core.predictions import prediction_record
from featx.pipeline._report import recommend, summarise, total_seconds, write_report

CLASSES = ["a", "b", "c"]


def _entry(head, accuracy, seconds, *, kind="head", per_class=None, backbone="net", n_test=300, seed=0):
    """A results entry whose metrics come from real predictions with the given accuracy."""
    rng = np.random.default_rng(seed)
    y = np.arange(n_test) % len(CLASSES)
    n_wrong = int(round((1 - accuracy) * n_test))
    pred = y.copy()
    wrong = rng.choice(n_test, n_wrong, replace=False)
    pred[wrong] = (y[wrong] + 1) % len(CLASSES)
    entry = {
        "kind": kind, "head": head if kind == "head" else f"finetune:{head}", "mode": None if kind == "head" else head,
        "backbone": backbone, "weights": {"kind": "random"}, "store_id": "s1" if kind == "head" else None,
        "dim": 32 if kind == "head" else None, "per_class": per_class, "seeds": [0],
        "n_train": (per_class or 50) * len(CLASSES), "n_val": 30, "splits_digest": "abc", "seed_summary": {},
        "fit_seconds": seconds, "predict_seconds_per_1k": 0.1, "params": {}, "versions": {"featx": "test"},
        "created": "2024-01-01T00:00:00", "dataset": "toy",
        **classification_metrics(y, pred, CLASSES, n_boot=200),
        "test_predictions": prediction_record([f"item{i}" for i in range(n_test)], y, pred),
    }
    if kind == "finetune":
        entry.update(train_seconds=seconds, epochs_run=1, images_per_second=10.0, predict_seconds_per_1k=20.0)
    else:
        entry.update(extract_seconds=5.0, extract_images_per_second=100.0, store_bytes=2_000_000)
    return entry


def test_total_seconds_counts_extraction_for_heads_only():
    assert total_seconds(_entry("logreg", 0.9, 2.0)) == pytest.approx(7.0)
    assert total_seconds(_entry("linear", 0.9, 40.0, kind="finetune")) == pytest.approx(40.0)


def test_recommendation_is_cheapest_among_rows_the_paired_test_cannot_separate():
    best = _entry("svm", 0.90, 30.0)
    close_cheap = _entry("logreg", 0.88, 1.0, seed=1)
    far_cheaper = _entry("tree", 0.60, 0.1, seed=2)
    got_best, got_rec = recommend([best, close_cheap, far_cheaper])
    assert got_best is best
    assert got_rec is close_cheap
    text = summarise("toy", [best, close_cheap, far_cheaper])
    assert "recommended net + logreg" in text and "These 2 choices are indistinguishable on 300 test images" in text


def test_summary_reports_finetune_gain_and_cost():
    head = _entry("logreg", 0.80, 1.0)
    tuned = _entry("full", 0.95, 60.0, kind="finetune", seed=3)
    text = summarise("toy", [head, tuned])
    assert "Fine-tuning the backbone (full fine-tune, every layer trained, 1 epoch) gains 15.0 points" in text
    assert f"{60.0 / 6.0:.1f}x the compute" in text


def test_write_report_files_are_self_contained(tmp_path):
    entries = [_entry("logreg", 0.9, 1.0), _entry("knn", 0.7, 0.2, seed=1), _entry("linear", 0.85, 30.0, kind="finetune")]
    stages = [{"stage": "head svm on net", "status": "failed", "seconds": 0.5, "error": "ValueError: boom"}]
    html_path = write_report(tmp_path, entries, title="toy report", stages=stages)
    for name in ("report.html", "report.md", "results.json", "pareto.png", "best.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert not (tmp_path / "learning_curve.png").exists()  # one training-set size: no curve
    html = html_path.read_text()
    assert "<script" not in html and "http://" not in html and "https://" not in html
    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(uris) == 2 and all(base64.b64decode(u).startswith(b"\x89PNG") for u in uris)
    assert "recommended net + logreg" in html and "boom" in html and "failed" in html
    assert json.loads((tmp_path / "results.json").read_text()) == entries
    md = (tmp_path / "report.md").read_text()
    assert "| net | logreg ★ ✓ | all |" in md and "![" in md


def test_learning_curve_uses_every_size_and_full_set_as_main(tmp_path):
    entries = []
    for i, n in enumerate([5, 20, None]):
        acc = {5: 0.6, 20: 0.75, None: 0.9}[n]
        entries += [_entry("logreg", acc, 1.0, per_class=n, seed=i),
                    _entry("linear", acc - 0.05, 20.0, kind="finetune", per_class=n, seed=i + 10),
                    _entry("scratch", acc - 0.3, 30.0, kind="finetune", per_class=n, seed=i + 20)]
    write_report(tmp_path, entries)
    assert (tmp_path / "learning_curve.png").stat().st_size > 0
    md = (tmp_path / "report.md").read_text()
    assert "Accuracy by training images per class" in md
    assert "(full training set" in md  # the summary uses the full set, not the few-shot sizes
    assert "Training from scratch reaches" in md


def test_cli_report_rebuilds_from_results_without_recomputing(tmp_path):
    write_report(tmp_path, [_entry("logreg", 0.9, 1.0)])
    for name in ("report.html", "report.md", "pareto.png"):
        (tmp_path / name).unlink()
    result = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "report.html").exists() and (tmp_path / "pareto.png").exists()
    assert str(tmp_path / "report.html") in result.output


def test_cli_report_without_results_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert result.exit_code == 2
    assert "no results found" in result.output


def test_finetune_that_skipped_bad_images_stays_in_the_report(tmp_path):
    # A fine-tune's `skipped` lists the bad images it left out; only a head's string reason means "not scored".
    finetune = _entry("partial", 0.9, 50.0, kind="finetune")
    finetune["skipped"] = [{"id": "img/7.png", "reason": "truncated image"}]
    unfit = {"kind": "head", "head": "knn", "backbone": "net", "skipped": "a class has one training item"}
    write_report(tmp_path, [_entry("logreg", 0.8, 1.0), finetune, unfit])
    html = (tmp_path / "report.html").read_text()
    assert "partial fine-tune" in html
    kept = json.loads((tmp_path / "results.json").read_text())
    assert {e["head"] for e in kept} == {"logreg", "finetune:partial", "knn"}
