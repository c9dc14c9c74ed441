"""Reading photos into RGB float arrays, with clear errors for anything we cannot use.

Every reader in fr_shield goes through ``load_rgb``: EXIF orientation applied, grayscale,
palette, CMYK and alpha images turned into RGB, 16-bit images scaled properly, and each kind
of bad file (empty, truncated, not an image, absurdly large) reported as an ``ImageError``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fr_shield.core.errors import ImageError

SUPPORTED_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
# PIL's own bomb guard stops at ~179 MP with an opaque message; we name the limit instead.
MAX_PIXELS = 200_000_000


def _to_float_rgb(image: Image.Image) -> np.ndarray:
    """Any PIL mode -> H x W x 3 float32 in [0, 1]."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grayscale: PIL keeps the raw integers; scale by the format's full range.
        values = np.asarray(image, dtype=np.float32)
        peak = 65535.0 if image.mode != "I" or values.max() > 255 else 255.0
        gray = np.clip(values / peak, 0.0, 1.0)
        return np.repeat(gray[..., None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels are composited on white, as a viewer shows them.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    rgb = image.convert("RGB")
    return np.asarray(rgb, dtype=np.float32) / 255.0


def load_rgb(path: str | Path) -> np.ndarray:
    """The photo at ``path`` as an H x W x 3 float32 RGB array in [0, 1], upright."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise ImageError(
                        f"{path}: {width}x{height} is {width * height / 1e6:.0f} MP, over the "
                        f"{MAX_PIXELS / 1e6:.0f} MP limit"
                    )
                image.load()  # decode now, so a truncated file fails here and not later
                image = ImageOps.exif_transpose(image)
                array = _to_float_rgb(image)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file PIL can read (supported: JPEG, PNG, WebP)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{path}: image too large to decode safely") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"{path}: corrupt or truncated image ({error})") from None
    if min(array.shape[:2]) < 2:
        raise ImageError(f"{path}: image is {array.shape[1]}x{array.shape[0]} pixels, too small to hold a face")
    return array


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Float [0, 1] -> uint8 with rounding (not truncation, which darkens every pixel)."""
    return np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)
