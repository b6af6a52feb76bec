"""Issue 11's options: fp16 precision, --compile, --decode gpu's error, auto workers from
affinity and cgroup quota (mocked cgroup files), auto batch size on CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import featx
from featx.cli import cli
from featx.core import cpus
from featx.core.errors import FeatxUsageError
from featx.core.runtime import PRECISIONS, autocast_context, resolve_precision


def test_precision_defaults_and_fp16():
    assert "fp16" in PRECISIONS
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", torch.device("cuda")) == "fp16"
    assert resolve_precision("bf16", torch.device("cuda")) == "bf16"
    with autocast_context(torch.device("cpu"), "fp16"):
        out = torch.nn.Linear(4, 4)(torch.ones(2, 4))
    assert out.dtype == torch.float16
    with pytest.raises(FeatxUsageError, match="not one of"):
        resolve_precision("fp8", torch.device("cpu"))


@pytest.mark.parametrize("files, affinity, expected", [
    ({"cpu.max": "max 100000"}, 8, 8),                       # v2, unlimited
    ({"cpu.max": "150000 100000"}, 8, 2),                    # v2, 1.5 cores -> 2
    ({"cpu.max": "50000 100000"}, 8, 1),                     # v2, half a core -> 1
    ({"cpu.max": "400000 100000"}, 2, 2),                    # quota above affinity
    ({"cpu/cpu.cfs_quota_us": "300000", "cpu/cpu.cfs_period_us": "100000"}, 16, 3),   # v1
    ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, 4, 4),        # v1 unlimited
    ({}, 6, 6),                                              # no cgroup files
])
def test_usable_cpus_from_affinity_and_cgroup_quota(tmp_path, monkeypatch, files, affinity, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text + "\n")
    monkeypatch.setattr(cpus.os, "sched_getaffinity", lambda pid: set(range(affinity)))
    monkeypatch.setattr(cpus.os, "cpu_count", lambda: 64)  # never what counts
    assert cpus.usable_cpus(tmp_path) == expected
    # --workers auto: in-process decoding for a CPU model on <= 2 cores, else the cores less one.
    assert cpus.auto_workers(tmp_path) == (0 if expected <= 2 else expected - 1)
    assert cpus.auto_workers(tmp_path, device_type="cuda") == max(1, expected - 1)


def test_auto_batch_size_on_cpu_is_the_measured_default(tiny_spec):
    from featx.extraction import CPU_BATCH_SIZE, resolve_batch_size, resolve_workers

    model, data_config = featx.create_backbone(tiny_spec)
    size, auto = resolve_batch_size("auto", model, tuple(data_config["input_size"]), torch.device("cpu"))
    assert (size, auto) == (CPU_BATCH_SIZE, True) and CPU_BATCH_SIZE == 8
    assert resolve_batch_size(16) == (16, False)
    for bad in (0, "x"):
        with pytest.raises(FeatxUsageError):
            resolve_batch_size(bad)
    with pytest.raises(FeatxUsageError):
        resolve_workers(-1)


def test_decode_gpu_without_cuda_is_one_line_usage_error(image_folder, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = CliRunner().invoke(cli, ["extract", "--source", str(image_folder), "--backbone", "test_efficientnet",
                                      "--weights", "random", "--out", str(tmp_path / "s.h5"), "--decode", "gpu"])
    assert result.exit_code == 2, result.output
    assert "--decode gpu needs a CUDA GPU" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "s.h5").exists()


def test_cli_accepts_auto_sizes_and_fp16_choice():
    result = CliRunner().invoke(cli, ["extract", "--help"])
    assert "fp16" in result.output and "--compile" in result.output and "--decode" in result.output
    bad = CliRunner().invoke(cli, ["extract", "--source", "digits", "--out", "x.h5", "--batch-size", "many"])
    assert bad.exit_code == 2 and "whole number or 'auto'" in bad.output


@pytest.mark.slow
def test_compiled_features_equal_eager_ones(image_folder, tiny_spec, tmp_path):
    """torch.compile (inductor) on CPU: ~1 min of compilation on a 2-core machine, hence slow."""
    eager = featx.extract(image_folder, tiny_spec, tmp_path / "eager.h5", device="cpu", workers=0, quiet=True)
    compiled = featx.extract(image_folder, tiny_spec, tmp_path / "compiled.h5", device="cpu", workers=0, quiet=True,
                             compile=True)
    assert compiled.run_info["compile"] is True and eager.run_info["compile"] is False
    assert compiled.config == eager.config  # compile is how the run went, not what the features are
    a, b = compiled.features, eager.features
    rel = np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)
    assert rel.max() < 1e-4, rel


def test_gpu_decode_workers_ship_plain_jpeg_bytes_and_decode_the_rest(tmp_path):
    """The CPU half of --decode gpu: which files go to nvjpeg, which are decoded in the worker."""
    from PIL import Image

    from featx.extraction import make_uint8_transform
    from featx.extraction._gpu_decode import GpuDecodeDataset, collate_payloads

    folder = tmp_path / "imgs" / "a"
    folder.mkdir(parents=True)
    pixels = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "0.jpg")
    Image.fromarray(pixels).save(folder / "1.png")
    data = (folder / "0.jpg").read_bytes()
    (folder / "2.jpg").write_bytes(data[: len(data) // 2])  # truncated: the CPU path rejects it
    Image.fromarray(pixels).convert("CMYK").save(folder / "3.jpg")
    source = featx.open_source(tmp_path / "imgs")
    config = {"input_size": (3, 16, 16), "interpolation": "bilinear", "mean": (0.5,) * 3, "std": (0.5,) * 3,
              "crop_pct": 1.0, "crop_mode": "center"}
    dataset = GpuDecodeDataset(source, make_uint8_transform(config), config["input_size"], with_records=True)
    items = [dataset[i] for i in range(len(source))]
    kinds = {source.items[i].id: (item[1][0], item[2]) for i, item in enumerate(items)}
    assert kinds["a/0.jpg"] == ("jpeg", "") and kinds["a/1.png"] == ("pixels", "") and kinds["a/3.jpg"] == ("pixels", "")
    assert kinds["a/2.jpg"][0] == "pixels" and "truncated" in kinds["a/2.jpg"][1].lower()
    assert bytes(items[0][1][1].numpy()) == data and len(items[0][3]) == 64  # the bytes and their content hash
    indices, payloads, reasons, digests, stats = collate_payloads(items)
    assert indices.tolist() == [0, 1, 2, 3] and stats.shape == (4, 3) and len(payloads) == 4
