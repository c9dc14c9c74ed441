"""Reading a user's photo with its metadata, and writing the protected one back, atomically.

What is kept: EXIF (orientation reset to 1 once applied to the pixels; the location block, GPS
IFD 0x8825, removed unless asked to keep it; the embedded thumbnail dropped, since it would show
the unprotected face), the ICC colour profile (unless the colour space changed), XMP (its GPS
fields removed likewise), DPI, JPEG comments and IPTC (APP13), PNG text chunks. Formats: JPEG in
-> JPEG out at quality 95 with 4:4:4 chroma; PNG -> PNG (8-bit); WebP -> lossless WebP.

Files with no face can be copied with their pixels untouched: the GPS block is then cut out of
the container (JPEG segments, PNG chunks, WebP RIFF chunks) without re-encoding anything.

Every write goes to a temporary file beside the target (``.NAME.fr-shield-part-PID``), is
flushed to disk, then renamed over the target: a reader never sees half a file, and an
interrupted run leaves at most a temporary file, which the next run removes.
"""

from __future__ import annotations

import io
import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, PngImagePlugin

from fr_shield.core.errors import ImageError
from fr_shield.core.imageio import SUPPORTED_SUFFIXES, load_rgb, to_uint8

GPS_IFD = 0x8825
ORIENTATION = 0x0112
JPEG_QUALITY = 95
FORMATS = {"JPEG": "JPEG", "MPO": "JPEG", "PNG": "PNG", "WEBP": "WEBP"}
XMP_KEY = "XML:com.adobe.xmp"
# PNG text chunks that carry a copy of the EXIF block (ImageMagick, exiftool): GPS may hide there.
RAW_EXIF_TEXT = ("Raw profile type exif", "Raw profile type APP1")


class UnsupportedFormat(ImageError):
    """A readable image in a format fr_shield does not write (GIF, TIFF, BMP, animations, ...)."""


class TooSmall(ImageError):
    """A valid image too small to hold a face (1 x 1, say): it has no face to protect."""


@dataclass
class Photo:
    path: Path
    format: str  # JPEG | PNG | WEBP: the format the output is written in
    rgb: np.ndarray  # H x W x 3 float32 in [0, 1], upright; transparency composited on white
    alpha: np.ndarray | None = None  # H x W uint8 where the source has transparency
    straight_rgb: np.ndarray | None = None  # the un-composited colours, where there is alpha
    exif: Image.Exif | None = None
    icc_profile: bytes | None = None
    xmp: bytes | None = None
    dpi: tuple | None = None
    comment: bytes | None = None
    png_text: dict[str, str] = field(default_factory=dict)
    jpeg_segments: list[tuple[int, bytes]] = field(default_factory=list)  # (marker, payload) kept raw
    notes: list[str] = field(default_factory=list)
    had_gps: bool = False


def _as_bytes(value) -> bytes | None:
    if value is None:
        return None
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


_XMP_GPS_ATTR = re.compile(rb"\s[\w.-]+:GPS\w*\s*=\s*(\"[^\"]*\"|'[^']*')")
_XMP_GPS_ELEMENT = re.compile(rb"<([\w.-]+:GPS\w*)\b[^>]*?(/>|>.*?</\1\s*>)", re.DOTALL)
_XMP_ORIENTATION_ATTR = re.compile(rb"(tiff:Orientation\s*=\s*[\"'])\d([\"'])")
_XMP_ORIENTATION_ELEMENT = re.compile(rb"(<tiff:Orientation>)\s*\d\s*(</tiff:Orientation>)")


def xmp_has_gps(xmp: bytes | None) -> bool:
    return bool(xmp) and (bool(_XMP_GPS_ATTR.search(xmp)) or bool(_XMP_GPS_ELEMENT.search(xmp)))


def clean_xmp(xmp: bytes | None, keep_gps: bool, upright: bool) -> bytes | None:
    """XMP without GPS fields (unless kept), with tiff:Orientation set to 1 where pixels were turned."""
    if not xmp:
        return xmp
    if not keep_gps:
        xmp = _XMP_GPS_ELEMENT.sub(b"", _XMP_GPS_ATTR.sub(b"", xmp))
    if upright:
        xmp = _XMP_ORIENTATION_ELEMENT.sub(rb"\g<1>1\g<2>", _XMP_ORIENTATION_ATTR.sub(rb"\g<1>1\g<2>", xmp))
    return xmp


def clean_exif(exif: Image.Exif | None, keep_gps: bool, upright: bool) -> bytes | None:
    """EXIF bytes (``Exif\\0\\0`` + TIFF) without GPS (unless kept) and orientation 1.

    Pillow writes IFD0 and its sub-IFDs but not IFD1, so the embedded thumbnail (an unprotected
    copy of the photo) is dropped.
    """
    if exif is None or len(exif) == 0:
        return None
    copy = Image.Exif()
    copy.load(exif.tobytes())
    for ifd in (ExifTags.IFD.Exif, ExifTags.IFD.Interop):  # load the sub-IFDs so they are written
        if ifd in copy:
            copy.get_ifd(ifd)
    if GPS_IFD in copy:
        if keep_gps:
            copy.get_ifd(GPS_IFD)
        else:
            del copy[GPS_IFD]
    if upright and ORIENTATION in copy:
        copy[ORIENTATION] = 1
    return copy.tobytes()


