"""Speed benchmark (``make bench``): fr_shield's attack against a LowKey-style reference loop.

Every figure is measured in the same run, on the same machine, at the same attack settings:

* **reference**: ``fr_shield.attacks.reference`` - one photo at a time, one forward per model per
  branch per face, the full photo blurred and LPIPS'd every step, nothing cached;
* **batched**: ``ProtectionAttack`` with every speed-up that cannot change the result (photos and
  branches batched, clean features once, face regions only): it computes the same photo;
* **fast**: the same with ``conf/speed/fast.yaml`` on top: larger signed steps, and each photo
  stops once every surrogate's embedding of every branch view is past the model's match threshold.

Cases: LFW photos (250 x 250, one face) and composites at 2 and 12 megapixels with one and five
LFW faces pasted at a fixed size. Each case reports seconds per photo, the speed-up over the
reference, and protected-only top-1 (probes of the protected identities against a gallery of
distractors plus the protected photos, mean over the registry models) so no speed-up hides a loss
of protection. On the large photos the reference is timed for a few steps and scaled to the full
count (its steps all cost the same); the JSON says so. Also: FLOPs of one attack step against the
machine's measured matrix-product peak, and evaluation throughput (batched vs one at a time).

    python benchmarks/bench_attack.py --json outputs/bench.json [--attacks lowkey,ours] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from fr_shield.attacks.attack import ProtectionAttack
from fr_shield.attacks.config import AttackConfig, compose_attack
from fr_shield.attacks.protector import FaceProtector
from fr_shield.attacks.reference import reference_protect
from fr_shield.attacks.registry import build_attack
from fr_shield.core.align import align_faces
from fr_shield.core.detect import FaceDetector, central_face
from fr_shield.core.imageio import load_rgb
from fr_shield.core.paths import data_root
from fr_shield.core.perceptual import stlpips
from fr_shield.core.quality import photo_quality
from fr_shield.core.runtime import configure_torch, resolve_device
from fr_shield.models import create
from fr_shield.models.spec import pair_similarity
from fr_shield.study.config import EvalConfig
from fr_shield.study.data import scan_identities
from fr_shield.study.embed import Embedder, photo_tensor


@dataclass
class BenchSettings:
    attacks: list[str] = field(default_factory=lambda: ["lowkey"])
    identities: int = 5  # protected LFW identities, one gallery photo each (the composites paste them)
    probes: int = 3  # clean probe photos per protected identity
    distractors: int = 100  # other identities, one gallery photo each
    fast_speed: str = "fast"  # conf/speed/<name>.yaml: the fast variant's step settings and early stop
    steps: int | None = None  # override the attack's step count (smoke runs only)
    sizes: dict[str, tuple[int, int]] = field(default_factory=lambda: {"2mp": (1224, 1632), "12mp": (3000, 4000)})
    face_counts: list[int] = field(default_factory=lambda: [1, 5])
    face_tile: int = 400  # side (px) of each LFW photo pasted into a composite: faces of ~180 px
    reference_steps_large: int = 1  # reference steps timed on the composites, then scaled
    # The reference blurs and LPIPS'es the whole photo every step: at 12 MP one step took more than
    # 17 GB here and was killed for memory. Above this size it is not run (the JSON says so).
    reference_max_megapixels: float = 4.0
    large_cases: bool = True
    batched_row: bool = True  # also time the exact (no early stop) batched attack on LFW
    eval_photos: int = 32  # photos per model for the evaluation throughput
    peak_size: int = 2048  # side of the square matrix product that measures the peak
    seed: int = 0


# --------------------------------------------------------------------------- data


@dataclass
class Photo:
    identity: int  # index among the protected identities; -1 for distractors
    path: Path
    landmarks: np.ndarray


@dataclass
class Subset:
    protected: list[Photo]  # one gallery photo per protected identity
    probes: list[Photo]
    distractors: list[Photo]


def lfw_subset(settings: BenchSettings, detector: FaceDetector) -> Subset:
    """A seeded, fixed choice of LFW identities: the same photos in every run and every case."""
    identities = scan_identities(data_root() / "lfw-deepfunneled")
    rng = random.Random(settings.seed)
    names = sorted(identities)
    eligible = [n for n in names if len(identities[n]) > settings.probes]
    chosen = rng.sample(eligible, settings.identities)
    others = rng.sample([n for n in names if n not in chosen], settings.distractors)

    def located(identity: int, path: Path) -> Photo | None:
        image = load_rgb(path)
        face = central_face(detector(image), image.shape)
        return None if face is None else Photo(identity, path, face.landmarks)

    protected, probes, distractors = [], [], []
    for number, name in enumerate(chosen):
        photos = [p for p in (located(number, path) for path in identities[name][:settings.probes + 2]) if p]
        protected.append(photos[0])
        probes += photos[1:settings.probes + 1]
    for name in others:
        photo = located(-1, identities[name][0])
        if photo is not None:
            distractors.append(photo)
    return Subset(protected, probes, distractors)


def composite(subset: Subset, size: tuple[int, int], faces: int, tile: int,
              detector: FaceDetector) -> tuple[torch.Tensor, list[np.ndarray], list[int]]:
    """A ``size`` photo: a distractor stretched as background and ``faces`` LFW photos pasted on.

    Returns the photo [1, 3, H, W], the detected landmarks of each pasted face and its identity.
    """
    height, width = size
    background = photo_tensor(subset.distractors[0].path)
    canvas = F.interpolate(background, size=size, mode="bicubic", align_corners=False).clamp(0, 1)
    columns = max(1, min(faces, width // tile))
    slots = []
    for index in range(faces):
        row, column = divmod(index, columns)
        x0 = (column + 1) * width // (columns + 1) - tile // 2
        y0 = (row + 1) * height // ((faces + columns - 1) // columns + 1) - tile // 2
        face = F.interpolate(photo_tensor(subset.protected[index].path), size=(tile, tile), mode="bicubic",
                             align_corners=False).clamp(0, 1)
        canvas[:, :, y0:y0 + tile, x0:x0 + tile] = face
        slots.append((x0, y0))
    found = detector(canvas[0].permute(1, 2, 0).numpy())
    landmarks, identities = [], []
    for index, (x0, y0) in enumerate(slots):
        inside = [f for f in found if x0 <= f.landmarks[:, 0].mean() < x0 + tile and y0 <= f.landmarks[:, 1].mean() < y0 + tile]
        if inside:
            landmarks.append(max(inside, key=lambda f: f.area).landmarks)
            identities.append(index)
    return canvas, landmarks, identities


# --------------------------------------------------------------------------- protection measure


class Evaluator:
    """Protected-only top-1: clean probes against distractors plus the protected gallery photos."""

    def __init__(self, subset: Subset, models: dict[str, torch.nn.Module], device: torch.device):
        self.subset = subset
        self.models = models
        self.device = device
        self.probes = {n: self._embed_files(m, subset.probes) for n, m in models.items()}
        self.distractors = {n: self._embed_files(m, subset.distractors) for n, m in models.items()}

    def _embed_files(self, model, photos: list[Photo]) -> torch.Tensor:
        return Embedder(model, self.device).embed([p.path for p in photos], [p.landmarks for p in photos])

    @torch.no_grad()
    def top1(self, images: list[torch.Tensor], landmarks: list[list[np.ndarray]], identities: list[list[int]]) -> dict:
        """``images[i]`` holds protected faces ``landmarks[i]`` of identities ``identities[i]``."""
        present = sorted({i for ids in identities for i in ids})
        probe_mask = torch.tensor([p.identity in present for p in self.subset.probes])
        probe_labels = torch.tensor([p.identity for p in self.subset.probes])[probe_mask]
        result = {}
        for name, model in self.models.items():
            faces, labels = [], []
            for image, points, ids in zip(images, landmarks, identities):
                faces.append(model(align_faces(image[0].float().to(self.device), points, model.spec)).cpu())
                labels += ids
            gallery = torch.cat([torch.cat(faces), self.distractors[name]])
            gallery_labels = torch.tensor(labels + [-1] * len(self.distractors[name]))
            probes = self.probes[name][probe_mask]
            scores = pair_similarity(probes[:, None, :], gallery[None, :, :], model.spec)
            result[name] = float((gallery_labels[scores.argmax(dim=1)] == probe_labels).float().mean())
        result["mean"] = float(np.mean([result[n] for n in self.models]))
        return result


# --------------------------------------------------------------------------- timing helpers


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    value = function(*args, **kwargs)
    return value, time.perf_counter() - started


def peak_gflops(side: int, device: torch.device) -> float:
    """The machine's float32 matrix-product rate, measured now (best of five)."""
    a, b = torch.randn(side, side, device=device), torch.randn(side, side, device=device)
    a @ b
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    return 2 * side**3 / best / 1e9


