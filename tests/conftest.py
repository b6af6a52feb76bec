"""Shared fixtures: tiny random backbones and small image folders made on the fly."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Tests never reach a hub; the hub route is tested for its clear offline error.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def tiny_spec():
    """timm's tiny test EfficientNet with random weights: mechanics only, no transfer claims."""
    from featx import resolve_backbone

    return resolve_backbone("test_efficientnet", weights="random")


def write_image_folder(root: Path, n_per_class: int = 4, classes=("cat", "dog"), size=(24, 20), splits=None, seed=0) -> Path:
    """Write ROOT/<class>/<i>.png (or ROOT/<split>/<class>/...) with distinct random colours."""
    rng = np.random.default_rng(seed)
    for split in splits or [None]:
        base = root / split if split else root
        for c, name in enumerate(classes):
            (base / name).mkdir(parents=True, exist_ok=True)
            for i in range(n_per_class):
                pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
                pixels[..., c % 3] = 255  # a class signal
                Image.fromarray(pixels).save(base / name / f"{i:03d}.png")
    return root


@pytest.fixture
def image_folder(tmp_path) -> Path:
    return write_image_folder(tmp_path / "images")


@pytest.fixture(scope="module")
def ray_local():
    """A private local Ray instance (2 CPUs) for one test module; never a cluster already running here."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield ray
    ray.shutdown()
