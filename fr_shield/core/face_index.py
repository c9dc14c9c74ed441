"""Detected faces of a set of photos, cached on disk keyed by the photo's bytes.

Detection is the slow, repeated part of every benchmark run; landmarks depend only on the
photo's content and the detector settings, so they are stored once per content hash.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from fr_shield.core.detect import DetectorConfig, Face, FaceDetector
from fr_shield.core.files import write_atomic
from fr_shield.core.imageio import load_rgb


def content_key(path: Path, config: DetectorConfig) -> str:
    digest = hashlib.sha1(Path(path).read_bytes())
    digest.update(json.dumps(asdict(config), sort_keys=True).encode())
    return digest.hexdigest()


class FaceIndex:
    """``faces(path)`` -> the photo's faces, detected once and remembered in ``cache_file``."""

    def __init__(self, cache_file: Path | None, detector: FaceDetector | None = None):
        self.detector = detector or FaceDetector()
        self.cache_file = Path(cache_file) if cache_file else None
        self._entries: dict[str, list[list[float]]] = {}
        if self.cache_file and self.cache_file.exists():
            self._entries = json.loads(self.cache_file.read_text())
        self._dirty = False

    def faces(self, path: Path, image: np.ndarray | None = None) -> list[Face]:
        key = content_key(path, self.detector.config)
        if key not in self._entries:
            image = load_rgb(path) if image is None else image
            found = self.detector(image)
            self._entries[key] = [[*face.box.tolist(), *face.landmarks.ravel().tolist(), face.score] for face in found]
            self._dirty = True
        return [
            Face(np.array(row[:4], np.float32), np.array(row[4:14], np.float32).reshape(5, 2), row[14])
            for row in self._entries[key]
        ]

    def save(self) -> None:
        if self.cache_file and self._dirty:
            write_atomic(self.cache_file, json.dumps(self._entries).encode())
            self._dirty = False

