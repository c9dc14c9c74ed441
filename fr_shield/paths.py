"""Where fr_shield looks for data and keeps its caches, each overridable by environment."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_ENV = "FR_SHIELD_DATA"


def data_root() -> Path:
    """``$FR_SHIELD_DATA``, else the development copy beside the project (``../shared/data``)."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    return PROJECT_ROOT.parent / "shared" / "data"


def default_lfw() -> Path:
    return data_root() / "lfw-deepfunneled"


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fr_shield"


def default_face_cache() -> Path:
    return cache_root() / "faces.json"
