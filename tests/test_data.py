"""Identity-folder scanning and the seeded gallery/probe split."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fr_shield.core.errors import DataError
from fr_shield.study.data import DataConfig, load_split, make_split, natural_key, scan_identities


def _png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(path)


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """12 identities with 1..12 images; mixed naming styles and extensions."""
    root = tmp_path / "faces"
    for n in range(1, 13):
        name = f"Person {n}" if n % 2 else f"Person_{n}"
        for i in range(n):
            ext = [".png", ".PNG", ".jpg", ".JPEG", ".webp"][i % 5]
            _png(root / name / f"{i}{ext}")
    return root


def _fake(counts: dict[str, int]) -> dict[str, list[Path]]:
    return {name: [Path(name) / f"{i}.png" for i in range(n)] for name, n in counts.items()}


def test_scan_finds_images_in_natural_order(dataset: Path):
    (dataset / "Person 3" / "notes.txt").write_text("not an image")
    (dataset / "Person 3" / ".hidden.png").write_bytes(b"")
    (dataset / "empty").mkdir()
    (dataset / "stray.png").write_bytes(b"")  # not inside an identity folder
    identities = scan_identities(dataset)
    assert len(identities) == 12 and "empty" not in identities
    assert list(identities) == sorted(identities, key=natural_key)
    order = list(identities)
    assert order.index("Person 3") < order.index("Person 11") and order.index("Person_2") < order.index("Person_10")
    assert [p.name for p in identities["Person 3"]] == ["0.png", "1.PNG", "2.jpg"]
    assert [p.stem for p in identities["Person_12"]] == [str(i) for i in range(12)]  # 2 before 10


def test_scan_missing_and_empty_folders(tmp_path: Path):
    with pytest.raises(DataError, match="does not exist.*one sub-folder per identity"):
        scan_identities(tmp_path / "nowhere")
    (tmp_path / "empty" / "Somebody").mkdir(parents=True)
    with pytest.raises(DataError, match="no identity folder with images"):
        scan_identities(tmp_path / "empty")
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(DataError, match="not a folder"):
        scan_identities(tmp_path / "file.png")


def test_split_protocol(dataset: Path):
    split = make_split(scan_identities(dataset), n_protected=3, min_images=6, probe_every=3, seed=0)
    assert len(split.protected) == 3
    by_identity = {}
    for item in split.gallery + split.probes:
        by_identity.setdefault(item.identity, []).append(item)
        assert item.protected == (item.identity in split.protected)
    assert len(by_identity) == 12  # no caps: every identity kept
    for name in split.protected:
        assert int(name.split()[-1].split("_")[-1]) >= 6
    probes = {name: [p.path.stem for p in split.probes if p.identity == name] for name in by_identity}
    gallery = {name: [p.path.stem for p in split.gallery if p.identity == name] for name in by_identity}
    assert probes["Person 1"] == [] and gallery["Person 1"] == ["0"]  # single image: distractor only
    assert probes["Person_2"] == ["0"] and gallery["Person_2"] == ["1"]
    assert probes["Person 7"] == ["0", "3", "6"] and gallery["Person 7"] == ["1", "2", "4", "5"]
    # every identity with a probe keeps gallery images; non-protected probes count too
    assert all(gallery[name] for name in probes if probes[name])
    assert any(not p.protected for p in split.probes)
    assert split.probe_protected_mask == [p.protected for p in split.probes]
    summary = split.summary()
    assert summary["gallery"] + summary["probes"] == sum(range(1, 13))


def test_split_is_seeded():
    identities = _fake({f"id{i}": 5 + i % 3 for i in range(30)})
    a = make_split(identities, n_protected=5, min_images=5, probe_every=2, seed=1)
    b = make_split(dict(reversed(list(identities.items()))), n_protected=5, min_images=5, probe_every=2, seed=1)
    c = make_split(identities, n_protected=5, min_images=5, probe_every=2, seed=2)
    assert a == b  # same seed, same split, whatever the input order
    assert a.protected != c.protected
    # caps do not change which identities a seed protects
    d = make_split(identities, 5, 5, 2, seed=1, max_distractor_identities=3, max_images_per_identity=3)
    assert d.protected == a.protected
    assert len(d.identities) == 8
    for name in d.identities:
        items = [i for i in d.gallery + d.probes if i.identity == name]
        assert len(items) == 3 and any(i in d.gallery for i in items) and any(i in d.probes for i in items)
    assert d == make_split(identities, 5, 5, 2, seed=1, max_distractor_identities=3, max_images_per_identity=3)


def test_protected_identities_never_lose_all_gallery_images():
    identities = _fake({f"id{i}": n for i, n in enumerate([2, 3, 4, 5, 9, 10, 11, 40])})
    for probe_every in (2, 3, 10, 50):
        for seed in range(5):
            split = make_split(identities, n_protected=8, min_images=2, probe_every=probe_every, seed=seed)
            for name in split.protected:
                assert any(i.identity == name for i in split.gallery)
                assert any(i.identity == name for i in split.probes)


def test_split_errors():
    identities = _fake({"a": 10, "b": 10, "c": 3})
    with pytest.raises(DataError, match="needs 3 protected identities with at least 5 images.*has 2 such"):
        make_split(identities, n_protected=3, min_images=5, probe_every=2, seed=0)
    with pytest.raises(ValueError, match="probe_every"):
        make_split(identities, n_protected=1, min_images=5, probe_every=1, seed=0)
    with pytest.raises(ValueError, match="min_images"):
        make_split(identities, n_protected=1, min_images=1, probe_every=2, seed=0)


def test_data_config_and_load_split(dataset: Path):
    config = DataConfig(root=str(dataset), n_protected=2, min_images=10, probe_every=5, seed=3)
    split = load_split(config)
    assert set(split.protected) <= {"Person_10", "Person 11", "Person_12"}
    with pytest.raises(DataError, match="does not exist"):
        load_split(DataConfig())


def test_scan_shared_glint24(glint_root: Path):
    identities = scan_identities(glint_root)
    assert len(identities) == 24
    first = next(iter(identities.values()))
    assert [p.name for p in first[:3]] == ["0.png", "1.png", "2.png"]
