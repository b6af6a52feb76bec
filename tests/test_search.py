"""featx search: successive halving on nested train/val subsamples, never test; cache; budget; CLI; pipelines."""

from __future__ import annotations

import json
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

import featx
from featx import FeatxUsageError, load_pipeline
from featx.cli import cli
from featx.pipeline import parse_search, run_search
from featx.pipeline._search_space import candidates, informed_space

from .conftest import write_image_folder

TINY = [{"name": "test_efficientnet", "weights": "random", "label": "a"}]
SPLIT = {"split_seed": 0, "val_fraction": 0.25, "test_fraction": 0.25}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_image_folder(tmp_path_factory.mktemp("search") / "img", n_per_class=16, classes=("r", "g", "b"),
                              size=(20, 18))


def _spec(**extra):
    base = {"backbones": TINY, "space": {"img_size": [32, 40], "interpolation": ["bicubic", "bilinear"], "crop_pct": [1.0]},
            "min_per_class": 2, "eta": 2, "batch_size": 32}
    return parse_search({**base, **extra})


@pytest.mark.parametrize("value, expected", [
    ({"backbones": TINY, "space": {"crop": [1.0]}}, "search.space.crop: unknown key"),
    ({"backbones": TINY, "space": {"crop_pct": [1.5]}}, "crop_pct must be in"),
    ({"backbones": TINY, "space": {"layers": ["x"]}}, "not a layer index"),
    ({"backbones": TINY, "space": {"crop_pct": [1.0, 1.0]}}, "listed twice"),
    ({"backbones": TINY, "budget": 3}, "unknown key 'budget'"),
    ({"backbones": TINY, "eta": 1}, "search.eta"),
    ({"backbones": []}, "search.backbones"),
])
def test_search_config_errors_name_the_key(value, expected):
    with pytest.raises(FeatxUsageError, match=expected):
        parse_search(value)


def test_candidates_and_the_small_image_default():
    spec = parse_search({"backbones": TINY + [{"name": "test_resnet", "weights": "random", "label": "b"}],
                         "space": {"layers": ["", "-1,-2"], "views": ["", "hflip"]}})
    found = candidates(spec)
    assert len(found) == 8 and len({c.id for c in found}) == 8
    assert {c.option("layers") for c in found} == {None, (-1, -2)}
    space, note = informed_space(spec, 32, {"a": 224, "b": 224})
    assert space["crop_pct"] == [None, 1.0] and "crop_pct 1.0" in note
    assert informed_space(spec, 200, {"a": 224}) == (spec.space, None)  # photos: the model's own crop
    given = parse_search({"backbones": TINY, "space": {"crop_pct": [0.9]}})
    assert informed_space(given, 32, {"a": 224})[0] == {"crop_pct": [0.9]}  # what the user set stands


def test_halving_prunes_by_rung_on_train_and_val_only_and_caches(folder, tmp_path, monkeypatch):
    source = featx.data.open_source(folder)
    splits, _ = featx.data.assign_splits(source.ids, source.labels, seed=0, val_fraction=0.25, test_fraction=0.25)
    test_ids = {i for i, s in zip(source.ids, splits) if s == "test"}
    read = []
    real = type(source).load_item
    monkeypatch.setattr(type(source), "load_item", lambda self, i: (read.append(self.items[i].id), real(self, i))[1])
    doc = run_search(folder, _spec(), tmp_path / "s", split=SPLIT, quiet=True)
    assert read and not test_ids & set(read)  # the search never opens a test image
    entries = doc["search"]
    assert len(entries) == 4 and sorted(e["status"] for e in entries) == ["chosen", "pruned", "pruned", "pruned"]
    for e in entries:
        assert {"config", "proxy_score", "subsample_size", "cost_seconds", "status", "reason"} <= set(e)
        assert e["cost_seconds"] > 0 and 0 <= e["proxy_score"] <= 1
    # 4 candidates, eta 2: two pruned at rung 0 (2/class), one at rung 1 (4/class); the winner goes on.
    pruned_at = sorted(e["subsample"]["rung"] for e in entries if e["status"] == "pruned")
    assert pruned_at == [0, 0, 1]
    chosen = next(e for e in entries if e["status"] == "chosen")
    assert chosen["subsample"]["per_class"] > 4 and doc["chosen"][0]["candidate"] == chosen["candidate"]
    # The winner against the runner-up of its rung, on the same val items (paired bootstrap).
    runner_up = next(e for e in entries if e["subsample"]["rung"] == 1)  # the last rung the winner shared
    assert doc["paired"]["against"] == runner_up["candidate"] and doc["paired"]["per_class"] == 4
    assert doc["paired"]["n"] == runner_up["subsample"]["n_val"] and "paired bootstrap" in doc["summary"]
    survivors = [e for e in entries if e["subsample"]["rung"] >= 1]
    assert min(s["scores"][0]["proxy_score"] for s in survivors) >= max(
        e["scores"][0]["proxy_score"] for e in entries if e["subsample"]["rung"] == 0)  # the best went on
    # Subsample stores: train and val items of the full split, nested from rung to rung.
    stores = sorted((tmp_path / "s" / "features").glob("a__pc*"), key=lambda p: int(p.name.split("__pc")[1].split("_")[0]))
    ids = [set(map(str, featx.FeatureStore(p).all_ids)) for p in stores]
    assert all(not (s & test_ids) for s in ids)
    assert ids[0] <= ids[-1]
    # A rerun extracts nothing; a widened space extracts only the new candidates' stores.
    again = run_search(folder, _spec(), tmp_path / "s", split=SPLIT, quiet=True)
    assert all(e["reused"] for e in again["search"]) and again["chosen"] == doc["chosen"]
    # The search's cost is what its stores recorded, not what the cached rerun took.
    recorded = sum(featx.FeatureStore(p).run_info["extract_seconds_total"] for p in stores)
    assert again["cost_seconds"] >= recorded > 0
    before = set((tmp_path / "s" / "features").glob("*.h5"))
    wider = run_search(folder, _spec(space={"img_size": [32, 40, 48], "interpolation": ["bicubic", "bilinear"], "crop_pct": [1.0]}),
                       tmp_path / "s", split=SPLIT, quiet=True)
    new_rung0 = [p for p in set((tmp_path / "s" / "features").glob("*.h5")) - before if "__pc2__" in p.name]
    assert len(wider["search"]) == 6 and len(new_rung0) == 2
    assert json.loads((tmp_path / "s" / "search.json").read_text())["n_candidates"] == 6


