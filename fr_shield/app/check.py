"""``fr-shield check ORIGINAL PROTECTED``: would face recognition still match the protected photos?

ORIGINAL and PROTECTED are two photos, or two folders whose photos are paired by relative path.
For every face of each original photo, and for every model, the original face's embedding is
compared with the protected face's embedding after each transform a platform may apply to an
upload (none; JPEG quality 75; resize to half and back; median and box blur, kernels 3 to 11).
A model *matches* when the similarity reaches its verification threshold (``spec.threshold``:
cosine for SFace and FaceNet, minus the Euclidean distance for dlib). A face is **protected**
when no model matches it under any transform; a photo is protected when all its faces are.
A model the photos were protected against (``protect``'s manifest in the protected folder says
which) is marked *used to protect*: it is white-box there, and only the other models say how
face recognition the tool was not made with would fare.

Faces are detected in both photos and paired by position; a face the detector no longer finds in
the protected photo is checked at the original's position. Transforms act on a padded region
around each face (aligned to the JPEG block grid), which equals transforming the whole photo
there and keeps a 30 MP photo cheap. Writes ``report.json`` and a self-contained
``report.html`` (images inline, no external links). Runs fully offline.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fr_shield.app.photo_files import is_photo_name
from fr_shield.app.protect import recorded_surrogates
from fr_shield.app.report_html import WHITE_BOX_NOTE, write_html
from fr_shield.core import transforms
from fr_shield.core.align import align_faces
from fr_shield.core.detect import Face, FaceDetector
from fr_shield.core.errors import FrShieldError, ImageError
from fr_shield.core.files import write_atomic
from fr_shield.core.imageio import load_rgb
from fr_shield.core.regions import face_region, region_margin, snap_region
from fr_shield.core.runtime import configure_torch, resolve_device
from fr_shield.models import create
from fr_shield.models.registry import check_names
from fr_shield.models.spec import pair_similarity

DEFAULT_MODELS = ("sface", "dlib_resnet", "facenet_casia")
KERNELS = (3, 5, 7, 9, 11)


@dataclass(frozen=True)
class CheckTransform:
    """One view a platform may make of a posted photo: a registry transform at one level."""

    transform: transforms.Transform
    level: object = None

    @property
    def label(self) -> str:
        return self.transform.label(self.level)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.transform.apply_platform(images, self.level)


CHECK_TRANSFORMS: tuple[CheckTransform, ...] = (
    CheckTransform(transforms.get("none")),
    CheckTransform(transforms.get("jpeg"), 75),
    CheckTransform(transforms.get("resize"), 0.5),
    *(CheckTransform(transforms.get("median_blur"), k) for k in KERNELS),
    *(CheckTransform(transforms.get("box_blur"), k) for k in KERNELS),
)


def get_transforms(labels: Sequence[str] | None) -> list[CheckTransform]:
    """The check views named by their labels (``none``, ``jpeg_q75``, ``median_k11``, ...); None: all."""
    if labels is None:
        return list(CHECK_TRANSFORMS)
    known = {t.label: t for t in CHECK_TRANSFORMS}
    unknown = [label for label in labels if label not in known]
    if unknown:
        raise ValueError(f"unknown check transform(s) {', '.join(unknown)}; available: {', '.join(known)}")
    return [known[label] for label in labels]


def pair_files(original: Path, protected: Path) -> tuple[list[tuple[str, Path, Path | None]], list[str]]:
    """[(relative name, original, protected)] and the originals that have no protected counterpart."""
    if original.is_file() and protected.is_file():
        return [(protected.name, original, protected)], []
    if original.is_dir() and protected.is_dir():
        pairs, seen = [], set()
        for file in sorted(protected.rglob("*")):
            relative = file.relative_to(protected)
            if not file.is_file() or not is_photo_name(file) or any(p.startswith(".") for p in relative.parts):
                continue
            seen.add(relative)
            counterpart = original / relative
            pairs.append((relative.as_posix(), counterpart, file))
        unmatched = [f.relative_to(original).as_posix() for f in sorted(original.rglob("*"))
                     if f.is_file() and is_photo_name(f) and f.relative_to(original) not in seen
                     and not any(p.startswith(".") for p in f.relative_to(original).parts)]
        return pairs, unmatched
    raise FrShieldError(f"ORIGINAL and PROTECTED must be two files or two folders: got {original} and {protected}")


def match_faces(originals: Sequence[Face], protected: Sequence[Face], ratio: np.ndarray) -> list[tuple[np.ndarray, bool]]:
    """For each original face: the protected photo's landmarks of the same face (or the original's, moved)."""
    result = []
    used: set[int] = set()
    for face in originals:
        expected = face.landmarks * ratio
        best, best_distance = None, float("inf")
        for index, candidate in enumerate(protected):
            if index in used:
                continue
            distance = float(np.linalg.norm(candidate.landmarks.mean(0) - expected.mean(0)))
            if distance < best_distance:
                best, best_distance = index, distance
        if best is not None and best_distance < 0.3 * max(float(face.box[2] * ratio[0]), 1.0):
            used.add(best)
            result.append((protected[best].landmarks, True))
        else:
            result.append((expected.astype(np.float32), False))
    return result


def _tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None].to(device)


def face_views(original: np.ndarray, protected: np.ndarray, box: np.ndarray, ratio: np.ndarray,
               gain: float = 10.0, size: int = 160) -> dict[str, np.ndarray]:
    """Before / after / amplified difference of one face (uint8 H x W x 3), for the report."""
    from PIL import Image

    x, y, w, h = [float(v) for v in box]
    pad_x, pad_y = 0.3 * w, 0.3 * h
    x0, y0 = max(0, int(x - pad_x)), max(0, int(y - pad_y))
    x1, y1 = min(original.shape[1], int(x + w + pad_x)), min(original.shape[0], int(y + h + pad_y))
    before = original[y0:y1, x0:x1]
    px0, py0 = round(float(x0 * ratio[0])), round(float(y0 * ratio[1]))
    px1, py1 = round(float(x1 * ratio[0])), round(float(y1 * ratio[1]))
    after = protected[py0:py1, px0:px1]
    if after.shape[:2] != before.shape[:2]:
        resized = Image.fromarray(np.clip(np.rint(after * 255), 0, 255).astype(np.uint8)).resize(
            (before.shape[1], before.shape[0]), Image.Resampling.LANCZOS)
        after = np.asarray(resized, np.float32) / 255.0
    difference = np.clip(0.5 + gain * (after - before), 0, 1)
    scale = size / max(before.shape[:2])
    views = {}
    for name, array in (("before", before), ("after", after), ("difference", difference)):
        image = Image.fromarray(np.clip(np.rint(array * 255), 0, 255).astype(np.uint8))
        if scale < 1:
            image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                                 Image.Resampling.LANCZOS if name != "difference" else Image.Resampling.BOX)
        views[name] = np.asarray(image)
    return views


class Checker:
    """Embeds original and protected faces under each transform with each model."""

    def __init__(self, models: Sequence[torch.nn.Module], detector: FaceDetector,
                 check_transforms: Sequence[CheckTransform] | None = None, device: torch.device | str = "cpu"):
        self.models = list(models)
        self.detector = detector
        self.transforms = list(check_transforms or CHECK_TRANSFORMS)
        self.device = torch.device(device)

    @torch.no_grad()
    def check_pair(self, name: str, original_path: Path, protected_path: Path | None) -> tuple[dict, list[dict]]:
        started = time.perf_counter()
        record = {"file": name, "original": str(original_path), "protected": str(protected_path),
                  "verdict": "error", "reason": "", "faces": [], "seconds": 0.0}
        if protected_path is None or not original_path.is_file():
            record["reason"] = f"no original at {original_path}"
            return record, []
        try:
            original = load_rgb(original_path)
            protected = load_rgb(protected_path)
        except ImageError as error:
            record["reason"] = str(error)
            return record, []
        originals = self.detector(original)
        if not originals:
            record.update(verdict="no face", reason="no face found in the original",
                          seconds=time.perf_counter() - started)
            return record, []
        ratio = np.array([protected.shape[1] / original.shape[1], protected.shape[0] / original.shape[0]], np.float32)
        pairs = match_faces(originals, self.detector(protected), ratio)
        clean = _tensor(original, self.device)[0]
        specs = [model.spec for model in self.models]
        visuals = []
        margin = region_margin(max(view.transform.reach(view.level) for view in self.transforms))
        for face, (points, detected) in zip(originals, pairs):
            # block 16: a JPEG's 8 x 8 grid stays aligned after halving the region
            x0, y0, x1, y1 = snap_region(face_region(points, specs, margin), protected.shape[:2], block=16)
            region = _tensor(protected[y0:y1, x0:x1], self.device)
            local = points - np.array([x0, y0], np.float32)
            views = torch.cat([transform(region) for transform in self.transforms])
            scores: dict[str, dict[str, float]] = {}
            matched: dict[str, dict[str, bool]] = {}
            for model in self.models:
                target = model(align_faces(clean, [face.landmarks], model.spec))
                crops = torch.cat([align_faces(view, [local], model.spec) for view in views])
                values = pair_similarity(model(crops), target.expand(len(crops), -1), model.spec).cpu().tolist()
                scores[model.spec.name] = {t.label: float(v) for t, v in zip(self.transforms, values)}
                matched[model.spec.name] = {t.label: bool(v >= model.spec.threshold) for t, v in zip(self.transforms, values)}
            matched_under = [f"{m}@{t}" for m, row in matched.items() for t, hit in row.items() if hit]
            record["faces"].append({
                "box": [float(v) for v in face.box], "detected_in_protected": detected,
                "verdict": "matched" if matched_under else "protected", "matched_under": matched_under,
                "similarity": scores, "matched": matched,
            })
            visuals.append(face_views(original, protected, face.box, ratio))
        record["verdict"] = "matched" if any(f["verdict"] == "matched" for f in record["faces"]) else "protected"
        record["seconds"] = time.perf_counter() - started
        return record, visuals


def run_check(original: Path, protected: Path, out: Path | None, checker: Checker, progress: bool = True,
              log: Callable[[str], None] = print, surrogates: set[str] | None = None) -> tuple[dict, int]:
    """Check every pair; write report.json and report.html into ``out``; return (report, exit code).

    ``surrogates``: the model names the photos were protected against (None: unknown)."""
    from tqdm import tqdm

    original, protected = Path(original).expanduser(), Path(protected).expanduser()
    pairs, unmatched = pair_files(original, protected)
    photos, visuals = [], {}
    for name, source, result in tqdm(pairs, desc="check", unit="photo", disable=not progress, file=sys.stderr):
        record, views = checker.check_pair(name, source, result)
        photos.append(record)
        visuals[name] = views
    for name in unmatched:
        photos.append({"file": name, "original": str(original / name), "protected": None, "verdict": "missing",
                       "reason": "no protected photo at this relative path", "faces": [], "seconds": 0.0})
    verdicts = [p["verdict"] for p in photos]
    report = {
        "original": str(original), "protected": str(protected),
        "models": {m.spec.name: {"similarity": m.spec.similarity, "threshold": m.spec.threshold,
                                 "used_to_protect": None if surrogates is None else m.spec.name in surrogates}
                   for m in checker.models},
        "transforms": [t.label for t in checker.transforms],
        "photos": photos,
        "summary": {v: verdicts.count(v) for v in sorted(set(verdicts))},
    }
    if out is not None:
        out = Path(out).expanduser()
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / "report.json", json.dumps(report, indent=2).encode())
        write_atomic(out / "report.html", write_html(report, visuals).encode("utf-8"))
    log(format_verdicts(report))
    if out is not None:
        log(f"\nreport: {out / 'report.html'}  ({out / 'report.json'})")
    return report, (1 if any(v == "error" for v in verdicts) else 0)


def format_verdicts(report: dict) -> str:
    """One line per photo: verdict, then per model how many transforms still match (worst face)."""
    models, count = list(report["models"]), len(report["transforms"])
    white_box = [m for m, info in report["models"].items() if info.get("used_to_protect")]
    heads = [(m[:13] + "*" if m in white_box else m[:14]) for m in models]
    lines = [f"{'file':36s} {'faces':>5s}  {'verdict':10s}  " + "  ".join(f"{h:>14s}" for h in heads),
             "-" * (56 + 16 * len(models))]
    for photo in report["photos"]:
        cells = []
        for model in models:
            hits = [sum(face["matched"][model].values()) for face in photo["faces"]]
            cells.append(f"{(f'{max(hits)}/{count} match' if hits else ''):>14s}")
        line = f"{photo['file'][-36:]:36s} {len(photo['faces']):5d}  {photo['verdict']:10s}  " + "  ".join(cells)
        lines.append(line + (f"  {photo['reason']}" if photo.get("reason") else ""))
    lines.append("\n" + ", ".join(f"{n} {v}" for v, n in report["summary"].items())
                 + f"  (transforms: {', '.join(report['transforms'])})")
    if white_box:
        lines.append("* used to protect these photos (white-box): " + WHITE_BOX_NOTE)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fr-shield check", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("original", type=Path, help="original photo or folder")
    parser.add_argument("protected", type=Path, help="protected photo or folder (paired by relative path)")
    parser.add_argument("--out", type=Path, default=Path("fr-shield-report"),
                        help="folder for report.html and report.json (default: ./fr-shield-report)")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS),
                        help="comma-separated models (registry names or onnx:<path>)")
    parser.add_argument("--transforms", default=None,
                        help="comma-separated subset of: " + ", ".join(t.label for t in CHECK_TRANSFORMS))
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--weights-dir", default=None)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: every core)")
    args = parser.parse_args(argv)
    try:  # names first: a typo is one line naming the valid options, before any photo or model is read
        names = check_names([name for name in args.models.split(",") if name])
        views = get_transforms(args.transforms.split(",") if args.transforms else None)
        for folder in (args.original, args.protected):
            if not folder.exists():
                raise FrShieldError(f"{folder} does not exist")
        configure_torch(args.threads)
        device = resolve_device(args.device)
        models = [create(name, args.weights_dir, device) for name in names]
        checker = Checker(models, FaceDetector(cache_dir=args.weights_dir), views, device)
        made_with = recorded_surrogates(args.protected)
        surrogates = None if made_with is None else {
            model.spec.name for name, model in zip(names, models) if name in made_with or model.spec.name in made_with}
        _, code = run_check(args.original, args.protected, args.out, checker, progress=not args.no_progress,
                            surrogates=surrogates)
    except (FrShieldError, ValueError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
