"""Any saved model, loaded for prediction: :func:`load_model` and the :class:`Model` it returns.

Every row of ``results.json`` names a model directory (``model``, relative to the folder of
that ``results.json``). Its manifest says its ``kind``:

* ``head``: a classical head on frozen features (one backbone, a feature set of several,
  or the raw-pixel control); the backbone(s) are rebuilt from the manifest and must
  resolve to the identity the head was trained on (:mod:`._embed`);
* ``finetune``: a whole fine-tuned (or from-scratch) timm network, ``model.safetensors``.

Both are verified before use exactly as heads always were (every file's sha256 and the
manifest's own hash, :mod:`featx.core.modeldir`), and both predict from images the same
way: timm's eval transform for the recorded data config, then the network. ``featx predict``
is this object on the command line.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from ..core.errors import BadImageError, FeatxError, FeatxUsageError, StoreDamagedError
from ..core.modeldir import MANIFEST_FILE, read_manifest, verify_files
from ..data import load_image_file, safe_id, to_rgb
from ._embed import embed_images, make_embedders
from ._persist import TrainedHead, load_head

__all__ = ["Model", "load_model", "open_model", "image_inputs", "build_finetuned", "PYTHON_WEIGHTS", "CLI_WEIGHTS"]

# How each caller names the backbone-checkpoint argument in advice.
PYTHON_WEIGHTS, CLI_WEIGHTS = "weights=PATH", "--weights PATH"
_PROGRESS_MIN = 256  # files; fewer finish before a progress line would help


def load_model(path: str | os.PathLike, *, weights: str | os.PathLike | None = None, device: str = "auto",
               batch_size: int = 16) -> Model:
    """Load any saved model featx wrote (the ``model`` of a results row) for prediction from images.

    ``weights`` is needed only for heads trained on features of a backbone checkpoint
    file (a comma list for several backbones): the file is checked against the sha256
    the manifest recorded. The returned :class:`Model` has ``predict``, ``predict_proba``
    and ``classes_``.
    """
    return open_model(path, weights=weights, device=device, batch_size=batch_size, option=PYTHON_WEIGHTS)


def open_model(path, *, weights=None, device: str = "auto", batch_size: int = 16, option: str = PYTHON_WEIGHTS) -> Model:
    """:func:`load_model`, with advice naming the caller's own ``option`` for backbone weights."""
    if int(batch_size) < 1:
        raise FeatxUsageError("batch size must be at least 1")
    path = Path(path)
    doc = read_manifest(path)
    kind = doc.get("kind", "head")
    if kind == "head":
        return _HeadModel(load_head(path), weights, device, int(batch_size), option)
    if kind == "finetune":
        return _FinetuneModel(path, doc, device, int(batch_size))
    raise StoreDamagedError(f"{path / MANIFEST_FILE} names an unknown model kind {kind!r}; "
                            "it was not written by this featx (upgrade featx) or was edited")


def image_inputs(images) -> list[tuple[str, object, str]]:
    """``(id, path or PIL image, reason)`` for a path, a folder, a list of paths or PIL images,
    or a uint8 array ``(N, H, W, 3)``; folders are walked as an image-folder source walks them."""
    from PIL import Image

    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise FeatxUsageError(f"an image array must be uint8 (N, H, W, 3); got {images.dtype} {images.shape}")
        return [(f"[{i}]", Image.fromarray(a), "") for i, a in enumerate(images)]
    if isinstance(images, (str, os.PathLike, Image.Image)):
        images = [images]
    out: list[tuple[str, object, str]] = []
    for i, item in enumerate(images):
        if isinstance(item, Image.Image):
            out.append((f"[{i}]", item, ""))
        elif isinstance(item, (str, os.PathLike)):
            out.extend(_walk(Path(item)))
        else:
            raise FeatxUsageError(f"cannot predict a {type(item).__name__}: give paths, folders, PIL images "
                                  "or a uint8 (N, H, W, 3) array")
    if not out:
        raise FeatxUsageError("no images to predict: the folders given are empty")
    return out


