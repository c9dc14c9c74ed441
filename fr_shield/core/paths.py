"""Where fr_shield finds its configs and data and keeps its caches, each overridable by environment."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

DATA_ENV = "FR_SHIELD_DATA"
CONF_PACKAGE = "pkg://fr_shield.conf"  # Hydra's search path: conf/ ships inside the package


def conf_dir() -> Path:
    """The Hydra config tree: ``conf/`` in a source checkout, ``fr_shield/conf`` in a wheel."""
    return Path(str(resources.files("fr_shield.conf")))


def source_root() -> Path | None:
    """The project checkout this package runs from, or None when it is installed as a wheel."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() and (root / "fr_shield").is_dir() else None


def data_root() -> Path:
    """``$FR_SHIELD_DATA``, else the development copy beside the checkout (``../shared/data``)."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    root = source_root()
    return (root.parent if root else Path.cwd()) / "shared" / "data"


def default_lfw() -> Path:
    return data_root() / "lfw-deepfunneled"


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/fr_shield`` (default ``~/.cache/fr_shield``): weights, faces, protected photos."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fr_shield"


def default_face_cache() -> Path:
    return cache_root() / "faces.json"


def default_tracking_db() -> Path:
    """The MLflow store when none is configured: ``mlflow.db`` in the checkout, else in the working folder."""
    return (source_root() or Path.cwd()) / "mlflow.db"
