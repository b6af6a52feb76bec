"""``--decode draft``: large JPEGs decoded at reduced DCT scale, never below the model's resize size.

Draft decoding changes pixels, so it is part of the store config (another store, never
a silent reuse of a full-decode one), and images under twice the size decode exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from featx import StoreMismatchError, extract
from featx.data import draft_decoding, load_image


def _jpeg(path, size, seed=0):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(small).resize(size, Image.BILINEAR).save(path, quality=95)
    return path


def test_draft_scales_only_while_both_sides_stay_at_least_the_request(tmp_path):
    photo = _jpeg(tmp_path / "a.jpg", (300, 200))
    assert load_image(photo).size == (300, 200)
    with draft_decoding((64, 64)):
        assert load_image(photo).size == (150, 100)  # 1/3 is not a JPEG scale: 1/2
    with draft_decoding((40, 40)):
        assert load_image(photo).size == (75, 50)  # 1/4
    with draft_decoding((160, 160)):
        assert load_image(photo).size == (300, 200)  # under twice the request: exact decode
    png = tmp_path / "a.png"
    Image.open(photo).save(png)
    with draft_decoding((40, 40)):
        assert load_image(png).size == (300, 200)  # only JPEG has a draft mode
    assert load_image(photo).size == (300, 200)  # the block ended


def _folder(root, size, n=4):
    for c in ("cat", "dog"):
        for i in range(n):
            _jpeg(root / c / f"{i}.jpg", size, seed=i + 10 * (c == "dog"))
    return root


@pytest.fixture
def opts():
    # The tiny model at 32 px, crop 0.875: timm resizes to 36 px, so a draft needs >= 72 px.
    return dict(backbone="test_efficientnet", weights="random", quiet=True, workers=0, img_size=32)


def test_draft_store_is_another_store_and_small_images_are_unchanged(tmp_path, opts):
    big = _folder(tmp_path / "big", (160, 160))
    full = extract(big, out=tmp_path / "full.h5", **opts)
    drafted = extract(big, out=tmp_path / "draft.h5", decode="draft", **opts)
    assert drafted.config["decode"] == "draft" and "decode" not in full.config
    assert not np.array_equal(full.features, drafted.features)  # 160 px decoded at 1/4 (40 px): other pixels, other features
    with pytest.raises(StoreMismatchError, match="decode"):
        extract(big, out=tmp_path / "full.h5", decode="draft", **opts)  # never reuses the full-decode store

    small = _folder(tmp_path / "small", (64, 64))  # < 2 x 36 px: decoded at full size either way
    same = extract(small, out=tmp_path / "s1.h5", **opts).features
    also = extract(small, out=tmp_path / "s2.h5", decode="draft", **opts).features
    np.testing.assert_array_equal(same, also)
