"""Identity-folder datasets and the gallery/probe split of the identification benchmark.

A dataset is a folder with one sub-folder per identity, each holding that person's images::

    lfw-deepfunneled/Aaron_Peirsol/Aaron_Peirsol_0001.jpg     (LFW)
    glint24-aligned/Barack Obama/0.png                        (Glint24)
    facescrub/<identity>/<any name>.<jpg|jpeg|png|webp>       (FaceScrub or your own photos)

Only images directly inside an identity folder count (extensions matched case-insensitively);
hidden files and folders are skipped. Identities and images are sorted in natural order
("2.png" before "10.png"), so a split depends only on the files and the seed.

The split (DESIGN §3):

- **protected identities**: ``n_protected`` identities drawn with ``seed`` among those with at
  least ``min_images`` images (counted before any cap);
- **probes / gallery**: for every kept identity with at least ``min_images_for_probe`` images, the
  image at sorted index ``i`` is a probe when ``i % probe_every == 0`` (the 1st, (k+1)-th, ...),
  the rest is gallery. ``probe_every >= 2`` and ``min_images_for_probe >= 2`` mean index 1 is always
  gallery: no identity with a probe ever loses all its gallery images, and every such identity gets
  at least one probe (even with fewer than ``probe_every`` images);
- identities with fewer images are gallery-only distractors;
- probes of non-protected identities are kept: they form, with the protected ones, the "all" subset.

Optional caps for small runs: ``max_distractor_identities`` keeps a seeded sample of the
non-protected identities; ``max_images_per_identity`` keeps a seeded sample of each identity's
images (then re-sorted). Each random choice uses its own stream derived from ``seed``, so the
protected identities for a seed do not change when a cap is added.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fr_shield.core.errors import DataError

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".webp"})

_LAYOUT_HINT = (
    "put one sub-folder per identity in it, each holding that person's images "
    "(e.g. <root>/Jane_Doe/Jane_Doe_0001.jpg; extensions: "
    + ", ".join(sorted(IMAGE_EXTENSIONS))
    + "), or point data.root at such a folder"
)


def natural_key(name: str) -> tuple:
    """Sort key that orders digit runs by value ("2.png" < "10.png"); ties fall back to the raw name."""
    parts = re.split(r"(\d+)", name)
    key = tuple((0, int(p), "") if p.isdigit() else (1, 0, p.casefold()) for p in parts if p)
    return (key, name)


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def scan_identities(root: str | Path) -> dict[str, list[Path]]:
    """Identity name -> its image paths (natural order), for the identity folders under ``root``.

    Identity folders without any image are left out. Raises ``DataError`` when ``root`` is missing,
    is not a folder, or holds no identity folder with images.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"dataset folder '{root}' does not exist (resolved: {root.resolve()}); {_LAYOUT_HINT}")
    if not root.is_dir():
        raise DataError(f"dataset path '{root}' is not a folder; {_LAYOUT_HINT}")
    identities: dict[str, list[Path]] = {}
    folders = sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: natural_key(p.name),
    )
    for folder in folders:
        images = sorted((p for p in folder.iterdir() if is_image(p)), key=lambda p: natural_key(p.name))
        if images:
            identities[folder.name] = images
    if not identities:
        raise DataError(f"dataset folder '{root}' holds no identity folder with images; {_LAYOUT_HINT}")
    return identities


@dataclass(frozen=True)
class Item:
    """One image of the benchmark: where it is, whose it is, and whether that identity is protected."""

    path: Path
    identity: str
    protected: bool


