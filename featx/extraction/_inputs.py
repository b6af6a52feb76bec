"""What goes into a store: the eval transform, the item dataset the loaders read, the
store's config (its identity, whichever engine or layout writes it), its default path and
the feature dtypes."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..data import ItemRecord, Source
from ._backbones import BackboneSpec
from ._features import FEATURE_DTYPES

__all__ = ["FEATURE_DTYPES", "jsonable_data_config", "make_eval_transform", "ItemDataset", "default_store_path",
           "embedding_dim", "store_config", "source_locations"]


def jsonable_data_config(data_config: dict) -> dict:
    """A timm data config with tuples as lists, as it reads back from JSON."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in data_config.items()}


def make_eval_transform(data_config: dict):
    import timm.data

    return timm.data.create_transform(**data_config, is_training=False)


class ItemDataset(Dataset):
    """Yields ``(index, tensor, reason)``; a bad image gives a zero tensor and its reason.

    ``with_records=True`` adds the item's content hash and (3,) stat data
    (``featx.data.ItemRecord``; '' and -1s for items without one), read with the image.
    """

    def __init__(self, source: Source, transform, input_size: tuple[int, int, int], with_records: bool = False):
        self.source, self.transform, self.input_size = source, transform, input_size
        self.with_records = with_records

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int):
        image, reason, record = self.source.load_item(index)
        tensor = torch.zeros(self.input_size) if image is None else self.transform(image)
        if not self.with_records:
            return index, tensor, reason
        record = record or ItemRecord()
        return index, tensor, reason, record.digest, torch.tensor(record.stat, dtype=torch.int64)


def default_store_path(source: Source, spec: BackboneSpec, root: str | os.PathLike = "features",
                       extra: dict | None = None) -> Path:
    import hashlib
    import json

    # ``extra`` (layers, views, preprocessing) joins the hash only when used: default names stay as they were.
    key = hashlib.sha256(json.dumps({**spec.identity(), **extra} if extra else spec.identity(), sort_keys=True,
                                    default=list).encode()).hexdigest()[:8]
    return Path(root) / f"{source.name}__{spec.model}__{key}.h5"


def embedding_dim(model: torch.nn.Module, input_size, device) -> int:
    """Width of the model's output, from one forward pass on a blank image."""
    with torch.inference_mode():
        out = model(torch.zeros((1, *input_size), device=device))
    return int(out.reshape(1, -1).shape[1])


def store_config(src: Source, spec: BackboneSpec, data_config: dict, prec: str, dtype: str, options: dict,
                 decode: str) -> dict:
    """What the features are, and so the store's identity: a store with another config is refused."""
    config = {"source": {"kind": src.kind, "name": src.name}, "backbone": spec.identity(),
              "data_config": jsonable_data_config(data_config), "precision": prec, "dtype": dtype, **options}
    if decode != "cpu":
        # GPU resizing is not bit-identical to Pillow's, and draft decoding changes the
        # pixels of large JPEGs: either makes another store. (Absent for CPU decode, so
        # stores made before these options still match.)
        config["decode"] = decode
    return config


def source_locations(src: Source) -> tuple[list[Path], list[Path]]:
    """What a store must lie apart from: (the source's own folder or files, the folders of its items).

    A store may not be written at or inside the first, nor around either (see
    :func:`featx.store.check_apart`); in-memory sources have neither.
    """
    own = [Path(src.csv_path)] if getattr(src, "csv_path", None) else [Path(src.root)] if getattr(src, "root", None) else []
    own += [Path(p) for p in (getattr(src, "shards", None) or getattr(src, "files", None) or [])]
    items = src.item_paths() or []
    return own, sorted({Path(p).parent for p in items})
