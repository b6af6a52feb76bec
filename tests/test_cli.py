"""The extract/info/backbones commands: output, JSON contract and exit codes."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from featx.cli import cli

TINY = ["--backbone", "test_efficientnet", "--weights", "random"]


@pytest.fixture
def runner():
    return CliRunner()


def test_extract_then_info_json(runner, image_folder, tmp_path):
    out = tmp_path / "f.h5"
    result = runner.invoke(cli, ["extract", "--source", str(image_folder), *TINY, "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "8 x 256 features" in result.output
    info = runner.invoke(cli, ["info", str(out), "--json"])
    assert info.exit_code == 0
    data = json.loads(info.output)
    assert {"n_items", "dim", "n_skipped", "complete", "backbone", "classes", "splits", "config"} <= set(data)
    assert (data["n_items"], data["dim"], data["n_skipped"], data["complete"]) == (8, 256, 0, True)
    assert data["splits"] == {"none": 8} and data["classes"] == ["cat", "dog"]
    human = runner.invoke(cli, ["info", str(out)])
    assert human.exit_code == 0 and "complete" in human.output


def test_second_extract_reuses(runner, image_folder, tmp_path):
    args = ["extract", "--source", str(image_folder), *TINY, "--out", str(tmp_path / "f.h5")]
    assert runner.invoke(cli, args + ["-q"]).exit_code == 0
    again = runner.invoke(cli, args)
    assert again.exit_code == 0 and "reused" in again.output


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["extract", "--source", "/no/such/folder", "--out", "x.h5"], 2, "not found"),
        (["extract", "--source", "digits", "--backbone", "resnet5", "--out", "x.h5"], 2, "did you mean"),
        (["extract", "--source", "digits", "--weights", "/no/such.pth", "--out", "x.h5"], 2, "weights file not found"),
        (["extract", "--out", "x.h5"], 2, "Missing option"),
        (["info", "/no/such.h5"], 2, "not found"),
    ],
)
def test_user_mistakes_exit_with_one_line(runner, args, code, message):
    result = runner.invoke(cli, args)
    assert result.exit_code == code
    assert message in result.output
    assert "Traceback" not in result.output


def test_mismatch_is_a_runtime_error(runner, image_folder, tmp_path):
    out = str(tmp_path / "f.h5")
    assert runner.invoke(cli, ["extract", "--source", str(image_folder), *TINY, "--out", out, "-q"]).exit_code == 0
    result = runner.invoke(cli, ["extract", "--source", str(image_folder), *TINY, "--pooling", "max", "--out", out, "-q"])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "--overwrite" in lines[0]


def test_backbones_lists_offline_weights(runner):
    result = runner.invoke(cli, ["backbones"])
    assert result.exit_code == 0
    assert "efficientnet_lite0.offline_in1k" in result.output and "[default]" in result.output
    assert "--weights FILE" in result.output
