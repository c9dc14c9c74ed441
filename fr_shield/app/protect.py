"""``fr-shield protect PATH... --out DIR``: protect every face in a person's own photos.

For each photo (files, or folders searched recursively; JPEG, PNG, WebP):

1. read it upright (EXIF orientation applied) with its metadata;
2. detect every face (YuNet, five landmarks);
3. for each face, cut a padded region around it (overlapping regions merge), attack the region
   with the preset's settings, the perturbation multiplied by a soft elliptical face mask (it is
   exactly zero beyond it, so the rest of the photo is untouched) - a 30 MP photo costs what its
   faces cost. Faces larger than ``WORK_SIDE`` px are attacked on a downscaled copy of their
   region and the perturbation is upscaled back (the models see faces at <= 160 px anyway);
4. enforce the preset's hard budget per face (``fr_shield.attacks.budget``): shrink the perturbation until
   face ST-LPIPS <= tau and SSIM >= s hold on what will be written;
5. write the photo in its own format to the same relative path under ``--out``, atomically,
   with its metadata minus the location (unless ``--keep-gps``);
6. measure what was written: per face ST-LPIPS, SSIM and each model's embedding similarity to
   the original face.

A manifest in ``--out`` (``.fr-shield-manifest.json``) records finished files, so a second run
skips outputs that are complete and redoes the rest, and which models each file was protected
against (``check`` marks those as white-box). Originals are only ever read.

Before the work, a planning pass detects the faces of the photos still to do (the progress bar
counts faces) and times a short attack on one of them, to say how long the run will take here.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from fr_shield.app.photo_files import (
    Photo,
    TooSmall,
    UnsupportedFormat,
    encode_protected,
    is_photo_name,
    jpeg_round_trip,
    read_photo,
    without_gps,
)
from fr_shield.attacks.config import PresetConfig, as_dict, attack_names, compose_preset, preset_names
from fr_shield.attacks.protector import FaceProtector, FaceRecord, quantise
from fr_shield.attacks.registry import attack_key
from fr_shield.core.align import align_faces
from fr_shield.core.detect import Face, FaceDetector
from fr_shield.core.errors import FrShieldError, ImageError
from fr_shield.core.files import remove_stale_parts, write_atomic
from fr_shield.core.quality import FaceQuality
from fr_shield.core.runtime import configure_torch, resolve_device
from fr_shield.core.weights import sha256_of
from fr_shield.models.registry import check_names
from fr_shield.models.spec import pair_similarity

MANIFEST = ".fr-shield-manifest.json"
OTHER_IMAGE_SUFFIXES = (".gif", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".avif", ".jxl", ".dng",
                        ".cr2", ".cr3", ".nef", ".arw", ".orf", ".rw2", ".raw", ".jp2", ".ico", ".psd")
FAILED = ("unreadable", "unsupported", "error", "missing")
CALIBRATION_STEPS = 2  # attack steps timed on the first face for the estimate

StepCallback = Callable[[int, torch.Tensor, dict], None]  # FaceProtector.perturb's on_step(step, value, parts)


# --------------------------------------------------------------------------- one photo


def _to_tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None].to(device)


def protect_array(protector: FaceProtector, image: np.ndarray, faces: Sequence[Face],
                  render: Callable[[np.ndarray], np.ndarray] | None = None,
                  on_step: StepCallback | None = None) -> tuple[np.ndarray, list[FaceRecord]]:
    """Protected copy of ``image`` (H x W x 3 float in [0, 1], 8-bit values) and a record per face.

    ``render`` maps a uint8 region to what the saved file will hold there (e.g. a JPEG round
    trip); the budget is enforced on that. ``on_step(step, value, parts)``: after each attack step.
    """
    def render_tensor(region: torch.Tensor) -> torch.Tensor:
        region = quantise(region)
        if render is None:
            return region
        pixels = np.clip(np.rint(region[0].permute(1, 2, 0).cpu().numpy() * 255), 0, 255).astype(np.uint8)
        return torch.from_numpy(np.array(render(pixels))).permute(2, 0, 1)[None].float().div(255).to(region.device)

    clean = _to_tensor(image, protector.device)
    protected, records = protector.protect(clean, [face.landmarks for face in faces], render_tensor, on_step)
    for record, face in zip(records, faces):
        record.box = [float(v) for v in face.box]
    return protected[0].permute(1, 2, 0).cpu().numpy(), records


@torch.no_grad()
def measure(protector: FaceProtector, original: np.ndarray, protected: np.ndarray, faces: Sequence[Face],
            records: list[FaceRecord]) -> None:
    """Fill each record's LPIPS, SSIM, Delta E and per-model similarity from the pixels as written."""
    if not faces:
        return
    clean, saved = _to_tensor(original, protector.device), _to_tensor(protected, protector.device)
    points = [face.landmarks for face in faces]
    scores = FaceQuality(clean, points, protector.metric).scores(saved, ("lpips", "ssim", "delta_e"))
    per_model = {}
    for model in protector.models:
        per_model[model.spec.name] = pair_similarity(model(align_faces(clean[0], points, model.spec)),
                                                     model(align_faces(saved[0], points, model.spec)),
                                                     model.spec).cpu().tolist()
    for index, record in enumerate(records):
        record.lpips, record.ssim, record.delta_e = (scores["lpips"][index], scores["ssim"][index],
                                                     scores["delta_e"][index])
        record.similarity = {name: values[index] for name, values in per_model.items()}