def step_gflop(attack: ProtectionAttack, image: torch.Tensor, faces: list[np.ndarray]) -> float:
    """GFLOP of one attack step (objective forward and backward) on one photo."""
    targets = attack.objective.targets(image, [faces])
    adversarial = image.clone().requires_grad_(True)
    with FlopCounterMode(display=False) as counter:
        value, _ = attack.objective(adversarial, image, [faces], targets)
        value.sum().backward()
    return counter.get_total_flops() / 1e9


def quality_of(clean: list[torch.Tensor], protected: list[torch.Tensor], faces: list[list[np.ndarray]], metric) -> dict:
    rows = [photo_quality(c, p, f, metric) for c, p, f in zip(clean, protected, faces)]
    return {key: round(float(np.mean([r[key] for r in rows])), 4) for key in ("ssim_face", "lpips_face", "psnr_photo", "linf")}


# --------------------------------------------------------------------------- the cases


def load_attack_config(name: str, settings: BenchSettings, speed: str = "reference") -> AttackConfig:
    """``conf/attack/<name>.yaml`` with ``conf/speed/<speed>.yaml``, composed by Hydra (typed)."""
    overrides = [f"speed={speed}"] + ([f"attack.steps={settings.steps}"] if settings.steps is not None else [])
    return compose_attack(name, overrides)


