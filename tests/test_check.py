"""``fr-shield check``: pairing, per-model and per-transform verdicts, and the offline HTML report."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil

import numpy as np
import pytest
from marker_faces import face_photo, marker_detector
from PIL import Image
from tiny_models import TinyFR

from fr_shield.app import check
from fr_shield.app.check import (
    CHECK_TRANSFORMS,
    Checker,
    get_transforms,
    run_check,
)
from fr_shield.core.detect import FaceDetector

FACE_PHOTO = "George_W_Bush/George_W_Bush_0001.jpg"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def detector():
    """Pairing, verdicts and the report do not depend on the detector: a marker detector, no weights
    (the real YuNet and models: ``test_verdict_flips_from_matched_to_protected_on_a_real_photo``)."""
    return marker_detector


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """original/ and protected/ trees: a copy, a changed photo, a no-face photo, a broken file, a missing one."""
    root = tmp_path_factory.mktemp("check")
    original, protected = root / "original", root / "protected"
    (original / "sub").mkdir(parents=True)
    (protected / "sub").mkdir(parents=True)
    face = face_photo()
    face.save(original / "same.jpg", quality=95)
    shutil.copyfile(original / "same.jpg", protected / "same.jpg")
    face.save(original / "sub" / "noisy.png")
    noisy = np.asarray(face, np.float32) + np.random.default_rng(0).normal(0, 25, (250, 250, 3))
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(protected / "sub" / "noisy.png")
    flat = Image.new("RGB", (200, 150), (90, 140, 200))
    flat.save(original / "flat.jpg")
    flat.save(protected / "flat.jpg")
    face.save(original / "broken.jpg")
    (protected / "broken.jpg").write_bytes(b"not a jpeg")
    face.save(original / "unprotected_only.jpg")
    return original, protected


def test_transforms_cover_the_issue():
    labels = [t.label for t in CHECK_TRANSFORMS]
    assert labels[:3] == ["none", "jpeg_q75", "resize_x0.5"]
    assert {f"median_k{k}" for k in (3, 5, 7, 9, 11)} <= set(labels) and {f"box_k{k}" for k in (3, 5, 7, 9, 11)} <= set(labels)
    with pytest.raises(ValueError):
        get_transforms(["median_k13"])


def test_check_folders_and_report(folders, detector, tmp_path):
    original, protected = folders
    models = [TinyFR(0), TinyFR(1, size=40, name="tiny40")]
    checker = Checker(models, detector, get_transforms(["none", "jpeg_q75", "resize_x0.5", "median_k11", "box_k11"]))
    report, code = run_check(original, protected, tmp_path / "report", checker, progress=False, log=lambda s: None)
    photos = {p["file"]: p for p in report["photos"]}
    assert photos["same.jpg"]["verdict"] == "matched"
    face = photos["same.jpg"]["faces"][0]
    assert face["detected_in_protected"] and face["similarity"]["tiny"]["none"] == pytest.approx(1.0, abs=1e-5)
    assert face["matched"]["tiny"]["none"] and "tiny@none" in face["matched_under"]
    assert set(face["similarity"]["tiny40"]) == {"none", "jpeg_q75", "resize_x0.5", "median_k11", "box_k11"}
    noisy = photos["sub/noisy.png"]["faces"][0]
    assert noisy["detected_in_protected"]
    for model, scores in noisy["similarity"].items():
        assert scores["none"] < face["similarity"][model]["none"] - 1e-5, (model, scores)  # the noise counts
        assert noisy["matched"][model] == {t: v >= 0.5 for t, v in scores.items()}  # vs the threshold, 0.5
    # Noise (sigma 25) does not fool the tiny models: still matched, under every transform.
    assert photos["sub/noisy.png"]["verdict"] == "matched" and len(noisy["matched_under"]) == 2 * 5
    assert photos["flat.jpg"]["verdict"] == "no face"
    assert photos["broken.jpg"]["verdict"] == "error" and "not an image" in photos["broken.jpg"]["reason"]
    assert photos["unprotected_only.jpg"]["verdict"] == "missing"
    assert code == 1  # a file could not be read
    saved = json.loads((tmp_path / "report" / "report.json").read_text())
    assert saved["summary"] == report["summary"] and saved["models"]["tiny"]["threshold"] == 0.5
    page = (tmp_path / "report" / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 3 + 1  # before, after, difference, and the plot
    assert not re.search(r"(src|href)=['\"]?(https?:|//)", page)  # nothing fetched from outside


def test_models_used_to_protect_are_marked_white_box(folders, detector, tmp_path):
    original, protected = folders
    checker = Checker([TinyFR(0), TinyFR(1, size=40, name="tiny40")], detector, get_transforms(["none"]))
    report, _ = run_check(original / "same.jpg", protected / "same.jpg", tmp_path, checker, progress=False,
                          log=lambda s: None, surrogates={"tiny"})
    assert report["models"]["tiny"]["used_to_protect"] is True
    assert report["models"]["tiny40"]["used_to_protect"] is False
    text = check.format_verdicts(report)
    assert "tiny*" in text and "tiny40*" not in text and "* used to protect these photos (white-box)" in text
    assert "used to protect" in (tmp_path / "report.html").read_text()
    unknown, _ = run_check(original / "same.jpg", protected / "same.jpg", None, checker, progress=False,
                           log=lambda s: None)
    assert {info["used_to_protect"] for info in unknown["models"].values()} == {None}
    assert "white-box" not in check.format_verdicts(unknown)


def test_check_two_files_and_cli_errors(folders, detector, tmp_path):
    original, protected = folders
    checker = Checker([TinyFR(0)], detector, get_transforms(["none"]))
    report, code = run_check(original / "same.jpg", protected / "same.jpg", None, checker, progress=False, log=lambda s: None)
    assert code == 0 and [p["verdict"] for p in report["photos"]] == ["matched"]
    assert check.main([str(original / "same.jpg"), str(protected), "--out", str(tmp_path)]) == 2  # file vs folder


@pytest.mark.real
def test_verdict_flips_from_matched_to_protected_on_a_real_photo(lfw_root, weight_cache, tmp_path):
    """An unprotected copy is matched by every real model; the protected photo by none (short attack)."""
    from fr_shield.app.protect import ProtectOptions, run_protect
    from fr_shield.attacks.protector import FaceProtector
    from fr_shield.models import create

    source = tmp_path / "original"
    source.mkdir()
    shutil.copyfile(lfw_root / FACE_PHOTO, source / "bush.jpg")
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copyfile(source / "bush.jpg", copy / "bush.jpg")

    def short(preset, device):  # the "high" preset's bound and budget, a few large steps
        return FaceProtector(dataclasses.replace(preset.attack, steps=12, step_size=0.004), device)

    protected = tmp_path / "protected"
    result = run_protect([source], protected, ProtectOptions(preset="high", progress=False, threads=1),
                         protector_factory=short, log=lambda s: None)
    row = result.rows[0]
    assert row["status"] == "protected" and row["lpips"] <= 0.10 and row["ssim"] >= 0.88

    models = [create(name) for name in check.DEFAULT_MODELS]
    checker = Checker(models, FaceDetector(), get_transforms(["none", "jpeg_q75"]))
    before, _ = run_check(source, copy, tmp_path / "before", checker, progress=False, log=lambda s: None)
    after, _ = run_check(source, protected, tmp_path / "after", checker, progress=False, log=lambda s: None)
    assert before["photos"][0]["verdict"] == "matched"
    assert set(before["photos"][0]["faces"][0]["matched_under"]) >= {f"{m}@none" for m in check.DEFAULT_MODELS}
    assert after["photos"][0]["verdict"] == "protected", after["photos"][0]["faces"][0]["similarity"]
    assert (tmp_path / "after" / "report.html").is_file()