# --------------------------------------------------------------------------- the run over files


class UsageError(FrShieldError):
    """The command line asks for something unsafe or impossible (e.g. --out inside the input)."""


@dataclass
class Job:
    source: Path
    relative: Path
    target: Path
    explicit: bool  # named on the command line (not found in a folder)


@dataclass
class ProtectOptions:
    preset: str = "mid"
    attack: str | None = None  # None: the preset's
    device: str = "auto"
    no_face: str = "copy"  # copy | skip
    keep_gps: bool = False
    json_path: Path | None = None
    progress: bool = True
    weights_dir: str | None = None
    surrogates: list[str] | None = None
    threads: int | None = None  # CPU threads for torch (None: every core)
    estimate: bool = True  # count the faces and time a short attack before the work (--no-estimate)


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def plan_jobs(inputs: Sequence[Path], out: Path) -> tuple[list[Job], list[dict]]:
    """Every file to consider and its output path; rows for inputs that cannot even start."""
    out = Path(out).expanduser().resolve()
    jobs, rows = [], []
    for given in inputs:
        path = Path(given).expanduser()
        if not path.exists():
            rows.append(_row(str(given), "missing", reason="no such file or folder"))
            continue
        resolved = path.resolve()
        if resolved.is_dir():
            if out == resolved or _inside(out, resolved):
                raise UsageError(f"--out {out} is the input folder {resolved} or inside it; choose a folder "
                                 "outside the photos being protected (originals are never overwritten)")
            for file in sorted(resolved.rglob("*")):
                relative = file.relative_to(resolved)
                if not file.is_file() or any(part.startswith(".") for part in relative.parts):
                    continue
                jobs.append(Job(file, relative, out / relative, explicit=False))
        else:
            if out == resolved.parent:
                raise UsageError(f"--out {out} is the folder that holds {path.name}; the output would "
                                 "replace the original. Choose another folder")
            jobs.append(Job(resolved, Path(resolved.name), out / resolved.name, explicit=True))
    seen: dict[Path, Job] = {}
    unique = []
    for job in jobs:
        if job.target in seen and seen[job.target].source != job.source:
            rows.append(_row(str(job.source), "error", reason=f"another input also maps to {job.relative} under --out"))
            continue
        if job.target not in seen:
            seen[job.target] = job
            unique.append(job)
    return unique, rows


def _row(file: str, status: str, **values) -> dict:
    row = {"file": file, "status": status, "reason": "", "faces": 0, "lpips": None, "ssim": None, "delta_e": None,
           "similarity": {}, "scale": None, "seconds": 0.0, "notes": [], "output": None, "face_details": []}
    row.update(values)
    return row


