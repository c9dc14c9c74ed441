"""Where one attack step's time goes (issue 14): a preset's step on a real photo, part by part.

Each part of one step is run on its own, forward and backward, on the tensors the attack would
give it (the preset's work region of the photo, its branch views, the aligned crops), and timed
over ``--repeats`` runs after a warm-up; FLOPs come from ``torch.utils.flop_counter`` and are
compared with a float32 matrix-product peak measured in the same run. The parts:

* ``branch <kind>``: a branch view of the work region (the median blur is the costly one);
* ``align <model>``: the differentiable warps from every view to the model's crops;
* ``surrogate <model>``: the model on every view's crops (with the preset's feature dropout);
* ``ST-LPIPS``: the perceptual penalty (face crop and the work region, clean side cached);
* ``budget SSIM`` / ``budget Delta E``: the in-loop budget's terms (its ST-LPIPS is the penalty's,
  computed once per step);
* ``whole step``: the objective and budget forward plus the backward, as the loop runs it; the
  parts need not add up to it exactly (shared views are built once there).

    python benchmarks/profile_step.py --preset mid [--photo PATH] [--markdown experiments/profile_mid.md]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from fr_shield.attacks.attack import ProtectionAttack
from fr_shield.attacks.config import compose_preset
from fr_shield.attacks.objective import crops_of
from fr_shield.attacks.protector import FaceProtector
from fr_shield.core.align import FACE_CROP
from fr_shield.core.detect import FaceDetector
from fr_shield.core.imageio import load_rgb
from fr_shield.core.paths import data_root
from fr_shield.core.quality import delta_e, ssim
from fr_shield.core.runtime import configure_torch


def matmul_peak(size: int = 1024, repeats: int = 5) -> float:
    """GFLOP/s of a float32 square matrix product on this machine, now."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size ** 3 * repeats / (time.perf_counter() - started) / 1e9


def timed(run: Callable[[], torch.Tensor], repeats: int) -> tuple[float, float]:
    """(seconds, GFLOP) of ``run()`` forward plus the backward of its sum."""
    def once():
        value = run()
        value.float().sum().backward()

    once()
    with FlopCounterMode(display=False) as counter:
        once()
    started = time.perf_counter()
    for _ in range(repeats):
        once()
    return (time.perf_counter() - started) / repeats, counter.get_total_flops() / 1e9


def profile(preset_name: str, photo: Path, repeats: int) -> tuple[list[tuple[str, float, float]], dict]:
    preset = compose_preset(preset_name)
    protector = FaceProtector(preset.attack)
    rgb = load_rgb(photo)
    faces = [face.landmarks for face in FaceDetector()(rgb)]
    if not faces:
        raise SystemExit(f"no face found in {photo}")
    image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float()
    region, members = protector.regions(faces, tuple(image.shape[-2:]))[0]
    item = protector._work_item(image, 0, region, members, faces)
    attack: ProtectionAttack = protector._attack_at(item["scale"])
    objective = attack.objective
    clean, work_faces = item["work"], [item["faces"]]
    targets = objective.targets(clean, work_faces)
    point = (clean + 2 / 255 * torch.randn_like(clean)).clamp(0, 1).requires_grad_(True)
    n_views = len(objective.views(point.detach()))
    rows: list[tuple[str, float, float]] = []

    def add(name: str, run: Callable[[], torch.Tensor]) -> None:
        seconds, gflop = timed(run, repeats)
        rows.append((name, seconds, gflop))

    for branch in objective.branches:
        add(f"branch {branch.kind} k{branch.kernel_size}", lambda b=branch: b(point))
    views = torch.cat([view.detach() for view in objective.views(point.detach())]).requires_grad_(True)
    for model in objective.surrogates:
        add(f"align {model.spec.name} ({n_views} views)", lambda m=model: crops_of(views, work_faces * n_views, m.spec))
    rates = targets.dropout_rates or [0.0] * len(objective.surrogates)
    for model, rate in zip(objective.surrogates, rates):
        crops = crops_of(views.detach(), work_faces * n_views, model.spec).requires_grad_(True)
        add(f"surrogate {model.spec.name} ({n_views} views)",
            lambda m=model, c=crops, r=rate: objective.surrogate(m, c, dropout=r)[0])
    if objective.perceptual is not None and objective.alpha > 0:
        add("ST-LPIPS penalty (face crop" + ("" if objective.face_penalty_only else " + region") + ")",
            lambda: objective.perceptual_term(point, clean, work_faces, targets))
    clean_crops = crops_of(clean, work_faces, FACE_CROP)
    budget = attack.settings.budget
    if budget is not None:
        if budget.ssim_min is not None:
            add("budget SSIM", lambda: ssim(clean_crops, crops_of(point, work_faces, FACE_CROP)))
        if budget.delta_e_max is not None:
            add("budget Delta E", lambda: delta_e(clean_crops, crops_of(point, work_faces, FACE_CROP))[0])

    def whole_step() -> torch.Tensor:
        value, parts = objective(point, clean, work_faces, targets, budget=budget)
        return value if budget is None else value - parts["excess"]

    add("whole step", whole_step)
    context = {"preset": preset_name, "photo": str(photo), "region": list(map(int, region)),
               "work": list(clean.shape[-2:]), "views": n_views, "threads": torch.get_num_threads(),
               "steps": attack.settings.steps, "peak_gflops": matmul_peak()}
    return rows, context


def markdown(rows: list[tuple[str, float, float]], context: dict) -> str:
    step = dict((name, seconds) for name, seconds, _ in rows)["whole step"]
    lines = [f"Preset `{context['preset']}`, photo `{Path(context['photo']).name}`, work region "
             f"{context['work'][1]} x {context['work'][0]} px, {context['views']} views, "
             f"{context['threads']} threads; matrix-product peak {context['peak_gflops']:.0f} GFLOP/s.", "",
             "| part (forward + backward) | ms | share of a step | GFLOP | GFLOP/s | of peak |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, seconds, gflop in rows:
        rate = gflop / seconds if seconds > 0 else 0.0
        lines.append(f"| {name} | {seconds * 1e3:.0f} | {seconds / step:.0%} | {gflop:.2f} | {rate:.1f} | "
                     f"{rate / context['peak_gflops']:.0%} |")
    lines.append(f"\nOne step {step:.2f} s; the preset's {context['steps']} steps about "
                 f"{step * context['steps']:.0f} s per face (the budget's bisection and I/O come on top).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="mid")
    parser.add_argument("--photo", type=Path, default=None, help="default: LFW George_W_Bush_0001")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)
    configure_torch(args.threads)
    photo = args.photo or data_root() / "lfw-deepfunneled" / "George_W_Bush" / "George_W_Bush_0001.jpg"
    rows, context = profile(args.preset, photo, args.repeats)
    text = markdown(rows, context)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