def test_budget_stops_the_halving_and_says_so(folder, tmp_path):
    doc = run_search(folder, _spec(budget_minutes=1e-6), tmp_path / "b", split=SPLIT, quiet=True)
    statuses = [e["status"] for e in doc["search"]]
    assert statuses.count("chosen") == 1
    assert any(e["reason"].startswith("budget") for e in doc["search"] if e["status"] == "pruned")
    assert {e["subsample"]["rung"] for e in doc["search"]} == {0}  # no second rung was started


def test_the_budget_is_charged_recorded_costs_so_a_cached_rerun_stops_where_the_run_did(folder, tmp_path,
                                                                                         monkeypatch):
    from featx.pipeline import _search

    full = run_search(folder, _spec(), tmp_path / "c", split=SPLIT, quiet=True)
    assert {e["subsample"]["rung"] for e in full["search"]} != {0}  # unbudgeted, it goes past rung 0
    original = _search._Searcher._extract
    # The same cached stores, as if each had taken 10,000 s to extract: a wall-clock budget would let
    # this rerun (seconds of proxy fits) go on; one charged with what the stores cost must stop.
    monkeypatch.setattr(_search._Searcher, "_extract", lambda self, *a: (original(self, *a)[0], 1e4))
    again = run_search(folder, _spec(budget_minutes=60), tmp_path / "c", split=SPLIT, quiet=True)
    assert {e["subsample"]["rung"] for e in again["search"]} == {0}
    assert any(e["reason"].startswith("budget") for e in again["search"] if e["status"] == "pruned")


def test_a_candidate_that_cannot_be_extracted_is_pruned_with_its_reason(folder, tmp_path):
    spec = _spec(space={"img_size": [32], "crop_pct": [1.0], "layers": ["", "-9"]})  # test_efficientnet has 5 layers
    doc = run_search(folder, spec, tmp_path / "f", split=SPLIT, quiet=True)
    by_layers = {tuple(e["config"].get("layers", [])): e for e in doc["search"]}
    assert by_layers[(-9,)]["status"] == "pruned" and "out of range" in by_layers[(-9,)]["reason"]
    assert by_layers[()]["status"] == "chosen"


