"""The report says what ran (issue 12): fine-tune names, the fine-tune verdict, the under-trained
flag, the worst-mistakes gallery, accuracy per feature set and the shared extraction cost."""

from __future__ import annotations

import re

from featx.pipeline._report import summarise, total_seconds, write_report
from featx.pipeline._report_parts import describe_finetune, is_under_trained, pipeline_cost
from tests.conftest import write_image_folder
from tests.test_report import _entry


def _tune(mode, accuracy, *, epochs=3, ran=None, f1s=(0.5, 0.6, 0.7), seed=5, **params):
    entry = _entry(mode, accuracy, 60.0, kind="finetune", seed=seed)
    entry.update(epochs_run=ran or len(f1s), history=[{"epoch": i + 1, "val_macro_f1": f} for i, f in enumerate(f1s)])
    entry["params"] = {"epochs": epochs, **params}
    return entry


def test_fine_tunes_are_named_by_mode_stages_and_epochs():
    assert describe_finetune(_tune("linear", 0.5)) == "linear fine-tune, backbone frozen, 3 epochs"
    assert describe_finetune(_tune("partial", 0.5, unfreeze=2)) == "partial fine-tune, last 2 stages unfrozen, 3 epochs"
    stopped = _tune("full", 0.5, epochs=10, f1s=(0.5, 0.7, 0.6, 0.6))
    assert describe_finetune(stopped) == "full fine-tune, every layer trained, 4 of 10 epochs (early stop)"


def test_under_trained_means_val_still_rising_at_the_last_epoch():
    assert is_under_trained(_tune("linear", 0.5, f1s=(0.5, 0.6, 0.7)))
    assert not is_under_trained(_tune("linear", 0.5, f1s=(0.5, 0.7, 0.7)))
    assert not is_under_trained(_tune("linear", 0.5, f1s=(0.5,)))
    assert not is_under_trained(_entry("logreg", 0.9, 1.0))


def test_a_short_linear_fine_tune_never_reads_as_fine_tuning_loses():
    heads = [_entry("logreg", 0.95, 2.0)]
    text = summarise("toy", heads + [_tune("linear", 0.70)])
    assert "Fine-tuning loses" not in text and "loses" not in text
    assert "linear fine-tune, backbone frozen, 3 epochs" in text and "does not say what fine-tuning" in text
    assert "Under-trained: linear fine-tune" in text
    # A finished partial fine-tune does settle it.
    finished = _tune("partial", 0.70, unfreeze=1, f1s=(0.5, 0.8, 0.7), seed=6)
    settled = summarise("toy", heads + [finished])
    assert "Fine-tuning the backbone (partial fine-tune, last 1 stage unfrozen, 3 epochs) loses" in settled
    assert "Under-trained" not in settled


def test_cost_counts_each_store_once_for_the_run_and_per_row(tmp_path):
    a, b = _entry("logreg", 0.9, 2.0), _entry("knn", 0.8, 3.0, seed=1)
    other = _entry("logreg", 0.85, 1.0, backbone="net2", seed=2)
    for entry, store in ((a, "s1.h5"), (b, "s1.h5"), (other, "s2.h5")):
        entry["store_path"] = store
    # Each row: its own fit + its store's extraction (5 s in these entries), never other heads' fits.
    assert total_seconds(a) == 7.0 and total_seconds(b) == 8.0
    cost = pipeline_cost([a, b, other, _tune("linear", 0.5)])
    assert cost["stores"] == 2 and cost["extraction"] == 10.0  # two stores, each extracted once
    assert cost["fits"] == 6.0 and cost["finetunes"] == 60.0 and cost["total"] == 76.0
    # A concatenation of both stores pays each extraction once, and the run still counts each store once.
    both = _entry("logreg", 0.92, 4.0, backbone="net+net2", seed=3)
    both.update(feature_set="net+net2", stores=[{"path": "s1.h5", "extract_seconds": 5.0},
                                                {"path": "s2.h5", "extract_seconds": 5.0}], extract_seconds=10.0)
    assert total_seconds(both) == 14.0
    assert pipeline_cost([a, b, other, both])["extraction"] == 10.0
    write_report(tmp_path, [a, b, other])
    md = (tmp_path / "report.md").read_text()
    assert "10.0 s extraction (2 store(s), each once)" in md


def test_gallery_of_worst_mistakes_and_feature_set_plot(tmp_path):
    images = write_image_folder(tmp_path / "images", n_per_class=3, classes=("ant", "bee"), size=(20, 20))
    best = _entry("logreg", 0.9, 2.0, backbone="lite0")
    best.update(source_path=str(images), mistakes=[
        {"id": "ant/000.png", "true": "ant", "pred": "bee", "confidence": 0.97},
        {"id": "bee/001.png", "true": "bee", "pred": "ant", "confidence": 0.81}])
    ensemble = _entry("logreg", 0.8, 2.0, backbone="lite0", seed=1)
    ensemble["feature_set"] = "lite0+mnv2"
    html = (write_report(tmp_path / "out", [best, ensemble])).read_text()
    assert "Worst mistakes: lite0 + logreg" in html
    gallery = html.split("Worst mistakes")[1]
    assert len(re.findall(r'<img src="data:image/png;base64,', gallery.split("</div>")[0])) == 2
    assert "ant → <b>bee</b> 97%" in gallery
    assert (tmp_path / "out" / "feature_sets.png").stat().st_size > 0 and "Accuracy per feature set" in html
    # Without the source images the gallery is still there, as text.
    best["source_path"] = str(tmp_path / "gone")
    md = (write_report(tmp_path / "out2", [best, ensemble]).with_name("report.md")).read_text()
    assert "| ant/000.png | ant | bee | 97% |" in md and "could not open" in md


def test_fine_tunes_are_measured_against_frozen_features_and_the_control_gets_its_own_verdict():
    frozen = _entry("logreg", 0.90, 2.0, seed=1)
    control = {**_entry("rbf_svm", 0.96, 1.0, seed=2), "backbone": "raw pixels", "control": "raw_pixels"}
    finished = _tune("partial", 0.80, unfreeze=1, f1s=(0.5, 0.8, 0.7), seed=6)
    text = summarise("toy", [frozen, control, finished])
    # 0.80 vs the frozen head's 0.90, not vs the control's 0.96.
    assert re.search(r"loses 10\.0 points over frozen features \(80\.0% vs best head net \+ logreg 90\.0%\)", text), text
    assert "Raw pixels (control) + rbf_svm (96.0%) is more accurate than the best head on frozen features" in text
    assert "do not pay for their extraction" in text
    stronger = _entry("logreg", 0.99, 2.0, seed=3)
    weaker = {**_entry("rbf_svm", 0.90, 1.0, seed=4), "backbone": "raw pixels", "control": "raw_pixels"}
    beaten = summarise("toy", [stronger, weaker])
    assert "Frozen features beat the raw-pixel control by 9.0 points" in beaten
