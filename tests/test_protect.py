"""``fr-shield protect`` end to end on awkward files, with tiny surrogates and a tiny perceptual metric.

One folder holds every kind of file a person may have: a photo with a face, several faces, no
face, EXIF-rotated, GPS-tagged, grayscale, CMYK, RGBA, 16-bit, 1x1, 30 MP, a non-ASCII name, and
broken ones (truncated, empty, text named .jpg, an unsupported GIF). One run over it must give
each a clear outcome, leave every original byte-identical, and resume after an interruption.

The album of LFW photos is detected by the real YuNet (tests marked ``real`` through their
fixtures); the file-handling tests use a small synthetic album and a marker detector
(``marker_faces``), so they need neither data nor weights.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from marker_faces import face_photo, marker_detector
from PIL import Image
from tiny_models import TinyFR, TinyPerceptual

from fr_shield.app import protect
from fr_shield.app.photo_files import GPS_IFD, ORIENTATION, clean_xmp, read_photo, without_gps
from fr_shield.app.protect import ProtectOptions, UsageError, run_protect
from fr_shield.attacks.budget import Budget, enforce_budget
from fr_shield.attacks.config import BranchConfig, compose_preset, preset_names
from fr_shield.attacks.protector import WORK_SIDE, FaceProtector
from fr_shield.core.files import PART_MARK
from fr_shield.core.regions import cluster_regions, soft_mask

TESTS = Path(__file__).parent
FACE_PHOTO = "George_W_Bush/George_W_Bush_0001.jpg"
OTHER_FACES = ["Colin_Powell/Colin_Powell_0001.jpg", "Tony_Blair/Tony_Blair_0001.jpg"]


def tiny_factory(preset, device):
    """The pipeline with two tiny random surrogates and a short attack (behaviour, not strength)."""
    # Some start noise: with the identity branch alone the objective's gradient is 0 at the clean photo.
    config = dataclasses.replace(preset.attack, steps=3, step_size=0.01, alpha=0.0, branches=[BranchConfig()],
                                 init_noise=0.005)
    return FaceProtector(config, device, surrogates=[TinyFR(0), TinyFR(1, size=40, name="tiny40")],
                         metric=TinyPerceptual())


pytestmark = pytest.mark.usefixtures("one_thread")


def opts(**values) -> ProtectOptions:
    return ProtectOptions(**{"progress": False, "threads": 1, **values})


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def gps_exif(orientation: int | None = None) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "TestCam"  # Make: must survive
    if orientation:
        exif[ORIENTATION] = orientation
    gps = exif.get_ifd(GPS_IFD)
    gps[1], gps[2], gps[3], gps[4] = "N", (52.0, 31.0, 12.0), "E", (13.0, 24.0, 0.0)
    return exif


@pytest.fixture(scope="module")
def album(tmp_path_factory, lfw_root, weight_cache) -> Path:
    folder = tmp_path_factory.mktemp("album")
    face = Image.open(lfw_root / FACE_PHOTO).convert("RGB")
    others = [Image.open(lfw_root / name).convert("RGB") for name in OTHER_FACES]
    face.save(folder / "face.jpg", quality=95)
    (folder / "sub").mkdir()
    face.save(folder / "sub" / "Zoë 写真.jpg", quality=95)  # non-ASCII name, in a subfolder
    face.save(folder / "gps.jpg", quality=95, exif=gps_exif().tobytes())
    # Stored turned a quarter (pixels rotated counter-clockwise); orientation 6 turns it upright.
    face.transpose(Image.Transpose.ROTATE_90).save(folder / "rotated.jpg", quality=95, exif=gps_exif(6).tobytes())
    group = Image.new("RGB", (250 * 3, 250))
    for index, image in enumerate([face, *others]):
        group.paste(image, (250 * index, 0))
    group.save(folder / "group.png")
    canvas = Image.new("RGB", (640, 420), (40, 90, 160))  # a face in one corner of a big flat photo
    canvas.paste(face, (0, 0))
    canvas.save(folder / "corner.png")
    face.convert("L").save(folder / "gray.jpg", quality=95)
    face.convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    rgba = face.convert("RGBA")
    alpha = np.full((250, 250), 255, np.uint8)
    alpha[:40, :40] = 0
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(folder / "alpha.png")
    sixteen = (np.asarray(face.convert("L"), np.uint16) * 257).astype(np.uint16)
    Image.fromarray(sixteen).save(folder / "deep16.png")
    assert Image.open(folder / "deep16.png").mode.startswith("I")
    face.save(folder / "lossless.webp", lossless=True)
    Image.new("RGB", (1, 1), (200, 10, 10)).save(folder / "tiny.png")
    smooth = np.linspace(0, 255, 300 * 200, dtype=np.float32).reshape(200, 300)
    Image.fromarray(np.dstack([smooth, smooth[::-1], np.full_like(smooth, 90)]).astype(np.uint8)).save(
        folder / "landscape.jpg", exif=gps_exif().tobytes())
    big = Image.new("RGB", (6400, 4700), (120, 120, 120))  # 30 MP, one face ~1000 px wide
    big.paste(face.resize((1000, 1000), Image.Resampling.BICUBIC), (2600, 1800))
    big.save(folder / "big.jpg", quality=90)
    data = (folder / "face.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("this is not a photo\n")
    face.save(folder / "anim.gif")
    (folder / "readme.txt").write_text("ignored")
    return folder


@pytest.fixture(scope="module")
def small_album(tmp_path_factory) -> Path:
    """The file-handling subset of ``album`` with synthetic faces that ``marker_detector`` finds."""
    folder = tmp_path_factory.mktemp("small_album")
    face = face_photo()
    face.save(folder / "face.jpg", quality=95)
    (folder / "sub").mkdir()
    face.save(folder / "sub" / "Zoë 写真.jpg", quality=95)
    face.save(folder / "gps.jpg", quality=95, exif=gps_exif().tobytes())
    group = Image.new("RGB", (250 * 3, 250))
    for index in range(3):
        group.paste(face_photo(seed=index), (250 * index, 0))
    group.save(folder / "group.png")
    canvas = Image.new("RGB", (640, 420), (40, 90, 160))
    canvas.paste(face, (0, 0))
    canvas.save(folder / "corner.png")
    smooth = np.linspace(0, 255, 300 * 200, dtype=np.float32).reshape(200, 300)
    Image.fromarray(np.dstack([smooth, smooth[::-1], np.full_like(smooth, 90)]).astype(np.uint8)).save(
        folder / "landscape.jpg", exif=gps_exif().tobytes())
    assert [len(marker_detector(np.asarray(Image.open(folder / name).convert("RGB"))))
            for name in ("face.jpg", "gps.jpg", "group.png", "corner.png", "landscape.jpg")] == [1, 1, 3, 1, 0]
    return folder


@pytest.fixture(scope="module")
def first_run(album, tmp_path_factory):
    hashes = {p: sha(p) for p in album.rglob("*") if p.is_file()}
    out = tmp_path_factory.mktemp("run") / "protected"
    options = opts(preset="mid", attack="lowkey", json_path=out.parent / "summary.json")
    started = time.perf_counter()
    result = run_protect([album], out, options, protector_factory=tiny_factory, log=lambda s: None)
    return album, out, result, hashes, time.perf_counter() - started


def rows_by_file(result) -> dict[str, dict]:
    return {row["file"]: row for row in result.rows}


def test_every_file_gets_a_clear_outcome(first_run):
    _, out, result, _, _ = first_run
    rows = rows_by_file(result)
    expected = {
        "face.jpg": "protected", "sub/Zoë 写真.jpg": "protected", "gps.jpg": "protected", "rotated.jpg": "protected",
        "group.png": "protected", "corner.png": "protected", "gray.jpg": "protected", "cmyk.jpg": "protected",
        "alpha.png": "protected", "deep16.png": "protected", "lossless.webp": "protected", "big.jpg": "protected",
        "landscape.jpg": "copied", "tiny.png": "copied", "truncated.jpg": "unreadable", "empty.jpg": "unreadable",
        "notes.jpg": "unreadable", "anim.gif": "unsupported", "readme.txt": "ignored",
    }
    assert {name: rows[name]["status"] for name in expected} == expected
    assert rows["group.png"]["faces"] >= 3  # LFW photos hold some background faces too
    assert "empty" in rows["empty.jpg"]["reason"] and "truncated" in rows["truncated.jpg"]["reason"]
    assert "not an image" in rows["notes.jpg"]["reason"] and "too small" in " ".join(rows["tiny.png"]["notes"])
    assert "16-bit" in " ".join(rows["deep16.png"]["notes"]) and "CMYK" in " ".join(rows["cmyk.jpg"]["notes"])
    assert result.exit_code == 1  # some files failed
    for name in ("face.jpg", "group.png", "big.jpg"):
        row = rows[name]
        assert set(row["similarity"]) == {"tiny", "tiny40"}
        assert row["lpips"] <= 0.05 + 1e-6 and row["ssim"] >= 0.95 - 1e-6  # the mid budget holds as written
        assert row["delta_e"] <= 2.3 + 1e-6
    report = json.loads((out.parent / "summary.json").read_text())
    assert {row["file"] for row in report["files"]} == set(rows) and report["preset"]["name"] == "mid"


def test_originals_untouched_and_outputs_mirror_the_tree(first_run):
    album, out, _, hashes, _ = first_run
    assert {p: sha(p) for p in album.rglob("*") if p.is_file()} == hashes
    assert (out / "sub" / "Zoë 写真.jpg").is_file()
    for name, fmt in [("face.jpg", "JPEG"), ("group.png", "PNG"), ("lossless.webp", "WEBP"), ("cmyk.jpg", "JPEG")]:
        with Image.open(out / name) as image:
            assert (image.format, image.mode) == (fmt, "RGB")
    assert (out / "tiny.png").read_bytes() == (album / "tiny.png").read_bytes()
    assert not (out / "readme.txt").exists() and not (out / "notes.jpg").exists()
    assert not list(out.rglob(f"*{PART_MARK}*"))


def test_only_the_faces_change(first_run):
    album, out, _, _, _ = first_run
    before = np.asarray(Image.open(album / "corner.png"))
    after = np.asarray(Image.open(out / "corner.png"))
    changed = np.argwhere((before != after).any(axis=2))
    assert len(changed) > 500  # the face was perturbed
    assert changed[:, 0].max() < 300 and changed[:, 1].max() < 300  # nothing far from it
    assert (before[:, 320:] == after[:, 320:]).all()
    group_before, group_after = np.asarray(Image.open(album / "group.png")), np.asarray(Image.open(out / "group.png"))
    for third in range(3):  # each of the three faces was protected
        assert (group_before[:, 250 * third:250 * (third + 1)] != group_after[:, 250 * third:250 * (third + 1)]).any()


def test_metadata_gps_orientation_alpha(first_run):
    album, out, _, _, _ = first_run
    with Image.open(out / "gps.jpg") as image:
        exif = image.getexif()
        assert GPS_IFD not in exif and exif[0x010F] == "TestCam"
    with Image.open(out / "rotated.jpg") as image:  # turned upright, orientation reset, GPS gone
        assert image.size == (250, 250) and image.getexif().get(ORIENTATION) == 1
        assert GPS_IFD not in image.getexif()
        upright = np.asarray(image.convert("RGB"), np.float32)
    original = np.asarray(Image.open(album / "face.jpg").convert("RGB"), np.float32)
    assert np.abs(upright - original).mean() < 4  # the same view as the upright original
    with Image.open(out / "landscape.jpg") as image:  # copied without a face: pixels the same, GPS gone
        assert GPS_IFD not in image.getexif()
        assert np.array_equal(np.asarray(image), np.asarray(Image.open(album / "landscape.jpg")))
    with Image.open(out / "alpha.png") as image:
        assert image.mode == "RGBA"
        assert (np.asarray(image)[..., 3] == np.asarray(Image.open(album / "alpha.png"))[..., 3]).all()


def test_keep_gps(small_album, tmp_path):
    album = small_album
    out = tmp_path / "kept"
    options = opts(preset="low", attack="lowkey", keep_gps=True)
    files = [album / "gps.jpg", album / "landscape.jpg"]
    result = run_protect(files, out, options, protector_factory=tiny_factory, detector=marker_detector,
                         log=lambda s: None)
    assert result.exit_code == 0
    assert [row["status"] for row in result.rows] == ["protected", "copied"]
    for name in ("gps.jpg", "landscape.jpg"):
        with Image.open(out / name) as image:
            assert image.getexif().get_ifd(GPS_IFD)[1] == "N"
    assert (out / "landscape.jpg").read_bytes() == (album / "landscape.jpg").read_bytes()


def test_big_photo_costs_what_its_face_costs(first_run):
    album, out, result, _, _ = first_run
    row = rows_by_file(result)["big.jpg"]
    face, big = rows_by_file(result)["face.jpg"]["face_details"][0], row["face_details"][0]
    assert row["faces"] == 1 and big["work_scale"] < 1  # attacked on a downscaled region
    # Work in pixels, not seconds: the face is attacked at the size of an ordinary face (its 112-crop
    # spans WORK_SIDE work pixels), not at the ~180 000 pixels it has in the 30 MP photo ...
    work_area = big["box"][2] * big["box"][3] * big["work_scale"] ** 2
    assert work_area <= WORK_SIDE ** 2 and work_area < 5 * face["box"][2] * face["box"][3]
    # ... and only the pasted 1000 x 1000 face changes (give or take a 16 px JPEG block).
    with Image.open(album / "big.jpg") as before, Image.open(out / "big.jpg") as after:
        assert after.size == (6400, 4700)
        changed = np.argwhere((np.asarray(before) != np.asarray(after)).any(axis=2))
    assert len(changed) > 10_000
    assert (changed.min(axis=0) >= (1800 - 16, 2600 - 16)).all() and (changed.max(axis=0) < (2800 + 16, 3600 + 16)).all()


def test_manifest_records_the_surrogates(first_run, tmp_path):
    """``check`` reads which models a folder was protected against from the manifest."""
    _, out, _, _, _ = first_run
    preset_surrogates = set(protect.load_preset(opts(preset="mid", attack="lowkey")).attack.surrogates)
    assert preset_surrogates and protect.recorded_surrogates(out) == preset_surrogates
    assert protect.recorded_surrogates(out / "face.jpg") == preset_surrogates  # a photo in the folder
    assert protect.recorded_surrogates(tmp_path) is None  # no manifest: unknown, not "none"
    (tmp_path / protect.MANIFEST).write_text("{not json")
    assert protect.recorded_surrogates(tmp_path) is None


def test_second_run_resumes(first_run):
    album, out, _, _, _ = first_run
    calls = []

    def counting_factory(*args):
        calls.append(1)
        return tiny_factory(*args)

    options = opts(preset="mid", attack="lowkey")
    again = run_protect([album], out, options, protector_factory=counting_factory, log=lambda s: None)
    rows = rows_by_file(again)
    assert rows["face.jpg"]["status"] == "done" and rows["landscape.jpg"]["status"] == "copied"
    assert rows["notes.jpg"]["status"] == "unreadable"  # failures are tried again, and fail again
    assert not calls  # nothing needed the models
    # A changed preset redoes the work.
    redo = run_protect([album / "face.jpg"], out.parent / "redo", opts(preset="low", attack="lowkey"),
                       protector_factory=tiny_factory, log=lambda s: None)
    assert rows_by_file(redo)["face.jpg"]["status"] == "protected"


def test_no_face_skip(small_album, tmp_path):
    result = run_protect([small_album / "landscape.jpg"], tmp_path / "o", opts(no_face="skip"),
                         protector_factory=tiny_factory, detector=marker_detector, log=lambda s: None)
    assert result.rows[0]["status"] == "no face" and result.exit_code == 0
    assert not (tmp_path / "o" / "landscape.jpg").exists()


def test_refuses_out_inside_input(small_album, tmp_path):
    album = small_album
    for out in (album, album / "sub" / "protected"):
        with pytest.raises(UsageError):
            run_protect([album], out, opts(), protector_factory=tiny_factory, log=lambda s: None)
    with pytest.raises(UsageError):  # a single file whose output would replace it
        run_protect([album / "face.jpg"], album, opts(), protector_factory=tiny_factory)
    assert protect.main([str(album), "--out", str(album / "x")]) == 2
    assert not (album / "x").exists()


DRIVER = textwrap.dedent("""
    import signal, sys, time
    # Ctrl-C as in a terminal: a shell's background job (e.g. `make test &`) starts with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.path.insert(0, {tests!r})
    from marker_faces import marker_detector
    from test_protect import opts, tiny_factory
    from fr_shield.app.protect import ProtectOptions, run_protect
    import fr_shield.app.protect as protect

    slow = protect.protect_file
    def protect_file(job, *args, **kwargs):
        print("start", job.relative, flush=True)
        return slow(job, *args, **kwargs)
    protect.protect_file = protect_file
    attack = protect.protect_array
    attacked = []
    def protect_array(*args, **kwargs):  # the second photo waits, attacked but not written, for Ctrl-C
        result = attack(*args, **kwargs)
        attacked.append(1)
        if len(attacked) == 2:
            print("attacked", flush=True)
            time.sleep(60)
        return result
    protect.protect_array = protect_array
    result = run_protect({inputs!r}, {out!r}, opts(preset="mid", attack="lowkey"),
                         protector_factory=tiny_factory, detector=marker_detector)
    sys.exit(result.exit_code)