def _walk(path: Path) -> list[tuple[str, object, str]]:
    from ..data import walk_files

    if path.is_dir():
        return [(safe_id(str(f.path)), f.path, f.reason) for f in walk_files(path)]
    if path.exists() or path.is_symlink():
        return [(safe_id(str(path)), path, "")]
    raise FeatxUsageError(f"image or folder not found: {safe_id(str(path))}")


class Model:
    """A saved model ready to predict from images: ``predict``, ``predict_proba``, ``classes_``.

    ``classes_`` names the columns of ``predict_proba``, in order (class names, not codes).
    """

    kind = "model"

    def __init__(self, path: Path, manifest: dict, device: str, batch_size: int):
        from ..core.runtime import autocast_context, resolve_device, resolve_precision

        self.path, self.manifest, self.batch_size = Path(path), manifest, batch_size
        self.device = resolve_device(device)
        self.precision = resolve_precision("auto", self.device)
        self._autocast = autocast_context(self.device, self.precision)

    @property
    def classes_(self) -> np.ndarray:
        raise NotImplementedError

    @property
    def data_config(self) -> dict:
        return dict(self.manifest["data_config"])

    def _proba(self, decoded: list) -> np.ndarray:
        raise NotImplementedError

    def predict_proba(self, images) -> np.ndarray:
        """``(N, len(classes_))`` probabilities; an unreadable file is an error naming it."""
        rows = self.predict_rows(images)
        bad = next((r for r in rows if r["error"]), None)
        if bad is not None:
            raise BadImageError(f"cannot predict {bad['id']}: {bad['error']}")
        return np.asarray([[r["probabilities"][c] for c in self.classes_] for r in rows], dtype=np.float64)

    def predict(self, images) -> np.ndarray:
        """The most probable class name of each image."""
        return self.classes_[np.argmax(self.predict_proba(images), axis=1)]

    def predict_rows(self, images, *, max_pixels: int | None = None, progress: bool = False) -> list[dict]:
        """One row per image: ``id``, ``predicted``, ``confidence``, ``probabilities`` ({class: p}) and
        ``error`` (``None``, or why the file was skipped, with ``predicted`` ``None``)."""
        files = image_inputs(images)
        classes = list(self.classes_)
        rows: list[dict] = []
        bar = _progress(len(files)) if progress else None
        for start in range(0, len(files), self.batch_size):
            batch, decoded = [], []
            for ident, item, reason in files[start:start + self.batch_size]:
                row = {"id": ident, "predicted": None, "confidence": None, "probabilities": None, "error": reason or None}
                if not reason:
                    try:
                        # The one file filter `featx extract` uses: extension allowlist, then the bytes.
                        decoded.append(to_rgb(item) if not isinstance(item, Path)
                                       else load_image_file(item, max_pixels=max_pixels))
                        batch.append(row)
                    except BadImageError as exc:
                        row["error"] = str(exc)
                rows.append(row)
            if decoded:
                for row, p in zip(batch, self._proba(decoded)):
                    best = int(np.argmax(p))
                    row.update(predicted=classes[best], confidence=float(p[best]),
                               probabilities={c: float(v) for c, v in zip(classes, p)})
            if bar is not None:
                bar.update(min(self.batch_size, len(files) - start))
        if bar is not None:
            bar.close()
        return rows

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, {len(self.classes_)} classes)"


class _HeadModel(Model):
    kind = "head"

    def __init__(self, head: TrainedHead, weights, device: str, batch_size: int, option: str):
        super().__init__(head.path, head.manifest, device, batch_size)
        from ..extraction import RAW_PIXELS

        self.head = head
        if head.backbone.get("model") == RAW_PIXELS:
            self.raw_size = int(head.backbone.get("size") or head.manifest["data_config"]["input_size"][1])
            self.embedders = []
        else:
            self.raw_size = None
            # One per backbone the features came from (several for concatenated stores).
            self.embedders = make_embedders(head, weights, self.device, self.precision, option=option)

    @property
    def classes_(self) -> np.ndarray:
        return np.asarray(self.head.proba_names)  # predict_proba's columns, in order

    def features(self, decoded: list) -> np.ndarray:
        if self.raw_size is not None:
            from ..extraction import raw_pixel_features

            return raw_pixel_features(decoded, self.raw_size)
        return embed_images(self.embedders, decoded, self.device, self._autocast)

    def _proba(self, decoded: list) -> np.ndarray:
        return self.head.predict_proba(self.features(decoded))


