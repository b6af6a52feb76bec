"""Machine-readable output (``--json`` on train, run, backbones) and progress that suits a log.

A progress bar is drawn only on a terminal; anywhere else (a pipe, a file, CI) the same
progress is plain lines without carriage returns.
"""

from __future__ import annotations

import io
import json
import textwrap

from click.testing import CliRunner

from featx.cli import cli
from featx.core.bars import PlainProgress, progress_bar
from tests._head_stores import write_store


def test_backbones_json_lists_the_offline_checkpoints():
    result = CliRunner().invoke(cli, ["backbones", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["default"] == "efficientnet_lite0"
    assert any(row["model"] == "efficientnet_lite0" and row["default"] for row in data["offline"])
    assert all({"name", "input_size", "package"} <= set(row) for row in data["offline"])


def test_train_json_prints_the_entries_and_progress_goes_to_stderr(tmp_path):
    store = write_store(tmp_path / "s.h5", n=120)
    result = CliRunner().invoke(cli, ["train", "--features", str(store.path), "--heads", "logreg,knn",
                                      "--out", str(tmp_path / "r"), "--bootstrap", "100", "--json"])
    assert result.exit_code == 0, result.output
    entries = json.loads(result.stdout)  # stdout is JSON alone
    assert [e["head"] for e in entries] == ["logreg", "knn"] and all(0 <= e["accuracy"] <= 1 for e in entries)
    assert "train: 2/2 (100%)" in result.stderr and "\r" not in result.stderr


def test_run_json_dry_run_lists_stages(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent("""
        name: tiny
        source: digits
        backbones:
          - name: test_efficientnet
            weights: random
        heads: [logreg]
        raw_pixels: false
    """))
    result = CliRunner().invoke(cli, ["run", str(path), "--out", str(tmp_path / "o"), "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["pipeline"] == "tiny" and data["dry_run"] is True and data["report"] is None
    assert [s["status"] for s in data["stages"]] == ["to run", "to run"] and data["counts"] == {"to run": 2}


def test_extract_progress_in_a_log_is_plain_lines(image_folder, tmp_path):
    result = CliRunner().invoke(cli, ["extract", "--source", str(image_folder), "--backbone", "test_efficientnet",
                                      "--weights", "random", "--out", str(tmp_path / "f.h5"), "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert "extract: 8/8 (100%)" in result.stderr and "\r" not in result.stderr


def test_plain_progress_prints_every_interval_and_at_the_end():
    stream = io.StringIO()
    bar = PlainProgress(10, "epoch 1/3", "batch", interval=0.0, stream=stream)
    for _ in range(3):
        bar.update(1)
    bar.set_postfix(skipped=1)
    bar.close()
    bar.close()  # closing twice prints once
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("epoch 1/3: 1/10 (10%)") and lines[2].startswith("epoch 1/3: 3/10 (30%)")
    assert len(lines) == 3 and "\r" not in stream.getvalue()
    quiet = io.StringIO()
    silent = PlainProgress(5, "x", "it", disable=True, interval=0.0, stream=quiet)
    silent.update(5)
    silent.close()
    assert quiet.getvalue() == ""


def test_a_terminal_gets_a_tqdm_bar(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr("sys.stderr", Tty())
    bar = progress_bar(3, "extract", "img")
    assert type(bar).__module__.startswith("tqdm")
    bar.close()
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert isinstance(progress_bar(3, "extract", "img"), PlainProgress)


def test_source_not_found_names_every_kind_of_source():
    result = CliRunner().invoke(cli, ["extract", "--source", "/no/such/thing", "--out", "x.h5"])
    assert result.exit_code == 2
    for kind in ("image folder", ".csv", ".tar", ".parquet", "digits"):
        assert kind in result.output


def test_heads_listing_shows_each_pca_step():
    lines = {line.split()[0]: line for line in CliRunner().invoke(cli, ["heads"]).output.splitlines()}
    assert "[PCA to 128 components first]" in lines["xgboost"] and "PCA" not in lines["logreg"]


def test_a_notebook_keeps_its_tqdm_widget(monkeypatch):
    import sys

    monkeypatch.setattr("sys.stderr", io.StringIO())
    monkeypatch.setitem(sys.modules, "ipykernel", object())
    bar = progress_bar(3, "extract", "img", disable=True)
    assert type(bar).__module__.startswith("tqdm")
    bar.close()