def bench_attack(name: str, settings: BenchSettings, subset: Subset, evaluator: Evaluator, models: dict,
                 metric, detector: FaceDetector, device: torch.device, peak: float, emit) -> None:
    """Run every case of one attack; ``emit(case)`` receives each result as soon as it is measured."""
    config = load_attack_config(name, settings)
    surrogates = [models[n] for n in config.surrogates]
    exact = build_attack(config, device=device, surrogates=surrogates, perceptual=metric)
    fast_config = load_attack_config(name, settings, settings.fast_speed)
    fast = build_attack(fast_config, device=device, surrogates=surrogates, perceptual=metric)
    # Large photos: only the faces' regions are attacked (the tool's protector, without downscaling).
    regions = FaceProtector(fast_config, device, surrogates=surrogates, metric=metric, work_side=None)
    # The reference runs its own copy of the networks in PyTorch's default (contiguous) layout.
    reference_objective = copy.deepcopy(exact.objective).to(memory_format=torch.contiguous_format)
    steps = config.steps

    # LFW photos: every variant protects the same photos; protection measured on each result.
    images = [photo_tensor(p.path).to(device) for p in subset.protected]
    faces = [[p.landmarks] for p in subset.protected]
    ids = [[p.identity] for p in subset.protected]
    batch = torch.cat(images)
    reference, reference_seconds = timed(lambda: [reference_protect(reference_objective, exact.settings, image, f)
                                                  for image, f in zip(images, faces)])
    reference_top1 = evaluator.top1([r.cpu() for r in reference], faces, ids)
    variants = [("fast", fast)] + ([("batched", exact)] if settings.batched_row else [])
    flop = step_gflop(exact, images[0], faces[0])
    for label, attack in variants:
        result, seconds = timed(attack, batch, faces)
        protected = [result.protected[i:i + 1].cpu() for i in range(len(images))]
        per_image = seconds / len(images)
        image_steps = int(np.isfinite(np.array(result.objective)).sum())  # objective evaluations done
        log(f"{name} lfw_250/{label}: {per_image:.1f} s/photo (reference {reference_seconds / len(images):.1f})")
        emit({
            "name": f"lfw_250/{label}", "attack": name, "photo": "250x250", "faces": 1,
            "seconds_per_image": per_image, "reference_seconds_per_image": reference_seconds / len(images),
            "speedup": reference_seconds / seconds,
            "protected_top1": evaluator.top1(protected, faces, ids)["mean"],
            "reference_protected_top1": reference_top1["mean"],
            "protected_top1_per_model": evaluator.top1(protected, faces, ids),
            "reference_protected_top1_per_model": reference_top1,
            "mean_steps": image_steps / len(images), "reference_steps_measured": steps,
            "quality": quality_of([i.cpu() for i in images], protected, faces, metric),
            "reference_quality": quality_of([i.cpu() for i in images], [r.cpu() for r in reference], faces, metric),
            "gflop_per_step": flop,
            "achieved_fraction_of_peak": flop * image_steps / seconds / peak,
        })
    if not settings.large_cases:
        return

    # Large photos: the fast attack on face regions, the reference timed for a few steps.
    for size_name, size in settings.sizes.items():
        for count in settings.face_counts:
            photo, landmarks, identities = composite(subset, size, count, settings.face_tile, detector)
            photo = photo.to(device)
            per_photo, seconds = timed(regions.perturb, photo, [landmarks])
            parts = per_photo[0]
            protected = FaceProtector.paste(photo, parts)
            measured, reference_seconds = settings.reference_steps_large, None
            if size[0] * size[1] <= settings.reference_max_megapixels * 1e6:
                setup = timed(reference_protect, reference_objective, exact.settings, photo, landmarks, 0)[1]
                run = timed(reference_protect, reference_objective, exact.settings, photo, landmarks, measured)[1]
                reference_seconds = setup + (run - setup) / measured * steps
            log(f"{name} {size_name} {count} faces: {seconds:.1f} s/photo (reference {reference_seconds})")
            emit({
                "name": f"{size_name}_{count}face{'s' if count > 1 else ''}/fast", "attack": name,
                "photo": f"{size[1]}x{size[0]}", "faces": len(landmarks),
                "seconds_per_image": seconds, "reference_seconds_per_image": reference_seconds,
                "speedup": None if reference_seconds is None else reference_seconds / seconds,
                "protected_top1": evaluator.top1([protected.cpu()], [landmarks], [identities])["mean"],
                "reference_protected_top1": None,  # the reference is only timed here
                "mean_steps": float(np.mean([part.steps for part in parts])),
                "reference_steps_measured": measured if reference_seconds is not None else 0,
                "reference_note": (f"timed over {measured} step(s), scaled to {steps}" if reference_seconds is not None
                                   else f"not run: above {settings.reference_max_megapixels} MP (memory)"),
                "regions": [list(part.region) for part in parts],
            })
            del photo, protected, parts


