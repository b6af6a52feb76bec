"""The fine-tune modes and their defaults, apart from the training code (torch, timm), so a
pipeline's config check can name them without importing it."""

from __future__ import annotations

__all__ = ["MODES", "DEFAULT_LR", "CROP_SCALE"]

MODES = ("linear", "partial", "full", "scratch")
DEFAULT_LR = {"linear": 3e-3, "partial": 1e-3, "full": 5e-4, "scratch": 2e-3}
# Light augmentation for fine-tuning: timm's random-resized-crop and flip, with a
# milder minimum crop than ImageNet-from-scratch training (0.08) and no colour jitter.
CROP_SCALE = (0.25, 1.0)
