"""Face detection with five landmarks: OpenCV's YuNet on the full-resolution photo.

YuNet returns, per face, a box, five landmarks (the eye on the image's left first, then the
other eye, nose tip, mouth corner on the image's left, the other mouth corner) and a score. The
order matches the ArcFace template in ``fr_shield.models.spec``, so landmarks feed alignment
directly. Very large photos are detected on a downscaled copy (YuNet's cost grows with the
pixel count) and the coordinates are scaled back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from fr_shield.core import weights


@dataclass(frozen=True)
class DetectorConfig:
    score_threshold: float = 0.6  # YuNet's own default (OpenCV sample)
    nms_threshold: float = 0.3
    max_side: int = 1600  # detect on a copy whose longer side is at most this many pixels
    min_face: int = 20  # faces smaller than this (pixels, box width) are ignored


@dataclass(frozen=True)
class Face:
    box: np.ndarray  # x, y, width, height in photo pixels
    landmarks: np.ndarray  # 5 x 2 (x, y) in photo pixels
    score: float

    @property
    def area(self) -> float:
        return float(self.box[2] * self.box[3])


class FaceDetector:
    """Finds every face in an RGB photo (H x W x 3, float in [0, 1] or uint8)."""

    def __init__(self, config: DetectorConfig | None = None, cache_dir: str | Path | None = None):
        self.config = config or DetectorConfig()
        model_path = weights.path("yunet", cache_dir)
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # OpenCV 5 warns on every create
        self._net = cv2.FaceDetectorYN.create(
            str(model_path), "", (320, 320), self.config.score_threshold, self.config.nms_threshold, 5000
        )

    def __call__(self, image: np.ndarray) -> list[Face]:
        if image.dtype != np.uint8:
            image = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
        height, width = image.shape[:2]
        scale = min(1.0, self.config.max_side / max(height, width))
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        if scale < 1.0:
            bgr = cv2.resize(bgr, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
        self._net.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, rows = self._net.detect(bgr)
        faces = []
        for row in [] if rows is None else rows:
            box = row[:4] / scale
            if box[2] < self.config.min_face:
                continue
            landmarks = row[4:14].reshape(5, 2) / scale
            faces.append(Face(box.astype(np.float32), landmarks.astype(np.float32), float(row[14])))
        # Largest first: a stable order, and "first face" means the most prominent one.
        return sorted(faces, key=lambda face: -face.area)


def central_face(faces: list[Face], image_shape: tuple[int, ...]) -> Face | None:
    """The face nearest the photo's centre (datasets like LFW centre the labelled person)."""
    if not faces:
        return None
    centre = np.array([image_shape[1] / 2.0, image_shape[0] / 2.0])
    return min(faces, key=lambda face: float(np.linalg.norm(face.landmarks.mean(axis=0) - centre)))
