"""Reading photos: every odd kind of file gives an RGB array or a clear ImageError."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fr_shield.core.errors import ImageError
from fr_shield.core.imageio import load_rgb, to_uint8


def _save(path, array, mode=None, **kwargs):
    Image.fromarray(array, mode).save(path, **kwargs) if mode else Image.fromarray(array).save(path, **kwargs)
    return path


def test_rgb_jpeg_roundtrip(tmp_path, rng):
    array = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    image = load_rgb(_save(tmp_path / "a.png", array))
    assert image.shape == (40, 30, 3) and image.dtype == np.float32
    assert np.array_equal(to_uint8(image), array)


def test_grayscale_rgba_16bit_and_cmyk(tmp_path, rng):
    gray = rng.integers(0, 256, (20, 20), dtype=np.uint8)
    assert load_rgb(_save(tmp_path / "g.png", gray)).shape == (20, 20, 3)
    rgba = rng.integers(0, 256, (20, 20, 4), dtype=np.uint8)
    rgba[..., 3] = 0  # fully transparent -> white
    assert np.allclose(load_rgb(_save(tmp_path / "t.png", rgba)), 1.0)
    deep = np.full((20, 20), 65535 // 2, dtype=np.uint16)
    loaded = load_rgb(_save(tmp_path / "d.png", deep))
    assert np.allclose(loaded, 0.5, atol=1e-3)
    Image.new("CMYK", (20, 20), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    red = load_rgb(tmp_path / "c.jpg").mean(axis=(0, 1))
    assert red[0] > 0.8 and red[1] < 0.2


def test_exif_orientation_applied(tmp_path):
    array = np.zeros((10, 30, 3), dtype=np.uint8)
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    image.save(tmp_path / "r.jpg", exif=exif)
    assert load_rgb(tmp_path / "r.jpg").shape == (30, 10, 3)


@pytest.mark.parametrize(
    "content, message",
    [(b"", "empty"), (b"this is text, not a picture", "not an image"), (None, "corrupt or truncated")],
)
def test_bad_files_give_clear_errors(tmp_path, rng, content, message):
    path = tmp_path / "bad.jpg"
    if content is None:  # a JPEG cut in half
        _save(tmp_path / "full.jpg", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), quality=95)
        data = (tmp_path / "full.jpg").read_bytes()
        content = data[: len(data) // 2]
    path.write_bytes(content)
    with pytest.raises(ImageError, match=message):
        load_rgb(path)


def test_missing_and_tiny(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_rgb(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="too small"):
        load_rgb(_save(tmp_path / "one.png", np.zeros((1, 1, 3), np.uint8)))