def evaluation_throughput(subset: Subset, models: dict, count: int, device: torch.device) -> list[dict]:
    """Photos per second per model: batched embedding against one photo at a time."""
    photos = (subset.distractors + subset.probes)[:count]
    paths, landmarks = [p.path for p in photos], [p.landmarks for p in photos]
    rows = []
    for name, model in models.items():
        _, batched = timed(Embedder(model, device, batch_size=32).embed, paths, landmarks)

        @torch.no_grad()
        def one_at_a_time():
            for path, points in zip(paths, landmarks):
                model(align_faces(photo_tensor(path)[0].to(device), [points], model.spec))

        _, single = timed(one_at_a_time)
        rows.append({"model": name, "images_per_second": len(paths) / batched,
                     "reference_images_per_second": len(paths) / single, "speedup": single / batched})
    return rows


# --------------------------------------------------------------------------- report


def fmt(value, spec: str) -> str:
    width = int(spec.split(".")[0])
    return "-".rjust(width) if value is None else format(value, spec)


def print_table(report: dict) -> None:
    print(f"\nmachine: {report['machine']['cpu']} ({report['machine']['threads']} threads), "
          f"device {report['machine']['device']}; peak {report['peak_gflops']:.1f} GFLOP/s")
    header = f"{'case':22s} {'attack':9s} {'s/photo':>9s} {'ref s/photo':>12s} {'speed-up':>9s} {'top-1':>6s} {'ref top-1':>9s} {'steps':>6s}"
    print(header)
    print("-" * len(header))
    for case in report["cases"]:
        reference_top1 = case["reference_protected_top1"]
        print(f"{case['name']:22s} {case['attack']:9s} {case['seconds_per_image']:9.1f} "
              f"{fmt(case['reference_seconds_per_image'], '12.1f')} {fmt(case['speedup'], '8.1f')}x "
              f"{case['protected_top1']:6.1%} "
              f"{'-' if reference_top1 is None else f'{reference_top1:.1%}':>9s} {case['mean_steps']:6.1f}")
    for case in report["cases"]:
        if "gflop_per_step" in case:
            print(f"{case['attack']} {case['name']}: {case['gflop_per_step']:.1f} GFLOP per photo-step, "
                  f"{case['achieved_fraction_of_peak']:.1%} of peak; face SSIM {case['quality']['ssim_face']:.3f} "
                  f"(reference {case['reference_quality']['ssim_face']:.3f})")
    print("\nevaluation (photos/s): " + ", ".join(
        f"{row['model']} {row['images_per_second']:.1f} vs {row['reference_images_per_second']:.1f} ({row['speedup']:.1f}x)"
        for row in report["evaluation"]))


