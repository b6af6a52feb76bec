"""Each source kind lists its items with stable ids, labels and splits."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from featx import ArraySource, CsvSource, DigitsSource, FeatxUsageError, ImageFolderSource, open_source

from .conftest import write_image_folder


def test_flat_image_folder(image_folder):
    src = open_source(image_folder)
    assert isinstance(src, ImageFolderSource)
    assert src.class_names == ["cat", "dog"]
    assert src.ids[:2] == ["cat/000.png", "cat/001.png"]
    assert src.labels.tolist() == [0] * 4 + [1] * 4
    assert not src.has_splits
    assert src.load(0).mode == "RGB"


def test_split_image_folder(tmp_path):
    root = write_image_folder(tmp_path / "cifar", n_per_class=2, splits=["train", "test"])
    src = open_source(root)
    assert [it.split for it in src.items] == ["train"] * 4 + ["test"] * 4
    assert src.items[0].id == "train/cat/000.png"
    assert src.class_names == ["cat", "dog"]


def test_folder_keeps_non_images_as_items_and_ignores_hidden(image_folder):
    (image_folder / "cat" / "notes.txt").write_text("x")
    (image_folder / "cat" / ".DS_Store").write_text("x")
    src = open_source(image_folder)
    assert "cat/notes.txt" in src.ids and "cat/.DS_Store" not in src.ids


def test_csv_manifest(image_folder):
    csv = image_folder / "manifest.csv"
    csv.write_text("path,label,split\ncat/000.png,cat,train\ndog/000.png,dog,test\ndog/001.png,dog,\n")
    src = open_source(csv)
    assert isinstance(src, CsvSource)
    assert src.ids == ["cat/000.png", "dog/000.png", "dog/001.png"]
    assert [it.split for it in src.items] == ["train", "test", ""]
    assert np.asarray(src.load(1)).shape == (20, 24, 3)


@pytest.mark.parametrize(
    "text, message",
    [("file,label\na.png,x\n", "missing \\['path'\\]"), ("path,label\na.png,\n", ":2: empty path or label"),
     ("path,label,split\na.png,x,holdout\n", "split 'holdout'"), ("path,label\na.png,x\na.png,y\n", "listed twice")],
)
def test_csv_errors_name_the_problem(tmp_path, text, message):
    csv = tmp_path / "m.csv"
    csv.write_text(text)
    with pytest.raises(FeatxUsageError, match=message):
        CsvSource(csv)


def test_digits_builtin():
    src = open_source("digits")
    assert isinstance(src, DigitsSource)
    assert len(src) == 1797 and src.class_names == [str(i) for i in range(10)]
    assert src.load(0).size == (8, 8) and src.ids[0] == "digits/0000"


def test_arrays_and_pil_images():
    arr = np.zeros((3, 5, 6, 3), dtype=np.uint8)
    src = ArraySource(arr, labels=["b", "a", "b"])
    assert src.class_names == ["a", "b"] and src.labels.tolist() == [1, 0, 1]
    assert src.ids == ["000000", "000001", "000002"]
    pil = ArraySource([Image.new("L", (4, 4))], labels=[0], ids=["x"])
    assert pil.load(0).mode == "RGB" and pil.ids == ["x"]
    with pytest.raises(FeatxUsageError, match="uint8"):
        ArraySource(np.zeros((2, 4, 4), dtype=np.float32))


def test_unknown_source_is_a_usage_error(tmp_path):
    with pytest.raises(FeatxUsageError, match="not found"):
        open_source(tmp_path / "missing")
    (tmp_path / "list.txt").write_text("x")
    with pytest.raises(FeatxUsageError, match="not a .csv"):
        open_source(tmp_path / "list.txt")


def test_fingerprint_changes_with_content(image_folder):
    before = open_source(image_folder).fingerprint()
    assert open_source(image_folder).fingerprint() == before
    Image.new("RGB", (3, 3)).save(image_folder / "dog" / "000.png")
    assert open_source(image_folder).fingerprint() != before