def settings_key(preset: PresetConfig, options: ProtectOptions) -> str:
    """What a finished output depends on besides its source: the attack (with its weights) and the options."""
    values = {"attack": attack_key(preset.attack), "keep_gps": options.keep_gps, "no_face": options.no_face}
    return hashlib.sha1(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


class Manifest:
    """``{relative path: {source sha256, settings, output sha256, row}}`` kept in --out, written atomically."""

    def __init__(self, out: Path):
        self.file = out / MANIFEST
        self.entries: dict[str, dict] = {}
        if self.file.exists():
            try:
                self.entries = json.loads(self.file.read_text())
            except (OSError, ValueError):
                self.entries = {}

    def complete(self, job: Job, source_hash: str, key: str) -> dict | None:
        entry = self.entries.get(job.relative.as_posix())
        if not entry or entry.get("source") != source_hash or entry.get("settings") != key:
            return None
        if entry.get("output") is None:  # a file deliberately not written (no face, --no-face skip)
            return entry["row"] if not job.target.exists() else None
        if not job.target.is_file() or sha256_of(job.target) != entry["output"]:
            return None
        return entry["row"]

    def record(self, job: Job, source_hash: str, key: str, row: dict, surrogates: Sequence[str] = ()) -> None:
        output = sha256_of(job.target) if row.get("output") else None
        self.entries[job.relative.as_posix()] = {"source": source_hash, "settings": key, "output": output, "row": row,
                                                 "surrogates": list(surrogates)}
        write_atomic(self.file, json.dumps(self.entries, indent=1).encode())


def recorded_surrogates(protected: Path) -> set[str] | None:
    """The models the photos in ``protected`` (a folder written by ``protect``, or one photo in it)
    were protected against, from its manifest; None where no manifest says."""
    entries = Manifest(protected if protected.is_dir() else protected.parent).entries
    if not isinstance(entries, dict):
        return None
    recorded = [entry.get("surrogates") for entry in entries.values() if isinstance(entry, dict)]
    if not recorded or any(names is None for names in recorded):  # written before surrogates were recorded
        return None
    return {name for names in recorded for name in names}


def _summarise(records: list[FaceRecord]) -> dict:
    if not records:
        return {}
    models = records[0].similarity.keys()
    return {
        "lpips": max(r.lpips for r in records),
        "ssim": min(r.ssim for r in records),
        "delta_e": max(r.delta_e for r in records),
        "scale": min(r.scale for r in records),
        "similarity": {m: max(r.similarity[m] for r in records) for m in models},
        "face_details": [asdict(r) for r in records],
    }


def protect_file(job: Job, protector_factory: Callable[[], FaceProtector], detector_factory: Callable[[], FaceDetector],
                 options: ProtectOptions, on_stage: Callable[[str], None] = lambda s: None,
                 faces: Sequence[Face] | None = None, on_faces: Callable[[float], None] = lambda n: None) -> dict:
    """Protect one file; returns its summary row (never raises for a bad photo).

    ``faces``: what the planning pass found in it (None: detect here). ``on_faces(n)``: n more
    faces' worth of attack steps done (fractions of a face per step, for the per-face bar).
    """
    started = time.perf_counter()
    display = job.relative.as_posix()
    if not is_photo_name(job.source) and not job.explicit:
        if job.source.suffix.lower() in OTHER_IMAGE_SUFFIXES:
            return _row(display, "unsupported", reason=f"{job.source.suffix} photos are not supported (JPEG, PNG and WebP are)")
        return _row(display, "ignored", reason="not a photo")
    try:
        photo = read_photo(job.source)
    except TooSmall as error:
        return _no_face(job, display, None, options, [str(error).split(": ", 1)[-1]], started)
    except UnsupportedFormat as error:
        return _row(display, "unsupported", reason=str(error).split(": ", 1)[-1])
    except ImageError as error:
        return _row(display, "unreadable", reason=str(error).split(": ", 1)[-1])
    notes = list(photo.notes)
    if photo.had_gps:
        notes.append("location kept" if options.keep_gps else "location removed")
    if faces is None:
        on_stage("detect")
        faces = detector_factory()(photo.rgb)
    if not faces:
        return _no_face(job, display, photo, options, notes, started)
    protector = protector_factory()
    on_stage(f"protect {len(faces)} face(s)")
    render = jpeg_round_trip if photo.format == "JPEG" else None
    on_step = _step_progress(protector, faces, photo.rgb.shape[:2], on_faces)
    protected, records = protect_array(protector, photo.rgb, faces, render, on_step)
    data = encode_protected(photo, protected, options.keep_gps)
    written = _decode(data, photo)
    measure(protector, photo.rgb, written, faces, records)
    write_atomic(job.target, data)
    if any(not r.budget_met for r in records):
        notes.append("budget not reachable even unperturbed (lossy re-encoding)")
    if any(r.work_scale < 1 for r in records):
        notes.append("large face: perturbation computed at reduced scale and upsampled")
    return _row(display, "protected", faces=len(faces), notes=notes, output=str(job.target),
                seconds=time.perf_counter() - started, **_summarise(records))


def _step_progress(protector: FaceProtector, faces: Sequence[Face], image_hw: tuple[int, int],
                   on_faces: Callable[[float], None]) -> StepCallback:
    """``on_step`` reporting each attack step as faces' worth of work: a photo's regions may be attacked
    in several batches, and a step of a batch counts its regions' share of the photo's faces over the
    attack's steps (exact when each region holds one face, as apart faces do; run_protect settles the
    bar to the exact count when the photo is done, since early stop ends batches early)."""
    regions = protector.regions([face.landmarks for face in faces], image_hw)
    per_region_step = len(faces) / len(regions) / protector.config.steps

    def on_step(step: int, value: torch.Tensor, parts: dict) -> None:
        on_faces(len(value) * per_region_step)  # value: one objective per region still attacked

    return on_step


def _no_face(job: Job, display: str, photo: Photo | None, options: ProtectOptions, notes: list[str],
             started: float) -> dict:
    if options.no_face == "skip":
        return _row(display, "no face", reason="no face found; not written (--no-face skip)", notes=notes,
                    seconds=time.perf_counter() - started)
    data = job.source.read_bytes()
    strip = photo is not None and photo.had_gps and not options.keep_gps
    write_atomic(job.target, without_gps(photo, data) if strip else data)
    return _row(display, "copied", reason="no face found; copied unchanged" + (" but for the location" if strip else ""),
                notes=notes, output=str(job.target), seconds=time.perf_counter() - started)


def _decode(data: bytes, photo: Photo) -> np.ndarray:
    """The RGB pixels a viewer will see in the written bytes (composited on white like the input)."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        if image.mode == "RGBA":
            background = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, image)
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def format_table(rows: list[dict], models: Sequence[str]) -> str:
    header = ["file", "status", "faces", "LPIPS", "SSIM", "dE", *[f"sim:{m}" for m in models], "lambda", "s", "note"]
    lines = [header]
    for row in rows:
        sims = [f"{row['similarity'][m]:.3f}" if m in row.get("similarity", {}) else "" for m in models]
        note = "; ".join(filter(None, [row.get("reason", ""), *row.get("notes", [])]))
        lines.append([row["file"], row["status"], str(row["faces"] or ""),
                      "" if row["lpips"] is None else f"{row['lpips']:.4f}",
                      "" if row["ssim"] is None else f"{row['ssim']:.4f}",
                      "" if row.get("delta_e") is None else f"{row['delta_e']:.2f}", *sims,
                      "" if row["scale"] is None else f"{row['scale']:.3f}", f"{row['seconds']:.1f}", note])
    widths = [min(48, max(len(line[i]) for line in lines)) for i in range(len(header) - 1)]
    text = []
    for number, line in enumerate(lines):
        cells = [cell[:w].ljust(w) for cell, w in zip(line[:-1], widths)] + [line[-1]]
        text.append("  ".join(cells).rstrip())
        if number == 0:
            text.append("  ".join("-" * w for w in widths) + "  ----")
    return "\n".join(text)


# --------------------------------------------------------------------------- the planning pass


@dataclass
class FacePlan:
    """The faces in the pending photos, found before any attack: the bar's total and the estimate's count."""

    faces: dict[Path, list[Face]] = field(default_factory=dict)  # by output path, every pending photo read
    first: tuple[Path, Face] | None = None  # the first face found and its photo's source: the calibration's

    @property
    def total(self) -> int:
        return sum(len(found) for found in self.faces.values())


def plan_faces(pending: Sequence[Job], detector_factory: Callable[[], FaceDetector]) -> FacePlan:
    """Read and detect every pending photo as ``protect_file`` will (it reuses the faces found here)."""
    plan = FacePlan()
    for job in pending:
        if not is_photo_name(job.source) and not job.explicit:
            continue
        try:
            faces = detector_factory()(read_photo(job.source).rgb)
        except Exception:  # noqa: BLE001 - protect_file reads it again and reports why it fails
            continue
        plan.faces[job.target] = faces
        if faces and plan.first is None:
            plan.first = (job.source, faces[0])
    return plan


def seconds_per_step(protector: FaceProtector, source: Path, face: Face, weights_dir: str | None = None) -> float:
    """This machine's time for one attack step: ``CALIBRATION_STEPS`` steps of the run's own attack on
    one face, the loaded networks shared (early stop off, so every step is timed)."""
    config = dataclasses.replace(protector.config, steps=CALIBRATION_STEPS, stop_margin=None)
    short = FaceProtector(config, protector.device, weights_dir, surrogates=protector.models, metric=protector.metric,
                          work_side=protector.work_side, whole_photo_fraction=protector.whole_photo_fraction)
    image = _to_tensor(read_photo(source).rgb, protector.device)
    started = time.perf_counter()
    short.perturb(image, [[face.landmarks]])
    return (time.perf_counter() - started) / CALIBRATION_STEPS


def estimate_line(plan: FacePlan, protector_factory: Callable[[], FaceProtector], weights_dir: str | None = None) -> str:
    """What the run will cost, said before it starts: faces x the attack's steps x the calibrated
    seconds per step (the budget's few metric evaluations per face are left out)."""
    found = f"found {plan.total} face(s) in {len(plan.faces)} photo(s)"
    if plan.first is None:
        return f"{found}; nothing to attack"
    protector = protector_factory()
    step = seconds_per_step(protector, *plan.first, weights_dir)
    expected = plan.total * protector.config.steps * step
    return f"{found}; expected about {_duration(expected)} on this machine (calibrated: {step:.2g} s per attack step)"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _face_bar(total: int, enabled: bool):
    """The per-face progress bar (fractional counts shown to one decimal)."""
    from tqdm import tqdm

    return tqdm(total=total, desc="protect", unit="face", disable=not enabled, file=sys.stderr,
                bar_format="{l_bar}{bar}| {n:.1f}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]")


@dataclass
class RunResult:
    rows: list[dict]
    exit_code: int
    interrupted: bool = False
    report: dict = field(default_factory=dict)


def run_protect(inputs: Sequence[Path], out: Path, options: ProtectOptions,
                protector_factory: Callable[[PresetConfig, torch.device], FaceProtector] | None = None,
                detector: FaceDetector | None = None, log: Callable[[str], None] = print) -> RunResult:
    """Protect ``inputs`` into ``out``; ``protector_factory`` lets tests inject tiny models."""
    if options.no_face not in ("copy", "skip"):
        raise UsageError(f"--no-face must be copy or skip, not {options.no_face!r}")
    preset = load_preset(options)
    out = Path(out).expanduser().resolve()
    jobs, rows = plan_jobs(inputs, out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in remove_stale_parts(out):
        log(f"removed an unfinished file left by an interrupted run: {stale}")
    configure_torch(options.threads)
    device = resolve_device(options.device)
    manifest = Manifest(out)
    key = settings_key(preset, options)
    cache: dict[str, object] = {}

    def get_protector() -> FaceProtector:
        if "protector" not in cache:
            factory = protector_factory or (lambda p, d: FaceProtector(p.attack, d, options.weights_dir))
            cache["protector"] = factory(preset, device)
        return cache["protector"]

    def get_detector() -> FaceDetector:
        if "detector" not in cache:
            cache["detector"] = detector or FaceDetector(cache_dir=options.weights_dir)
        return cache["detector"]

    interrupted = False
    try:
        hashes = {job.target: sha256_of(job.source) if job.source.is_file() else "" for job in jobs}
        finished = {job.target: manifest.complete(job, hashes[job.target], key) for job in jobs}
        pending = [job for job in jobs if finished[job.target] is None]
        plan = plan_faces(pending, get_detector) if options.estimate or options.progress else FacePlan()
        if options.estimate:
            log(estimate_line(plan, get_protector, options.weights_dir))
        with _face_bar(plan.total, options.progress) as bar:
            settled = 0
            for job in jobs:
                bar.set_postfix_str(job.relative.as_posix()[-40:])
                done = finished[job.target]
                if done is not None:
                    rows.append({**done, "status": "done" if done["status"] == "protected" else done["status"],
                                 "reason": done.get("reason") or "complete from an earlier run"})
                    continue
                faces = plan.faces.get(job.target)
                try:
                    row = protect_file(job, get_protector, get_detector, options, faces=faces, on_faces=bar.update,
                                       on_stage=lambda stage, name=job.relative.name: bar.set_postfix_str(f"{name[-30:]}: {stage}"))
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as error:  # noqa: BLE001 - one bad file must not stop the others
                    row = _row(job.relative.as_posix(), "error", reason=f"{type(error).__name__}: {error}")
                rows.append(row)
                if row["status"] in ("protected", "copied", "no face"):
                    manifest.record(job, hashes[job.target], key, row, preset.attack.surrogates)
                settled += len(faces or ())
                bar.update(settled - bar.n)  # exact at each photo's end: early stop skips steps
    except KeyboardInterrupt:
        interrupted = True
    models = get_protector().model_names if "protector" in cache else list(preset.attack.surrogates)
    report = {"preset": {"name": preset.name, "target": preset.target},
              "attack": as_dict(preset.attack), "out": str(out), "device": str(device),
              "interrupted": interrupted, "files": rows,
              "totals": {status: sum(r["status"] == status for r in rows) for status in sorted({r["status"] for r in rows})}}
    log(format_table(rows, models))
    failed = [r for r in rows if r["status"] in FAILED]
    log(f"\n{len(rows)} file(s): " + ", ".join(f"{n} {s}" for s, n in report["totals"].items())
        + (f"; {len(failed)} failed" if failed else "") + (" -- interrupted, run again to finish" if interrupted else ""))
    if options.json_path:
        write_atomic(Path(options.json_path), json.dumps(report, indent=2, default=float).encode())
    code = 130 if interrupted else (1 if failed else 0)
    return RunResult(rows, code, interrupted, report)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def load_preset(options: ProtectOptions) -> PresetConfig:
    """The preset with ``--attack`` and ``--surrogates`` applied; any unknown name is one clear error,
    before a photo is read."""
    preset = compose_preset(options.preset, options.attack)
    if options.surrogates:
        preset.attack.surrogates = check_names(options.surrogates)
    else:
        check_names(preset.attack.surrogates)
    return preset


def describe_presets() -> list[str]:
    loaded = sorted((compose_preset(name) for name in preset_names()), key=lambda p: (p.attack.linf, p.attack.lpips_max))
    return [f"  {p.name:5s} ST-LPIPS<={p.attack.lpips_max} SSIM>={p.attack.ssim_min} "
            f"Linf={round(p.attack.linf * 255)}/255, {p.attack.steps} steps ({p.attack.name}): {p.target}"
            for p in loaded]


def build_parser() -> argparse.ArgumentParser:
    presets = preset_names()
    described = describe_presets()
    parser = argparse.ArgumentParser(
        prog="fr-shield protect", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Protect every face in your photos against face recognition. Originals are never modified.",
        epilog="presets:\n" + "\n".join(described))
    parser.add_argument("paths", nargs="+", type=Path, help="photos or folders (searched recursively)")
    parser.add_argument("--out", required=True, type=Path, help="output folder (not the input folder or inside it)")
    parser.add_argument("--preset", default="mid", help=f"protection level: {', '.join(presets)} (default: mid)")
    parser.add_argument("--attack", default=None,
                        help=f"attack in conf/attack/: {', '.join(attack_names())} (default: the preset's)")
    parser.add_argument("--surrogates", default=None,
                        help="comma-separated surrogate models (default: the attack's; onnx:<path> for your own)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--no-face", default="copy", choices=["copy", "skip"],
                        help="photos without a face: copy them (location removed) or skip them")
    parser.add_argument("--keep-gps", action="store_true", help="keep the location (GPS) metadata")
    parser.add_argument("--json", dest="json_path", type=Path, default=None, help="also write the summary as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-estimate", action="store_true",
                        help="start at once, without the face count and timed short attack that estimate the duration")
    parser.add_argument("--weights-dir", default=None, help="weight cache (default: ~/.cache/fr_shield/weights)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: every core)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = ProtectOptions(preset=args.preset, attack=args.attack, device=args.device, no_face=args.no_face,
                             keep_gps=args.keep_gps, json_path=args.json_path, progress=not args.no_progress,
                             weights_dir=args.weights_dir, threads=args.threads, estimate=not args.no_estimate,
                             surrogates=[s for s in args.surrogates.split(",") if s] if args.surrogates else None)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return run_protect(args.paths, args.out, options).exit_code
    except (UsageError, ValueError, FrShieldError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
