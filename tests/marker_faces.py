"""A stand-in for YuNet where the behaviour under test is file handling, not detection.

``paint_face`` draws a bright textured square (the "face") and ``marker_detector`` finds every
such square, with the five ArcFace-template landmarks spread over it. It needs no weights, so
tests that use it run in the fast suite (``-m "not real"``); the real detector is tested with
real photos in the tests marked ``real``.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from fr_shield.core.align import ARCFACE_112
from fr_shield.core.detect import Face

MIN_SIDE = 40  # smaller bright patches are not faces
LEVEL = 0.8  # mean brightness (after a 9 px box blur) above which a pixel belongs to a face


def paint_face(image: Image.Image, x: int, y: int, side: int = 110, seed: int = 0) -> Image.Image:
    """``image`` (RGB) with a bright textured ``side`` x ``side`` square whose top-left corner is (x, y)."""
    texture = np.random.default_rng(seed).integers(215, 256, (side, side, 3), dtype=np.uint8)
    image.paste(Image.fromarray(texture), (x, y))
    return image


def face_photo(size: tuple[int, int] = (250, 250), seed: int = 0) -> Image.Image:
    """A photo-like RGB image: dark texture with one marker face of 110 px near the centre."""
    width, height = size
    background = np.random.default_rng(seed + 1).integers(20, 120, (height, width, 3), dtype=np.uint8)
    return paint_face(Image.fromarray(background), (width - 110) // 2, (height - 110) // 2, seed=seed)


def marker_detector(image: np.ndarray) -> list[Face]:
    """Every bright square of at least ``MIN_SIDE`` pixels, largest first (``FaceDetector``'s order)."""
    rgb = np.asarray(image, np.float32)
    if np.asarray(image).dtype == np.uint8:
        rgb = rgb / 255.0
    brightness = cv2.blur(rgb.mean(axis=2), (9, 9))
    _, _, stats, _ = cv2.connectedComponentsWithStats((brightness > LEVEL).astype(np.uint8))
    faces = []
    for x, y, w, h, _ in stats[1:]:
        if min(w, h) >= MIN_SIDE:
            landmarks = ARCFACE_112 / 112.0 * np.array([w, h]) + np.array([x, y])
            faces.append(Face(np.array([x, y, w, h], np.float32), landmarks.astype(np.float32), 1.0))
    return sorted(faces, key=lambda face: -face.area)
