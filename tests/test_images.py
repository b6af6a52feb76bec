"""Bad images are rejected with a reason; awkward but valid images are converted correctly."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from featx import BadImageError
from featx.data._images import load_image


def _save(img: Image.Image, path, **kwargs):
    img.save(path, **kwargs)
    return path


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(BadImageError, match="empty file"):
        load_image(path)


def test_truncated_jpeg(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(BadImageError, match="cannot decode|truncated"):
        load_image(path)


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture")
    with pytest.raises(BadImageError, match="not an image"):
        load_image(path)


def test_decompression_bomb_at_pillows_limit(tmp_path):
    # 9500 x 9500 = 90.25 MP, just over Pillow's default MAX_IMAGE_PIXELS (~89.5 MP).
    path = _save(Image.new("1", (9500, 9500)), tmp_path / "bomb.png")
    with pytest.raises(BadImageError, match="decompression bomb"):
        load_image(path)


def test_pixel_limit_is_configurable(tmp_path):
    path = _save(Image.new("RGB", (40, 40)), tmp_path / "small.png")
    with pytest.raises(BadImageError, match="pixel"):
        load_image(path, max_pixels=1000)
    assert load_image(path).size == (40, 40)


def test_format_outside_allowlist(tmp_path):
    # A PPM file named .png: the bytes decide, not the extension.
    path = _save(Image.new("RGB", (8, 8), (1, 2, 3)), tmp_path / "fake.png", format="PPM")
    with pytest.raises(BadImageError, match="format PPM is not in the allowed list"):
        load_image(path)


def test_grayscale_and_palette(tmp_path):
    gray = load_image(_save(Image.new("L", (5, 4), 77), tmp_path / "g.png"))
    assert gray.mode == "RGB" and np.asarray(gray)[0, 0].tolist() == [77, 77, 77]
    palette = Image.new("P", (5, 4))
    palette.putpalette([10, 20, 30] * 256)
    rgb = load_image(_save(palette, tmp_path / "p.png"))
    assert np.asarray(rgb)[0, 0].tolist() == [10, 20, 30]


def test_alpha_is_composited_on_white(tmp_path):
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    rgba.putpixel((0, 0), (0, 0, 255, 255))  # one opaque blue pixel
    out = np.asarray(load_image(_save(rgba, tmp_path / "a.png")))
    assert out[1, 1].tolist() == [255, 255, 255]
    assert out[0, 0].tolist() == [0, 0, 255]
    la = Image.new("LA", (3, 3), (0, 128))  # half-transparent black
    assert np.asarray(load_image(_save(la, tmp_path / "la.png")))[0, 0].tolist() == [127, 127, 127]


def test_palette_with_transparency(tmp_path):
    img = Image.new("P", (2, 1))
    img.putpalette([0, 0, 0, 200, 0, 0] + [0] * 762)
    img.putpixel((1, 0), 1)
    out = np.asarray(load_image(_save(img, tmp_path / "pt.png", transparency=0)))
    assert out[0, 0].tolist() == [255, 255, 255] and out[0, 1].tolist() == [200, 0, 0]


def test_cmyk_jpeg(tmp_path):
    out = np.asarray(load_image(_save(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), tmp_path / "c.jpg")))
    r, g, b = out[4, 4].tolist()
    assert r > 200 and g < 60 and b < 60  # pure magenta+yellow ink = red


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 32896, 65535]], dtype=np.uint16)
    path = _save(Image.fromarray(values), tmp_path / "deep.png")
    out = np.asarray(load_image(path))[0, :, 0]
    assert out.tolist() == [0, 128, 255]


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (20, 10), (0, 255, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = _save(img, tmp_path / "rot.jpg", exif=exif.tobytes())
    assert load_image(path).size == (10, 20)
