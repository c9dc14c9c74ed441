"""Speed of the tool a person runs (``make bench``): ``fr-shield protect --preset P`` end to end.

Each case protects one photo the way the CLI does (``fr_shield.app.protect.run_protect``: read,
detect, attack, per-face budget, encode, write, measure) twice in the same run: with the preset as
it ships, and with every speed-up of the preset switched off (the **reference path**: all branches
every step, the perceptual penalty on the whole work region as well, the step count the preset had
before its speed-ups). Models are loaded once per path, before the timing.

Photos, as JPEG files: ``lfw`` (an LFW photo, 250 x 250, one face), ``12mp`` (4000 x 3000, one LFW photo pasted at
1200 px: a large face, attacked downscaled), ``group6`` (2000 x 1333, six LFW photos pasted at
250 px: six faces of LFW size). Each case reports seconds per face for both paths, the speed-up,
the per-face SSIM / ST-LPIPS / Delta E reached, and the held-out similarity: the mean cosine
similarity between each clean and protected face on face-recognition models the preset does not
use as surrogates (``../shared/models``, research use only; absent on a user's machine: null), so
a faster setting that protects less shows it.

    python benchmarks/bench_protect.py --json experiments/bench_protect_cpu.json [--presets mid] [--photos lfw,12mp,group6]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from fr_shield.app.protect import ProtectOptions, run_protect
from fr_shield.attacks.config import compose_preset, preset_names
from fr_shield.attacks.protector import FaceProtector
from fr_shield.core.align import align_faces
from fr_shield.core.detect import FaceDetector
from fr_shield.core.imageio import load_rgb
from fr_shield.core.paths import data_root
from fr_shield.core.perceptual import stlpips
from fr_shield.core.runtime import configure_torch
from fr_shield.models import create
from fr_shield.models.registry import ONNX_PREFIX
from fr_shield.models.spec import pair_similarity

PHOTOS = ("lfw", "12mp", "group6")
LFW_IDENTITIES = ("George_W_Bush", "Colin_Powell", "Tony_Blair", "Donald_Rumsfeld", "Gerhard_Schroeder",
                  "Ariel_Sharon")
# Every speed-up off: the preset as it was before issue 14 (step count included).
REFERENCE = {"face_penalty_only": None, "branches_per_step": None}
REFERENCE_STEPS = {"mid": 50}  # conf/preset/mid.yaml before its speed-ups
HELDOUT_MODELS = ("mfn_arcface_ms1m", "mfn_mxnet_b", "mfn_relu6")  # ../shared/models, never surrogates


def lfw_photo(identity: str) -> np.ndarray:
    path = data_root() / "lfw-deepfunneled" / identity / f"{identity}_0001.jpg"
    if not path.is_file():
        raise SystemExit(f"LFW photo missing: {path} (the benchmark needs the LFW data folder)")
    return load_rgb(path)


def pasted(size: tuple[int, int], identities: tuple[str, ...], tile: int) -> np.ndarray:
    """A ``size`` (H, W) photo: a smooth grey-blue gradient with LFW photos pasted on a grid."""
    height, width = size
    ramp = np.linspace(0.35, 0.75, height, dtype=np.float32)[:, None, None]
    canvas = np.broadcast_to(ramp * np.array([0.85, 0.9, 1.0], np.float32), (height, width, 3)).copy()
    columns = min(len(identities), max(1, width // (tile + tile // 4)))
    rows = (len(identities) + columns - 1) // columns
    for index, identity in enumerate(identities):
        row, column = divmod(index, columns)
        face = torch.from_numpy(lfw_photo(identity)).permute(2, 0, 1)[None]
        face = F.interpolate(face, size=(tile, tile), mode="bicubic", align_corners=False).clamp(0, 1)
        x0 = (column + 1) * width // (columns + 1) - tile // 2
        y0 = (row + 1) * height // (rows + 1) - tile // 2
        canvas[y0:y0 + tile, x0:x0 + tile] = face[0].permute(1, 2, 0).numpy()
    return canvas


def make_photo(kind: str, folder: Path) -> Path:
    """The case's photo as a JPEG file in ``folder``, as a camera or LFW would give it."""
    source = folder / f"{kind}.jpg"
    if kind == "lfw":
        path = data_root() / "lfw-deepfunneled" / LFW_IDENTITIES[0] / f"{LFW_IDENTITIES[0]}_0001.jpg"
        source.write_bytes(path.read_bytes())
        return source
    if kind == "12mp":
        image = pasted((3000, 4000), LFW_IDENTITIES[:1], 1200)
    elif kind == "group6":
        image = pasted((1333, 2000), LFW_IDENTITIES, 250)
    else:
        raise SystemExit(f"unknown photo '{kind}'; choose from {', '.join(PHOTOS)}")
    Image.fromarray(np.round(image * 255).astype(np.uint8)).save(source, quality=95)
    return source