def read_photo(path: str | Path) -> Photo:
    """Pixels (upright, RGB) and metadata of a JPEG, PNG or WebP; ``ImageError`` for anything else."""
    path = Path(path)
    try:
        rgb = load_rgb(path)  # clear ImageErrors: empty, truncated, not an image, too large, too small
    except ImageError:
        try:
            with Image.open(path) as image:
                small = min(image.size) < 2
        except Exception:  # noqa: BLE001 - any failure here means: report the original error
            small = False
        if small:
            raise TooSmall(f"{path}: {image.size[0]}x{image.size[1]} pixels, too small to hold a face") from None
        raise
    with Image.open(path) as image:
        if image.format not in FORMATS:
            raise UnsupportedFormat(f"{path}: {image.format} images are not supported (JPEG, PNG and WebP are)")
        if getattr(image, "n_frames", 1) > 1 and image.format != "MPO":
            raise UnsupportedFormat(f"{path}: animated {image.format} ({image.n_frames} frames) is not supported")
        photo = Photo(path, FORMATS[image.format], rgb)
        info = image.info
        exif = image.getexif()
        photo.exif = exif if len(exif) else None
        photo.had_gps = GPS_IFD in exif
        photo.dpi = info.get("dpi")
        photo.comment = _as_bytes(info.get("comment"))
        photo.xmp = _as_bytes(info.get("xmp") or info.get(XMP_KEY))
        photo.had_gps = photo.had_gps or xmp_has_gps(photo.xmp)
        mode = image.mode
        if mode in ("RGB", "RGBA", "P", "PA", "RGBX", "RGBa"):
            photo.icc_profile = info.get("icc_profile")
        elif info.get("icc_profile"):
            photo.notes.append(f"{mode} colour profile dropped (output is RGB)")
        if mode == "CMYK":
            photo.notes.append("CMYK converted to RGB")
        elif mode in ("L", "LA", "1"):
            photo.notes.append("grayscale written as RGB")
        elif mode in ("I;16", "I;16B", "I;16L", "I"):
            photo.notes.append("16-bit written as 8-bit RGB")
        elif mode in ("P", "PA"):
            photo.notes.append("palette image written as RGB" + ("A" if "transparency" in info or mode == "PA" else ""))
        if image.format == "PNG":
            photo.png_text = {k: v for k, v in getattr(image, "text", {}).items() if k != XMP_KEY}
            if any(k in RAW_EXIF_TEXT for k in photo.png_text):
                photo.had_gps = True  # cannot tell cheaply; treated as possible location data
        if image.format in ("JPEG", "MPO"):
            photo.jpeg_segments = [(0xFFED, payload) for marker, payload in image.applist if marker == "APP13"]
        if mode in ("RGBA", "LA", "PA", "RGBa") or (mode == "P" and "transparency" in info):
            upright = ImageOps.exif_transpose(image)
            rgba = np.asarray(upright.convert("RGBA"))
            photo.alpha = rgba[..., 3].copy()
            photo.straight_rgb = rgba[..., :3].astype(np.float32) / 255.0
    return photo


def _insert_jpeg_segments(data: bytes, segments: list[tuple[int, bytes]]) -> bytes:
    """Insert raw APPn segments after the APPn/COM segments that follow SOI."""
    if not segments:
        return data
    position = 2
    while position + 4 <= len(data) and data[position] == 0xFF and (0xE0 <= data[position + 1] <= 0xEF or data[position + 1] == 0xFE):
        position += 2 + struct.unpack(">H", data[position + 2:position + 4])[0]
    extra = b"".join(struct.pack(">HH", marker, len(payload) + 2) + payload for marker, payload in segments
                     if len(payload) + 2 <= 0xFFFF)
    return data[:position] + extra + data[position:]


def encode_protected(photo: Photo, rgb: np.ndarray, keep_gps: bool) -> bytes:
    """The protected photo as bytes in the photo's own format, with its metadata (see module doc)."""
    pixels = to_uint8(rgb)
    if photo.alpha is not None:
        # Only the protection's change (in 8-bit levels) is added to the un-composited colours;
        # the alpha channel is kept as it was.
        before = to_uint8(photo.rgb).astype(np.int16)
        straight = to_uint8(photo.straight_rgb if photo.straight_rgb is not None else photo.rgb).astype(np.int16)
        changed = np.clip(straight + (pixels.astype(np.int16) - before), 0, 255).astype(np.uint8)
        image = Image.fromarray(np.dstack([changed, photo.alpha]), "RGBA")
    else:
        image = Image.fromarray(pixels, "RGB")
    exif = clean_exif(photo.exif, keep_gps, upright=True)
    xmp = clean_xmp(photo.xmp, keep_gps, upright=True)
    buffer = io.BytesIO()
    options: dict = {}
    if exif:
        options["exif"] = exif
    if photo.icc_profile:
        options["icc_profile"] = photo.icc_profile
    if photo.dpi:
        options["dpi"] = tuple(float(v) for v in photo.dpi)
    if photo.format == "JPEG":
        if xmp:
            options["xmp"] = xmp
        if photo.comment:
            options["comment"] = photo.comment
        image.save(buffer, "JPEG", quality=JPEG_QUALITY, subsampling=0, **options)
        return _insert_jpeg_segments(buffer.getvalue(), photo.jpeg_segments)
    if photo.format == "PNG":
        text = PngImagePlugin.PngInfo()
        for key, value in photo.png_text.items():
            if key in RAW_EXIF_TEXT and not keep_gps:
                continue
            text.add_text(key, str(value))
        if xmp:
            text.add_itxt(XMP_KEY, xmp.decode("utf-8", "replace"))
        image.save(buffer, "PNG", pnginfo=text, **options)
        return buffer.getvalue()
    if xmp:
        options["xmp"] = xmp
    options.pop("dpi", None)
    image.save(buffer, "WEBP", lossless=True, quality=100, method=4, **options)
    return buffer.getvalue()