class _FinetuneModel(Model):
    kind = "finetune"

    def __init__(self, path: Path, doc: dict, device: str, batch_size: int):
        _check_finetune_manifest(doc, path)
        super().__init__(path, doc, device, batch_size)
        from ..extraction import DeviceNormalizer, input_dtype, make_uint8_transform

        self.network = build_finetuned(path, doc).to(self.device)
        config = {k: tuple(v) if isinstance(v, list) else v for k, v in doc["data_config"].items()}
        self.transform = make_uint8_transform(config)
        self.normalize = DeviceNormalizer(config["mean"], config["std"], self.device,
                                          input_dtype(self.device, self.precision))

    @property
    def classes_(self) -> np.ndarray:
        return np.asarray(self.manifest["class_names"])

    def _proba(self, decoded: list) -> np.ndarray:
        import torch

        batch = torch.stack([self.transform(image) for image in decoded]).to(self.device)
        with torch.inference_mode(), self._autocast:
            logits = self.network(self.normalize(batch))
        return torch.softmax(logits.float(), dim=1).cpu().numpy()


def _check_finetune_manifest(doc: dict, path: Path) -> None:
    """One line naming what a fine-tune manifest lacks, after the hashes are checked."""
    verify_files(doc, path, "fine-tune")
    arch, names = doc.get("architecture"), doc.get("class_names")
    config = doc.get("data_config") if isinstance(doc.get("data_config"), dict) else {}
    size = config.get("input_size")
    if not isinstance(arch, dict) or not isinstance(arch.get("model"), str):
        problem = "'architecture' names no model"
    elif not (isinstance(names, list) and len(names) >= 2 and all(isinstance(n, str) for n in names)):
        problem = "'class_names' must be two or more strings"
    elif not (isinstance(size, list) and len(size) == 3) or "mean" not in config or "std" not in config:
        problem = "'data_config' has no valid input_size, mean and std"
    elif not isinstance((doc.get("files") or {}).get("weights"), str):
        problem = "'files.weights' is missing"
    else:
        return
    raise StoreDamagedError(f"{path / MANIFEST_FILE} is not a valid fine-tune manifest: {problem}; fine-tune again")


def build_finetuned(path: str | os.PathLike, doc: dict):
    """The fine-tuned network, its architecture from the manifest and its weights from the directory."""
    import timm
    from safetensors.torch import load_file

    arch = doc["architecture"]
    network = timm.create_model(arch["model"], pretrained=False, **(arch.get("model_kwargs") or {}))
    network.reset_classifier(len(doc["class_names"]), global_pool=arch.get("pooling", "avg"))
    try:
        network.load_state_dict(load_file(str(Path(path) / doc["files"]["weights"]), device="cpu"))
    except Exception as exc:  # noqa: BLE001 - a foreign file whose hash was recomputed: one line
        raise FeatxError(f"cannot load the fine-tuned weights of {path}: {str(exc).splitlines()[0][:200]}") from None
    network.eval()
    network.requires_grad_(False)
    return network


def _progress(total: int):
    """tqdm on a terminal; a plain line every tenth otherwise; nothing for small jobs."""
    if total < _PROGRESS_MIN:
        return None
    if sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(total=total, unit="img", desc="featx: predict", file=sys.stderr)
    return _PlainProgress(total)


class _PlainProgress:
    def __init__(self, total: int):
        self.total, self.done, self.next = total, 0, max(1, total // 10)

    def update(self, n: int) -> None:
        self.done += n
        if self.done >= self.next or self.done == self.total:
            print(f"featx: predicted {self.done}/{self.total} images", file=sys.stderr, flush=True)
            self.next = self.done + max(1, self.total // 10)

    def close(self) -> None:
        pass
