"""featx predict: images -> backbone -> saved head, with bad files recorded instead of crashing."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from click.testing import CliRunner

import featx
from featx import FeatxUsageError, train_heads
from featx.cli import cli
from featx.heads._manifest import manifest_digest
from tests.conftest import write_image_folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_spec):
    """A logreg head on features of timm's tiny test EfficientNet, extracted for real."""
    root = tmp_path_factory.mktemp("predict")
    folder = write_image_folder(root / "images", n_per_class=6, classes=("cat", "dog"))
    store = featx.extract(folder, tiny_spec, root / "tiny.h5", quiet=True)
    train_heads(store, heads=["logreg"], out=root / "run", n_boot=100)
    new = write_image_folder(root / "new", n_per_class=2, classes=("a", "b"), seed=3)
    (new / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (new / "b" / "notes.txt").write_text("not an image")
    return root / "run" / "logreg", new


def test_predict_a_folder_with_bad_files(trained):
    model, folder = trained
    rows = featx.predict(model, [folder], batch_size=3)
    assert len(rows) == 6
    bad = {r["id"].rsplit("/", 1)[-1]: r for r in rows if r["error"]}
    assert set(bad) == {"broken.png", "notes.txt"}
    assert all(r["predicted"] is None and r["probabilities"] is None for r in bad.values())
    good = [r for r in rows if not r["error"]]
    for row in good:
        assert row["predicted"] in ("cat", "dog")
        assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)
        assert row["confidence"] == max(row["probabilities"].values())


def test_predict_cli_csv_json_and_exit_codes(trained, tmp_path):
    model, folder = trained
    runner = CliRunner()
    out = tmp_path / "preds.csv"
    result = runner.invoke(cli, ["predict", "--model", str(model), str(folder), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert list(rows[0]) == ["id", "predicted", "confidence", "p_cat", "p_dog", "error"]
    assert sum(1 for r in rows if r["error"]) == 2 and sum(1 for r in rows if r["predicted"]) == 4

    single = next(p for p in sorted(folder.rglob("*.png")) if p.name != "broken.png")
    result = runner.invoke(cli, ["predict", "--model", str(model), str(single), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert len(data) == 1 and set(data[0]["probabilities"]) == {"cat", "dog"}

    result = runner.invoke(cli, ["predict", "--model", str(model), str(folder / "a" / "broken.png")])
    assert result.exit_code == 1 and "could be read" in result.output
    result = runner.invoke(cli, ["predict", "--model", str(model), str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "not found" in result.output
    result = runner.invoke(cli, ["predict", "--model", str(tmp_path), str(single)])
    assert result.exit_code == 2 and "not a saved model" in result.output


def test_predict_checks_the_backbone(trained, tmp_path):
    model, folder = trained
    manifest = json.loads((model / "manifest.json").read_text())
    manifest["backbone"]["weights"] = {"kind": "file", "sha256": "ab" * 32}
    # A head trained on file weights: its manifest hash covers the backbone identity.
    manifest["manifest_sha256"] = manifest_digest(manifest)
    moved = tmp_path / "filehead"
    moved.mkdir()
    for f in model.iterdir():
        (moved / f.name).write_bytes(f.read_bytes())
    (moved / "manifest.json").write_text(json.dumps(manifest))
    # Advice in the caller's language: the Python argument from Python, the flag from the CLI.
    with pytest.raises(FeatxUsageError, match="pass that file as weights=PATH"):
        featx.predict(moved, [folder])
    result = CliRunner().invoke(cli, ["predict", "--model", str(moved), str(folder)])
    assert result.exit_code == 2 and "pass that file as --weights PATH" in result.output, result.output
    assert np.isfinite(featx.load_head(moved).predict_proba(np.zeros((1, manifest["dim"])))).all()
