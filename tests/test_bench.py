"""``featx bench extract`` / ``featx bench finetune`` in quick mode: the JSON keys and positive numbers."""

from __future__ import annotations

import json

from click.testing import CliRunner

from featx.cli import cli
from featx.extraction import check_cores


def _run(args):
    result = CliRunner().invoke(cli, ["bench", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_bench_extract_json(image_folder):
    out = _run(["extract", "--source", str(image_folder), "--backbone", "test_efficientnet", "--weights", "random",
                "--limit", "6", "--workers", "0", "--batch-size", "4", "--json"])
    for key in ("bare_img_s", "loader_img_s", "end_to_end_img_s", "ratio", "float_loader_img_s", "uint8_vs_float_loader"):
        assert out[key] > 0, key
    assert out["settings"]["batch_size"] == 4 and out["settings"]["n_images"] == 6
    assert out["device"].startswith("cpu") and isinstance(out["machine_busy"], bool)
    measured = out["end_to_end_img_s"] / out["bare_img_s"]
    assert abs(measured - out["ratio"]) < 0.01


def test_bench_finetune_json():
    out = _run(["finetune", "--source", "digits", "--backbone", "test_efficientnet", "--weights", "random",
                "--limit", "8", "--workers", "0", "--batch-size", "4", "--json"])
    assert out["bare_step_img_s"] > 0 and out["epoch_img_s"] > 0 and out["ratio"] > 0
    assert out["settings"]["n_images"] == 8


def test_core_check_reports_a_busy_machine():
    import torch

    cpu = torch.device("cpu")
    assert check_cores(1.9, 1.0, 2, 0.1, 2.0, 2, cpu) == []
    assert any("cores busy" in w for w in check_cores(0.5, 1.0, 2, 0.1, 2.0, 2, cpu))
    assert any("load average" in w for w in check_cores(1.9, 1.0, 2, 3.0, 5.0, 2, cpu))