""")


def test_interrupted_run_leaves_no_partial_output_and_resumes(small_album, tmp_path):
    album = small_album
    inputs = [str(album / name) for name in ("face.jpg", "group.png", "corner.png", "gps.jpg")]
    out = tmp_path / "out"
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(tests=str(TESTS), inputs=inputs, out=str(out)))
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, cwd=TESTS.parent)
    for line in process.stdout:  # interrupt while the second photo is being protected
        if line.startswith("attacked"):
            process.send_signal(signal.SIGINT)
            break
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 130, output
    written = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    order = ["face.jpg", "group.png", "corner.png", "gps.jpg"]
    assert written == ["face.jpg"]  # whole files only: group.png was attacked, never half written
    assert not list(out.rglob(f"*{PART_MARK}*"))
    for name in written:
        Image.open(out / name).load()  # complete, decodable
    recorded = set(json.loads((out / protect.MANIFEST).read_text()))  # what the interrupted run finished
    assert recorded == {"face.jpg"}
    # A hard kill leaves a temporary file at worst; the next run removes it and finishes the job.
    (out / f".corner.png{PART_MARK}999").write_bytes(b"half a file")
    result = run_protect([Path(p) for p in inputs], out, opts(preset="mid", attack="lowkey"),
                         protector_factory=tiny_factory, detector=marker_detector, log=lambda s: None)
    statuses = {row["file"]: row["status"] for row in result.rows}
    assert result.exit_code == 0
    # What the interrupted run recorded is kept ("done"); the rest is protected now.
    assert statuses == {name: "done" if name in recorded else "protected" for name in order}
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["corner.png", "face.jpg", "gps.jpg", "group.png"]
    assert not list(out.rglob(f"*{PART_MARK}*"))


# ----------------------------------------------------------------------------- units


def test_presets_are_typed_and_ordered():
    assert set(preset_names()) >= {"low", "mid", "high"}
    presets = [compose_preset(name) for name in ("low", "mid", "high")]
    assert [p.attack.linf for p in presets] == sorted(p.attack.linf for p in presets)
    assert [p.attack.lpips_max for p in presets] == sorted(p.attack.lpips_max for p in presets)
    assert all(p.target and p.attack.steps > 0 and p.attack.mask == "face" for p in presets)
    assert [p.attack.name for p in presets] == ["lowkey", "ours_transfer_linf6_fast40", "ours_box"]
    with pytest.raises(ValueError, match="unknown preset 'extreme'; choose one of: high, low, mid"):
        compose_preset("extreme")


def test_budget_bisection_shrinks_until_it_holds():
    import torch

    from fr_shield.core.align import ARCFACE_112

    class Mean(torch.nn.Module):  # a "metric" that is the mean absolute difference
        def forward(self, x, y):
            return (x - y).abs().flatten(1).mean(1)

    clean = torch.full((1, 3, 160, 160), 0.5)
    delta = torch.full_like(clean, 0.08)
    points = [(ARCFACE_112 + 20).astype(np.float32)]
    result = enforce_budget(clean, delta, points, Budget(lpips_max=0.02, ssim_min=0.0), Mean(), lambda x: x)
    assert result.met and 0.2 < result.scale <= 0.25 and result.lpips[0] <= 0.02
    free = enforce_budget(clean, delta, points, Budget(1.0, 0.0), Mean(), lambda x: x)
    assert free.scale == 1.0 and free.evaluations == 1


def test_mask_and_clusters():
    from fr_shield.core.align import ARCFACE_112

    points = (ARCFACE_112 + 40).astype(np.float32)
    mask = soft_mask((200, 200), [points], np.array([[1.0, 0, 0], [0, 1.0, 0]])).numpy()
    assert mask[int(points[2, 1]), int(points[2, 0])] == 1.0  # nose: full strength
    assert mask[0, 0] == 0.0 and mask[199, 199] == 0.0 and 0 < mask.mean() < 0.5
    groups = cluster_regions([(0, 0, 10, 10), (5, 5, 20, 20), (50, 50, 60, 60)])
    assert sorted(sorted(g[1]) for g in groups) == [[0, 1], [2]]


def test_xmp_gps_removed_and_orientation_reset():
    xmp = (b'<x:xmpmeta><rdf:Description exif:GPSLatitude="52,31.2N" exif:GPSLongitude="13,24E" '
           b'tiff:Orientation="6" dc:title="x"><exif:GPSAltitude>12</exif:GPSAltitude></rdf:Description></x:xmpmeta>')
    cleaned = clean_xmp(xmp, keep_gps=False, upright=True)
    assert b"GPS" not in cleaned and b'tiff:Orientation="1"' in cleaned and b'dc:title="x"' in cleaned
    assert clean_xmp(xmp, keep_gps=True, upright=False) == xmp


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_gps_stripped_without_reencoding(tmp_path, fmt):
    pixels = (np.random.default_rng(0).random((40, 60, 3)) * 255).astype(np.uint8)
    path = tmp_path / f"p.{fmt.lower()}"
    Image.fromarray(pixels).save(path, fmt, exif=gps_exif().tobytes(), **({"lossless": True} if fmt == "WEBP" else {}))
    photo = read_photo(path)
    assert photo.had_gps
    stripped = without_gps(photo, path.read_bytes())
    with Image.open(io.BytesIO(stripped)) as image:
        assert GPS_IFD not in image.getexif() and image.getexif()[0x010F] == "TestCam"
        assert np.array_equal(np.asarray(image.convert("RGB")), np.asarray(Image.open(path).convert("RGB")))


def test_budget_bounds_the_colour_difference_too():
    """A budget on Delta E shrinks a coloured perturbation that SSIM alone lets through."""
    import torch

    from fr_shield.core.align import ARCFACE_112
    from fr_shield.core.quality import FaceQuality

    clean = torch.full((1, 3, 160, 160), 0.5)
    delta = torch.zeros_like(clean)
    delta[:, 0] = 0.06  # a red cast: small in SSIM, large in Delta E
    points = [(ARCFACE_112 + 20).astype(np.float32)]
    metric = TinyPerceptual()
    loose = enforce_budget(clean, delta, points, Budget(ssim_min=0.9), metric, lambda x: x)
    assert loose.scale == 1.0
    tight = enforce_budget(clean, delta, points, Budget(ssim_min=0.9, delta_e_max=2.3), metric, lambda x: x)
    colour = FaceQuality(clean, points, metric).scores(clean + tight.scale * delta, ["delta_e"])["delta_e"]
    assert tight.met and 0 < tight.scale < 1 and colour[0] <= 2.3


def test_budget_bounds_the_worst_windows_too():
    """A line across flat skin passes a mean-SSIM floor whole; the worst-window floor scales it down."""
    import torch

    from fr_shield.core.align import ARCFACE_112
    from fr_shield.core.quality import FaceQuality

    clean = torch.full((1, 3, 160, 160), 0.6) + 0.01 * torch.rand(1, 3, 160, 160, generator=torch.Generator().manual_seed(2))
    delta = torch.zeros_like(clean)
    delta[:, :, 70:72, 40:120] = -12 / 255
    points = [(ARCFACE_112 + 20).astype(np.float32)]
    metric = TinyPerceptual()
    loose = enforce_budget(clean, delta, points, Budget(ssim_min=0.9), metric, lambda x: x)
    assert loose.scale == 1.0
    tight = enforce_budget(clean, delta, points, Budget(ssim_min=0.9, ssim_worst_min=0.9), metric, lambda x: x)
    worst = FaceQuality(clean, points, metric).scores(clean + tight.scale * delta, ["ssim_worst"])["ssim_worst"]
    assert tight.met and 0 < tight.scale < 1 and worst[0] >= 0.9
    unseen = enforce_budget(clean, delta, points, Budget(ssim_min=0.9, visibility_max=1.0), metric, lambda x: x)
    visible = FaceQuality(clean, points, metric).scores(clean + unseen.scale * delta, ["visibility"])["visibility"]
    assert unseen.met and 0 < unseen.scale < 1 and visible[0] <= 1.0