def jpeg_round_trip(rgb_uint8: np.ndarray) -> np.ndarray:
    """What ``encode_protected`` makes of these pixels as a JPEG (same quality and chroma), decoded."""
    buffer = io.BytesIO()
    Image.fromarray(rgb_uint8, "RGB").save(buffer, "JPEG", quality=JPEG_QUALITY, subsampling=0)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"))


# --------------------------------------------------------------------------- GPS removal without re-encoding


def _strip_jpeg(data: bytes, exif: bytes | None, xmp: bytes | None) -> bytes:
    out, position = [data[:2]], 2
    while position + 4 <= len(data) and data[position] == 0xFF:
        marker = data[position + 1]
        if marker == 0xDA:  # start of scan: the rest is image data
            break
        length = struct.unpack(">H", data[position + 2:position + 4])[0]
        segment = data[position:position + 2 + length]
        payload = segment[4:]
        if marker == 0xE1 and payload.startswith(b"Exif\x00\x00"):
            segment = struct.pack(">HH", 0xFFE1, len(exif) + 2) + exif if exif else b""
        elif marker == 0xE1 and payload.startswith(b"http://ns.adobe.com/xap/1.0/\x00") and xmp is not None:
            body = b"http://ns.adobe.com/xap/1.0/\x00" + xmp
            segment = struct.pack(">HH", 0xFFE1, len(body) + 2) + body
        out.append(segment)
        position += 2 + length
    out.append(data[position:])
    return b"".join(out)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _strip_png(data: bytes, exif: bytes | None, xmp: bytes | None) -> bytes:
    out, position = [data[:8]], 8
    while position + 8 <= len(data):
        length = struct.unpack(">I", data[position:position + 4])[0]
        kind = data[position + 4:position + 8]
        chunk = data[position:position + 12 + length]
        body = chunk[8:8 + length]
        if kind == b"eXIf":
            chunk = _png_chunk(b"eXIf", exif[6:]) if exif else b""
        elif kind in (b"tEXt", b"zTXt", b"iTXt"):
            keyword = body.split(b"\x00", 1)[0].decode("latin-1")
            if keyword in RAW_EXIF_TEXT:
                chunk = b""
            elif keyword == XMP_KEY and kind == b"iTXt" and xmp is not None:
                chunk = _png_chunk(b"iTXt", XMP_KEY.encode() + b"\x00\x00\x00\x00\x00" + xmp)
        out.append(chunk)
        position += 12 + length
    return b"".join(out)


def _strip_webp(data: bytes, exif: bytes | None, xmp: bytes | None) -> bytes:
    chunks, position = [], 12
    while position + 8 <= len(data):
        kind = data[position:position + 4]
        length = struct.unpack("<I", data[position + 4:position + 8])[0]
        body = data[position + 8:position + 8 + length]
        if kind == b"EXIF":
            body = exif[6:] if exif else None
        elif kind == b"XMP " and xmp is not None:
            body = xmp
        if body is not None:
            chunks.append(kind + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) % 2 else b""))
        position += 8 + length + (length % 2)
    if chunks and chunks[0][:4] == b"VP8X" and not exif:
        flags = chunks[0][8] & ~0x08  # clear the EXIF flag
        chunks[0] = chunks[0][:8] + bytes([flags]) + chunks[0][9:]
    payload = b"WEBP" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(payload)) + payload


def without_gps(photo: Photo, data: bytes) -> bytes:
    """The original file's bytes with the location removed from its metadata, pixels untouched."""
    if not photo.had_gps:
        return data
    exif = clean_exif(photo.exif, keep_gps=False, upright=False)
    xmp = clean_xmp(photo.xmp, keep_gps=False, upright=False)
    if photo.format == "JPEG":
        return _strip_jpeg(data, exif, xmp)
    if photo.format == "PNG":
        return _strip_png(data, exif, xmp)
    return _strip_webp(data, exif, xmp)


def is_photo_name(path: Path) -> bool:
    return path.suffix.lower() in SUPPORTED_SUFFIXES