def test_cli_search_fits_heads_on_the_choice(folder, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli"
    args = ["search", "--source", str(folder), "--backbones", "test_efficientnet=random,test_resnet=random",
            "--space", "img_size=32", "--space", "crop_pct=1.0", "--min-per-class", "2", "--eta", "2", "--val-fraction", "0.25", "--test-fraction",
            "0.25", "--out", str(out), "-q"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "chosen on val" in result.output and "test accuracy" in result.output
    (row,) = json.loads((out / "results.json").read_text())
    doc = json.loads((out / "search" / "search.json").read_text())
    # Two candidates, then the winner concatenated with the other backbone's best: chosen or pruned, with why.
    assert len(doc["search"]) == 3 and "stores" in doc["search"][-1]["config"]
    assert doc["search"][-1]["status"] in ("chosen", "pruned") and doc["search"][-1]["reason"]
    assert len(doc["chosen"]) == (2 if doc["search"][-1]["status"] == "chosen" else 1)
    assert row["search"] == doc["search"] and row["search_summary"] == doc["summary"]
    assert row["n_test"] == 12  # the test split of the full source: 4 per class
    bad = runner.invoke(cli, [*args[:-3], "--space", "crop_pct=2", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "crop_pct" in bad.output and "Traceback" not in bad.output
    assert not (tmp_path / "bad").exists()


PIPE = """
    name: s
    source: {{path: {path}, val_fraction: 0.25, test_fraction: 0.25}}
    heads: [logreg]
    raw_pixels: false
    search:
      backbones: [{{name: test_efficientnet, weights: random, label: a}}]
      space: {{img_size: [32, 40], layers: ['', '-1'], crop_pct: [1.0]}}
      min_per_class: 2
      eta: 2
"""


def test_pipeline_search_adds_its_choice_and_tags_the_row(folder, tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(PIPE.format(path=folder)).lstrip())
    pipeline = load_pipeline(path)
    assert pipeline.backbones == [] and pipeline.search.space["img_size"] == [32, 40]
    assert featx.run_pipeline(path, out=tmp_path / "o", dry_run=True).stages == []  # nothing known before the search
    run = featx.run_pipeline(path, out=tmp_path / "o", quiet=True)
    assert not run.failed, [(s.title, s.error) for s in run.failed]
    rows = json.loads((tmp_path / "o" / "results.json").read_text())
    tagged = [r for r in rows if r.get("search")]
    assert len(tagged) == 1 and len(tagged[0]["search"]) == 4  # once: the report lists each candidate once
    again = featx.run_pipeline(path, out=tmp_path / "o", quiet=True)
    assert {s.status for s in again.stages} == {"cached"}
    dry = featx.run_pipeline(path, out=tmp_path / "o", dry_run=True)  # the search has run: its stages are known
    assert dry.stages and {s.status for s in dry.stages} == {"cached"}
    resolved = load_pipeline(tmp_path / "o" / "pipeline.resolved.yaml")  # runs again as written
    assert resolved.backbones == [] and resolved.search.to_dict() == pipeline.search.to_dict()
    with pytest.raises(FeatxUsageError, match="search.space.crop"):
        load_pipeline(path, overrides=["search.space.crop=[1.0]"])


def test_a_pooled_candidate_shares_its_layers_twins_extraction(folder, tmp_path):
    spec = _spec(space={"img_size": [32], "crop_pct": [1.0], "layers": ["", "-1"]}, eta=2)
    doc = run_search(folder, spec, tmp_path / "l", split=SPLIT, quiet=True)
    rung0 = list((tmp_path / "l" / "features").glob("a__pc2__*.h5"))
    assert len(rung0) == 1  # two candidates, one extraction: pooled comes out of the layers pass
    by_layers = {tuple(e["config"].get("layers", [])): e for e in doc["search"]}
    assert set(by_layers) == {(), (-1,)}
    # The pooled candidate is scored on pooled alone, its twin on pooled + the layer.
    assert by_layers[()]["sets"] == ["pooled"]
    assert by_layers[(-1,)]["sets"][0] == "pooled" and len(by_layers[(-1,)]["sets"]) == 2
    assert doc["chosen"][0]["sets"] == by_layers[tuple(doc["chosen"][0]["options"].get("layers", []))]["sets"]
    store = featx.FeatureStore(rung0[0])
    assert len(store.feature_sets) == 2


def test_logme_proxy_scores_without_a_head_and_is_recorded(folder, tmp_path):
    doc = run_search(folder, _spec(proxy="logme"), tmp_path / "m", split=SPLIT, quiet=True)
    assert doc["proxy"].startswith("LogME") and doc["spec"]["proxy"] == "logme"
    scores = [e["proxy_score"] for e in doc["search"]]
    assert all(np.isfinite(scores)) and len(set(scores)) > 1
    assert all(e["proxy"].startswith("LogME") for e in doc["search"])
    assert doc["paired"] is None  # no per-item predictions to pair
    with pytest.raises(FeatxUsageError, match="search.proxy"):
        _spec(proxy="knn")


def test_combine_reuses_the_rung_stores_and_never_extracts_at_the_last_rung(folder, tmp_path):
    spec = parse_search({"backbones": TINY + [{"name": "test_resnet", "weights": "random", "label": "b"}],
                         "space": {"img_size": [32, 40], "interpolation": ["bicubic", "bilinear"], "crop_pct": [1.0]},
                         "min_per_class": 2, "eta": 2, "batch_size": 32})
    doc = run_search(folder, spec, tmp_path / "c", split=SPLIT, quiet=True)
    combos = [e for e in doc["search"] if " + " in e["candidate"]]
    other = "b" if doc["chosen"][0]["backbone"]["label"] == "a" else "a"
    reached = max(e["subsample"]["per_class"] for e in doc["search"]
                  if " + " not in e["candidate"] and e["candidate"].startswith(other + " "))
    # Judged where both already have stores (never below rung 1, min_per_class * eta = 4 per class).
    assert len(combos) == 1 and combos[0]["subsample"]["per_class"] == max(4, reached)
    assert f"at {max(4, reached)}/class" in combos[0]["reason"]
    last = max(e["subsample"]["per_class"] for e in doc["search"] if " + " not in e["candidate"])
    if reached < last:
        assert not list((tmp_path / "c" / "features").glob(f"{other}__pc{last}__*.h5"))  # nothing new at the last rung


def test_combine_scores_where_both_have_stores_and_extracts_only_below_rung_1(monkeypatch):
    from featx.pipeline import _search
    from featx.pipeline._search_space import Candidate

    def result(label, per_classes):
        r = _search._Result(Candidate({"name": label, "weights": None, "label": label}, ()))
        r.scores = [(i, p, p, p, 0.5) for i, p in enumerate(per_classes)]
        r.stores = {p: SimpleNamespace(labels=np.zeros(p)) for p in per_classes}
        r.correct = {p: np.ones(3, bool) for p in per_classes}
        return r

    extracted, scored = [], []
    monkeypatch.setattr(_search, "_evaluate_or_drop", lambda s, r, rung, pc, items: (
        extracted.append((r.candidate.label, pc)), r.stores.__setitem__(pc, SimpleNamespace(labels=np.zeros(pc))),
        r.scores.append((rung, pc, pc, pc, 0.5)), True)[-1])
    monkeypatch.setattr(_search, "_combined_score", lambda s, members, pc: (
        scored.append(([m.candidate.label for m in members], pc)), (0.4 + 0.1 * len(members), None))[-1])
    searcher = SimpleNamespace(spec=SimpleNamespace(min_per_class=2, eta=2, proxy="logreg"), elapsed=0, budget=1e9,
                               charge=lambda seconds: None,
                               subsample=lambda pc: np.arange(pc), say=lambda text: None)
    winner, rung1, rung0 = result("w", [2, 4, 8]), result("b", [2, 4]), result("c", [2])
    head, *entries = _search._combine(searcher, winner, [winner, rung1, rung0], 8)
    assert ("b", 8) not in extracted and ("w", 8) not in [(m, p) for m, p in extracted]  # nothing at the last rung
    assert extracted == [("c", 4)]  # only the rung-0 backbone, at rung 1 (min_per_class * eta)
    assert {pc for _, pc in scored} == {4} and [e["subsample"]["per_class"] for e in entries] == [4, 4]
    assert head["combination"] == ["w", "b", "c"] and head["per_class"] == 4


def test_combine_adds_a_backbone_only_for_a_gain_the_paired_ci_separates_from_noise(monkeypatch):
    from featx.pipeline import _search
    from featx.pipeline._search_space import Candidate

    n = 400
    base = np.zeros(n, bool)
    base[: n // 2] = True  # the winner alone: 0.50

    def result(label):
        r = _search._Result(Candidate({"name": label, "weights": None, "label": label}, ()))
        r.scores, r.stores, r.correct = [(0, 4, 4, 4, 0.5)], {4: SimpleNamespace(labels=np.zeros(n))}, {4: base}
        return r

    def with_gain(extra):  # the concatenation also gets `extra` of the winner's misses right
        out = base.copy()
        out[n // 2: n // 2 + extra] = True
        return out

    gains = {"small": with_gain(3), "large": with_gain(60)}
    monkeypatch.setattr(_search, "_combined_score", lambda s, members, pc: (
        (0.5, base) if len(members) == 1 else
        (float(gains[members[-1].candidate.label].mean()), gains[members[-1].candidate.label])))
    searcher = SimpleNamespace(spec=SimpleNamespace(min_per_class=2, eta=2, proxy="logreg"), elapsed=0, budget=1e9,
                               charge=lambda seconds: None,
                               subsample=lambda pc: np.arange(pc), say=lambda text: None)
    winner = result("w")
    for label, chosen in (("small", False), ("large", True)):
        head, entry = _search._combine(searcher, winner, [winner, result(label)], 4)
        assert entry["proxy_score"] > 0.5 and (entry["status"] == "chosen") is chosen
        assert (entry["paired"]["ci"][0] > 0) is chosen and "paired gain" in entry["reason"]
        assert ("could be noise" in entry["reason"]) is not chosen
        assert head["combination"] == (["w", label] if chosen else ["w"])
