"""``fr-shield protect``'s estimate and per-face progress bar, with tiny models and marker faces.

Before the work, a planning pass counts the faces of the pending photos and a short timed attack
on the first face gives the estimate line; the bar counts faces (fractions per attack step) and
ends at the planned count. No data or weights needed.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import tqdm
from marker_faces import face_photo, marker_detector
from PIL import Image
from test_protect import opts, tiny_factory

from fr_shield.app.protect import build_parser, run_protect

pytestmark = pytest.mark.usefixtures("one_thread")
ESTIMATE = re.compile(r"found (\d+) face\(s\) in (\d+) photo\(s\); expected about [\d.]+ (s|min|h) on this machine "
                      r"\(calibrated: [\d.e-]+ s per attack step\)")


@pytest.fixture(scope="module")
def album(tmp_path_factory) -> Path:
    """Four faces in three photos, and a file that is no photo."""
    folder = tmp_path_factory.mktemp("progress_album")
    face_photo().save(folder / "face.jpg", quality=95)
    group = Image.new("RGB", (250 * 3, 250))
    for index in range(3):
        group.paste(face_photo(seed=index), (250 * index, 0))
    group.save(folder / "group.png")
    Image.fromarray(np.full((200, 300, 3), 60, np.uint8)).save(folder / "plain.jpg")
    (folder / "readme.txt").write_text("not a photo")
    return folder


@pytest.fixture()
def counted_factory():
    """``tiny_factory`` that remembers how often it was asked for a protector."""
    calls = []

    def factory(preset, device):
        calls.append(1)
        return tiny_factory(preset, device)

    factory.calls = calls
    return factory


@pytest.fixture()
def bars(monkeypatch) -> list:
    """Every tqdm bar ``run_protect`` opens, and the amounts it was advanced by."""
    opened = []

    class Recording(tqdm.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.advances = []
            opened.append(self)

        def update(self, n=1):
            self.advances.append(n)
            return super().update(n)

    monkeypatch.setattr(tqdm, "tqdm", Recording)
    return opened


def run(inputs, out, factory, **options):
    lines = []
    result = run_protect(inputs, out, opts(**options), protector_factory=factory, detector=marker_detector,
                         log=lines.append)
    assert result.exit_code == 0
    return result, lines


def test_estimate_counts_faces_and_photos(album, tmp_path, counted_factory):
    _, lines = run([album], tmp_path / "out", counted_factory)
    match = ESTIMATE.fullmatch(lines[0])
    assert match, lines[0]
    assert match.group(1, 2) == ("4", "3")  # readme.txt is not a photo
    assert len(counted_factory.calls) == 1  # the calibration borrows the run's networks


def test_estimate_counts_only_pending_photos(album, tmp_path, counted_factory):
    out = tmp_path / "out"
    run([album / "face.jpg"], out, counted_factory, estimate=False)
    _, lines = run([album / "face.jpg", album / "group.png"], out, counted_factory)
    assert ESTIMATE.fullmatch(lines[0]).group(1, 2) == ("3", "1")


def test_no_estimate_skips_it(album, tmp_path):
    _, lines = run([album], tmp_path / "out", tiny_factory, estimate=False)
    assert not any(line.startswith("found") for line in lines)


def test_no_faces_no_calibration(album, tmp_path, counted_factory):
    _, lines = run([album / "plain.jpg"], tmp_path / "out", counted_factory)
    assert lines[0] == "found 0 face(s) in 1 photo(s); nothing to attack"
    assert not counted_factory.calls


def test_bar_counts_faces(album, tmp_path, bars):
    result, _ = run([album], tmp_path / "out", tiny_factory, progress=True, estimate=False)
    assert [row["status"] for row in result.rows] == ["protected", "protected", "copied", "ignored"]
    (bar,) = bars
    assert bar.unit == "face" and bar.total == 4 and bar.n == pytest.approx(4)
    assert any(0 < n < 1 for n in bar.advances)  # attack steps advance it by fractions of a face


def test_cli_flag():
    assert build_parser().parse_args(["a.jpg", "--out", "o", "--no-estimate"]).no_estimate
    assert not build_parser().parse_args(["a.jpg", "--out", "o"]).no_estimate