def parse(argv: list[str] | None) -> tuple[BenchSettings, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = BenchSettings()
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--attacks", default=",".join(defaults.attacks), help="conf/attack names, comma-separated")
    parser.add_argument("--identities", type=int, default=defaults.identities)
    parser.add_argument("--distractors", type=int, default=defaults.distractors)
    parser.add_argument("--speed", default=defaults.fast_speed, help="conf/speed/ option of the fast variant")
    parser.add_argument("--steps", type=int, help="override the attack's steps (smoke runs)")
    parser.add_argument("--quick", action="store_true", help="LFW photos only, no exact batched row")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args(argv)
    settings = BenchSettings(attacks=args.attacks.split(","), identities=args.identities,
                             distractors=args.distractors, fast_speed=args.speed, steps=args.steps,
                             large_cases=not args.quick, batched_row=not args.quick)
    return settings, args


def main(argv: list[str] | None = None) -> int:
    settings, args = parse(argv)
    configure_torch(args.threads)
    device = resolve_device(args.device)
    detector = FaceDetector()
    subset = lfw_subset(settings, detector)
    models = {name: create(name, device=device) for name in EvalConfig().models}  # the study's evaluators
    metric = stlpips("alex").to(device)
    peak = peak_gflops(settings.peak_size, device)
    evaluator = Evaluator(subset, models, device)
    report = {
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "cpus": os.cpu_count(), "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                    "torch": torch.__version__},
        "settings": asdict(settings),
        "peak_gflops": peak,
        "clean_top1": evaluator.top1([photo_tensor(p.path) for p in subset.protected],
                                     [[p.landmarks] for p in subset.protected], [[p.identity] for p in subset.protected]),
        "evaluation": evaluation_throughput(subset, models, settings.eval_photos, device),
        "cases": [],
        "complete": False,
    }

    def emit(case: dict) -> None:  # the JSON is rewritten after each case: a long run keeps its figures
        report["cases"].append(case)
        write(report, args.json)

    for name in settings.attacks:
        bench_attack(name, settings, subset, evaluator, models, metric, detector, device, peak, emit)
    report["complete"] = True
    write(report, args.json)
    print_table(report)
    if args.json:
        print(f"\nwrote {args.json}")
    return 0


def write(report: dict, path: Path | None) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    sys.exit(main())