class HeldOut:
    """Clean-vs-protected face similarity on models the preset never used (None without them)."""

    def __init__(self, surrogates: list[str]):
        folder = data_root().parent / "models"
        names = [f"{ONNX_PREFIX}{folder / (name + '.onnx')}" for name in HELDOUT_MODELS
                 if (folder / f"{name}.onnx").is_file() and name not in surrogates]
        self.models = [create(name) for name in names]

    def __call__(self, clean: np.ndarray, protected: np.ndarray, landmarks: list[np.ndarray]) -> float | None:
        if not self.models or not landmarks:
            return None
        values = []
        for model in self.models:
            with torch.no_grad():
                pair = [model(align_faces(torch.from_numpy(image).permute(2, 0, 1), landmarks, model.spec))
                        for image in (clean, protected)]
            values.extend(pair_similarity(pair[0], pair[1], model.spec).tolist())
        return float(np.mean(values))


def protect_once(photo: Path, out: Path, preset: str, protector: FaceProtector,
                 detector: FaceDetector) -> dict:
    """One ``fr-shield protect`` of ``photo`` with an already loaded protector; its summary row."""
    options = ProtectOptions(preset=preset, progress=False, estimate=False)
    result = run_protect([photo], out, options, protector_factory=lambda p, d: protector, detector=detector,
                         log=lambda text: None)
    row = result.rows[0]
    if row["status"] != "protected":
        raise SystemExit(f"{photo.name}: {row['status']} ({row.get('reason', '')})")
    return row


def bench_preset(name: str, photos: list[str], folder: Path, detector: FaceDetector, metric,
                 steps: int | None = None) -> list[dict]:
    """Both paths of preset ``name`` on each photo; ``steps`` (smoke runs only) sets both step counts."""
    smoke = [] if steps is None else [f"preset.attack.steps={steps}"]
    shipped = compose_preset(name, overrides=smoke)
    overrides = [f"preset.attack.{key}=null" for key in REFERENCE]
    if name in REFERENCE_STEPS:
        overrides.append(f"preset.attack.steps={REFERENCE_STEPS[name]}")
    reference = compose_preset(name, overrides=overrides + smoke)
    fast = FaceProtector(shipped.attack, metric=metric)
    slow = FaceProtector(reference.attack, surrogates=fast.models, metric=metric)
    heldout = HeldOut(list(shipped.attack.surrogates))
    cases = []
    for kind in photos:
        source = make_photo(kind, folder)
        clean = load_rgb(source)
        landmarks = [face.landmarks for face in detector(clean)]
        rows = {}
        for path, protector in (("shipped", fast), ("reference", slow)):
            out = folder / f"{name}_{kind}_{path}"
            rows[path] = protect_once(source, out, name, protector, detector)
            print(f"  {name} {kind} {path}: {rows[path]['seconds']:.1f} s, {rows[path]['faces']} face(s)",
                  file=sys.stderr, flush=True)
        row, ref = rows["shipped"], rows["reference"]
        faces = row["faces"]
        details = row["face_details"]
        protected = load_rgb(Path(row["output"]))
        reference_protected = load_rgb(Path(ref["output"]))
        cases.append({
            "name": f"protect_{name}_{kind}", "preset": name, "photo": kind,
            "size": [int(clean.shape[1]), int(clean.shape[0])], "faces": faces,
            "seconds_per_face": row["seconds"] / faces, "reference_seconds_per_face": ref["seconds"] / faces,
            "speedup": ref["seconds"] / row["seconds"],
            "ssim_face": float(np.mean([d["ssim"] for d in details])),
            "lpips_face": float(np.mean([d["lpips"] for d in details])),
            "delta_e_face": float(np.mean([d["delta_e"] for d in details])),
            "heldout_similarity": heldout(clean, protected, landmarks),
            "reference_ssim_face": float(np.mean([d["ssim"] for d in ref["face_details"]])),
            "reference_heldout_similarity": heldout(clean, reference_protected, landmarks),
        })
    return cases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default="mid", help=f"comma-separated, of {', '.join(preset_names())}")
    parser.add_argument("--photos", default=",".join(PHOTOS))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="smoke runs only: this many steps on both paths")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    configure_torch(args.threads)
    detector, metric = FaceDetector(), stlpips("alex")
    report = {"machine": {"python": platform.python_version(), "torch": torch.__version__,
                          "threads": torch.get_num_threads(), "processor": platform.processor() or platform.machine()},
              "started": time.strftime("%Y-%m-%d %H:%M:%S"), "reference": {**REFERENCE, "steps": REFERENCE_STEPS},
              "smoke_steps": args.steps,
              "cases": []}
    with tempfile.TemporaryDirectory() as temp:
        for name in args.presets.split(","):
            report["cases"].extend(bench_preset(name, args.photos.split(","), Path(temp), detector, metric,
                                                       args.steps))
            if args.json:  # rewritten after each preset: a long run keeps its figures
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'case':28s} {'faces':>5s} {'s/face':>8s} {'ref s/face':>10s} {'speed-up':>8s} {'SSIM':>6s} "
          f"{'held-out sim':>12s} {'ref held-out':>12s}")
    for case in report["cases"]:
        sim = case["heldout_similarity"]
        ref_sim = case["reference_heldout_similarity"]
        print(f"{case['name']:28s} {case['faces']:5d} {case['seconds_per_face']:8.1f} "
              f"{case['reference_seconds_per_face']:10.1f} {case['speedup']:8.2f} {case['ssim_face']:6.3f} "
              f"{'' if sim is None else f'{sim:.3f}':>12s} {'' if ref_sim is None else f'{ref_sim:.3f}':>12s}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