@dataclass
class Split:
    """Protected identities (sorted), gallery items and probe items (both in identity, then image order)."""

    protected: list[str]
    gallery: list[Item] = field(repr=False)
    probes: list[Item] = field(repr=False)

    @property
    def gallery_labels(self) -> list[str]:
        return [item.identity for item in self.gallery]

    @property
    def probe_labels(self) -> list[str]:
        return [item.identity for item in self.probes]

    @property
    def probe_protected_mask(self) -> list[bool]:
        return [item.protected for item in self.probes]

    @property
    def identities(self) -> list[str]:
        """Every identity kept in the split (protected ones and distractors), in natural order."""
        names = {item.identity for item in self.gallery} | {item.identity for item in self.probes}
        return sorted(names, key=natural_key)

    def summary(self) -> dict[str, int]:
        return {
            "identities": len(self.identities),
            "protected_identities": len(self.protected),
            "gallery": len(self.gallery),
            "protected_gallery": sum(item.protected for item in self.gallery),
            "probes": len(self.probes),
            "protected_probes": sum(item.protected for item in self.probes),
        }


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def make_split(
    identities: Mapping[str, Sequence[str | Path]],
    n_protected: int,
    min_images: int,
    probe_every: int,
    seed: int,
    *,
    min_images_for_probe: int = 2,
    max_distractor_identities: int | None = None,
    max_images_per_identity: int | None = None,
) -> Split:
    """Choose the protected identities and split every identity's images into gallery and probes.

    See the module docstring for the protocol. Raises ``DataError`` when fewer than ``n_protected``
    identities have ``min_images`` images, ``ValueError`` for invalid settings.
    """
    _check_int("n_protected", n_protected, 0)
    _check_int("min_images", min_images, 2)  # a protected identity needs a probe and a gallery image
    _check_int("probe_every", probe_every, 2)  # 1 would turn every image into a probe
    _check_int("seed", seed, -(2**63))
    _check_int("min_images_for_probe", min_images_for_probe, 2)
    if max_distractor_identities is not None:
        _check_int("max_distractor_identities", max_distractor_identities, 0)
    if max_images_per_identity is not None:
        _check_int("max_images_per_identity", max_images_per_identity, 2)

    names = sorted(identities, key=natural_key)
    images = {name: sorted((Path(p) for p in identities[name]), key=lambda p: natural_key(p.name)) for name in names}

    eligible = [name for name in names if len(images[name]) >= min_images]
    if len(eligible) < n_protected:
        raise DataError(
            f"the split needs {n_protected} protected identities with at least {min_images} images each, "
            f"but the dataset has {len(eligible)} such identities (of {len(names)}); "
            "lower data.n_protected or data.min_images, or use a larger dataset"
        )
    # Separate seeded streams (string seeds hash with SHA-512: stable across runs and platforms).
    chosen = random.Random(f"{seed}:protected").sample(eligible, n_protected)
    protected = sorted(chosen, key=natural_key)
    protected_set = set(protected)

    distractors = [name for name in names if name not in protected_set]
    if max_distractor_identities is not None and len(distractors) > max_distractor_identities:
        kept = set(random.Random(f"{seed}:distractors").sample(distractors, max_distractor_identities))
        distractors = [name for name in distractors if name in kept]
    kept_names = sorted(protected_set | set(distractors), key=natural_key)

    gallery: list[Item] = []
    probes: list[Item] = []
    for name in kept_names:
        paths = images[name]
        if max_images_per_identity is not None and len(paths) > max_images_per_identity:
            sample = random.Random(f"{seed}:images:{name}").sample(paths, max_images_per_identity)
            paths = sorted(sample, key=lambda p: natural_key(p.name))
        is_protected = name in protected_set
        can_probe = len(paths) >= min_images_for_probe
        for index, path in enumerate(paths):
            item = Item(path=path, identity=name, protected=is_protected)
            (probes if can_probe and index % probe_every == 0 else gallery).append(item)
    return Split(protected=protected, gallery=gallery, probes=probes)


@dataclass
class DataConfig:
    """Settings of the benchmark data; usable as a Hydra structured config.

    ``root`` defaults to "???" (OmegaConf's marker for a required value). The other defaults suit
    an LFW-sized dataset (158 LFW identities have >= 10 images); FaceScrub-sized runs in the study
    protected 24 identities.
    """

    root: str = "???"
    n_protected: int = 24
    min_images: int = 10
    probe_every: int = 10
    seed: int = 0
    min_images_for_probe: int = 2
    max_distractor_identities: int | None = None
    max_images_per_identity: int | None = None


def load_split(config: DataConfig) -> Split:
    """Scan ``config.root`` and split it with ``config``'s settings."""
    return make_split(
        scan_identities(config.root),
        n_protected=config.n_protected,
        min_images=config.min_images,
        probe_every=config.probe_every,
        seed=config.seed,
        min_images_for_probe=config.min_images_for_probe,
        max_distractor_identities=config.max_distractor_identities,
        max_images_per_identity=config.max_images_per_identity,
    )
