"""WebDataset tar shards and Parquet files as sources: listing, labels, brace patterns, bad
samples skipped and recorded, stable ids, and extraction equal to the same images as a folder."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from featx import extract, open_source
from featx.core.errors import FeatxUsageError
from featx.data import expand_braces


def _png(seed: int, size=(20, 16)) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_shards(root, n_shards=2, per_shard=3):
    """img2dataset-style shards: NNNNN.tar holding KEY.jpg/png + KEY.cls + KEY.json."""
    root.mkdir(parents=True, exist_ok=True)
    for s in range(n_shards):
        with tarfile.open(root / f"{s:05d}.tar", "w") as tar:
            for k in range(per_shard):
                key = f"{s:05d}{k:04d}"
                _add(tar, f"{key}.png", _png(s * 100 + k))
                _add(tar, f"{key}.cls", str((s + k) % 2).encode())
                _add(tar, f"{key}.json", json.dumps({"key": key}).encode())
    return root


def test_expand_braces_keeps_padding():
    assert expand_braces("d/{00008..00010}.tar") == ["d/00008.tar", "d/00009.tar", "d/00010.tar"]
    assert expand_braces("{a,b}-{1..2}") == ["a-1", "a-2", "b-1", "b-2"]


def test_webdataset_listing_labels_and_bad_samples(tmp_path):
    root = write_shards(tmp_path / "wds")
    with tarfile.open(root / "00002.tar", "w") as tar:
        _add(tar, "broken.jpg", b"\xff\xd8 truncated")
        _add(tar, "broken.cls", b"1")
        _add(tar, "noimage.txt", b"0")
    src = open_source(str(root / "{00000..00002}.tar"))
    assert src.kind == "webdataset" and len(src) == 8 and src.class_names == ["0", "1"]
    assert src.ids[:2] == ["00000/000000000", "00000/000000001"] and src.ids[-1] == "00002/noimage"
    assert src.labels.tolist()[:3] == [0, 1, 0]
    assert np.asarray(src.load(1)).shape == (16, 20, 3)
    store = extract(src, "test_efficientnet", tmp_path / "f.h5", weights="random", quiet=True, workers=0)
    assert {s["id"] for s in store.skipped} == {"00002/broken", "00002/noimage"}
    assert store.n_done == 6


def test_missing_shard_is_a_usage_error(tmp_path):
    write_shards(tmp_path / "wds", n_shards=1)
    with pytest.raises(FeatxUsageError, match="not found"):
        open_source(str(tmp_path / "wds" / "{00000..00001}.tar"))


def test_sharded_sources_equal_the_same_images_as_arrays(tmp_path):
    """A tar shard and a Parquet file of the same PNGs give the same features as the decoded arrays."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from featx import ArraySource

    root = write_shards(tmp_path / "wds", n_shards=1, per_shard=4)
    blobs = [_png(k) for k in range(4)]
    table = pa.table({"image": [{"bytes": b, "path": ""} for b in blobs[:3]] + [{"bytes": b"junk", "path": ""}],
                      "label": ["x", "y", "x", "y"], "split": ["train", "train", "test", "test"]})
    pq.write_table(table, tmp_path / "d.parquet", row_group_size=2)
    parquet = open_source(str(tmp_path / "d.parquet"))
    assert parquet.kind == "parquet" and parquet.ids == ["d/0", "d/1", "d/2", "d/3"]
    assert parquet.class_names == ["x", "y"] and [i.split for i in parquet.items] == ["train", "train", "test", "test"]
    arrays = ArraySource(np.stack([np.asarray(Image.open(io.BytesIO(b))) for b in blobs[:3]]), labels=[0, 1, 0])
    spec = dict(backbone="test_efficientnet", weights="random", quiet=True, workers=0)
    want = extract(arrays, out=tmp_path / "a.h5", **spec).features
    got = extract(parquet, out=tmp_path / "p", shard_size=2, **spec)
    assert got.skipped == [{"id": "d/3", "reason": got.skipped[0]["reason"]}]
    np.testing.assert_allclose(got.features, want, atol=1e-5)
    tar = extract(open_source(str(root / "00000.tar")), out=tmp_path / "t.h5", **spec)
    assert tar.n_done == 4 and tar.features.shape == (4, want.shape[1])
    np.testing.assert_allclose(tar.features[:3], want, atol=1e-5)


def test_parquet_without_label_column_names_the_columns(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"image": [_png(0)], "caption": ["a"]}), tmp_path / "x.parquet")
    with pytest.raises(FeatxUsageError, match="no label column .*caption"):
        open_source(str(tmp_path / "x.parquet"))
