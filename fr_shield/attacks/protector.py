"""One ``FaceProtector`` for the tool and the study: regions, downscaling, mask, attack, budget.

For each photo:

1. **regions** - every face's region (what its crops, the mask and the attack's blurs read, plus a
   margin; ``fr_shield.core.regions``), overlapping regions merged. When they cover at least
   ``whole_photo_fraction`` of the photo, the whole photo is one region (the study passes 0: LowKey
   attacks the full-resolution photo). A region's objective is the photo's restricted to it: the
   full-photo half of the perceptual penalty is weighted by the region's share of the photo.
2. **downscaling** - a region whose smallest face spans more than ``work_side`` photo pixels (its
   112-pixel crop) is attacked on a downscaled copy (the models see faces at <= 160 px anyway),
   with blur branches and EOT kernels scaled to that resolution; the perturbation is upscaled back.
3. **mask** - with ``mask: face`` the perturbation is bounded per pixel by ``linf`` (or 1) times a
   feathered ellipse over each face, so it is exactly zero elsewhere; with ``texture_floor`` also
   times the clean face's texture weight (``fr_shield.core.regions.texture_weight``): the bound
   stays whole on hair, brows and edges and shrinks to that fraction on flat skin; with
   ``jnd_scale`` it is at most that multiple of the clean face's just-noticeable difference of
   brightness (``fr_shield.core.regions.jnd_map``).
4. **attack** - regions of the same shape and scale are attacked as one batch.
5. **budget** - with ``ssim_min`` / ``lpips_max`` set, each region's perturbation is scaled down by
   bisection until every face meets the budget on what will be saved (``render``).

Pixels outside the regions are never changed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from fr_shield.attacks.attack import ProtectionAttack
from fr_shield.attacks.budget import Budget, enforce_budget
from fr_shield.attacks.config import AttackConfig, BranchConfig, EOTFamilyConfig, to_attack_config
from fr_shield.attacks.eot import scale_families
from fr_shield.attacks.objective import Faces
from fr_shield.attacks.registry import build_attack
from fr_shield.core import transforms
from fr_shield.core.perceptual import stlpips
from fr_shield.core.regions import (cluster_regions, face_region, face_side, jnd_map, region_margin, snap_region,
                                   soft_mask, texture_weight)

WORK_SIDE = 224.0  # faces whose 112-crop spans more photo pixels than this are attacked downscaled
WHOLE_PHOTO_FRACTION = 0.5  # attack the whole photo when its face regions cover this much of it
IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])

Region = tuple[int, int, int, int]  # x0, y0, x1, y1 in photo pixels
Render = Callable[[torch.Tensor], torch.Tensor]


def quantise(image: torch.Tensor) -> torch.Tensor:
    """Round to 8 bits, as the saved file will be: quality is measured on what gets posted."""
    return torch.round(image.clamp(0, 1) * 255) / 255


def scaled_attack_config(config: AttackConfig, scale: float) -> AttackConfig:
    """The attack settings for a face attacked at ``scale`` (< 1) of the photo's resolution: branch
    and EOT blur kernels rounded to the nearest odd size, sigmas scaled; a blur branch that shrinks
    under 3 px is dropped (the identity branch stays)."""
    branches: list[BranchConfig] = []
    for branch in config.branches:
        transform = transforms.get(branch.kind)
        if transform.scales_with_resolution:
            kernel = transform.scaled(branch.kernel_size, scale)
            if kernel is None:
                continue
            sigma = None if branch.sigma is None else branch.sigma * scale
            branch = BranchConfig(branch.kind, kernel, sigma)
        if branch not in branches:
            branches.append(branch)
    eot = config.eot
    if eot is not None:
        families = None if eot.families is None else [{"name": f.name, "levels": list(f.levels)} for f in eot.families]
        eot = dataclasses.replace(eot, families=[EOTFamilyConfig(f["name"], f["levels"])
                                                 for f in scale_families(families, scale)])
    return dataclasses.replace(config, branches=branches or [BranchConfig()], eot=eot)


@dataclass
class RegionResult:
    """One attacked region of one photo, at full resolution."""

    region: Region
    members: list[int]  # indices of the photo's faces inside it
    protected: torch.Tensor  # [1, 3, h, w] the region after the attack (float, unquantised)
    work_scale: float = 1.0  # < 1: attacked on a downscaled copy
    objective: list[float] = field(default_factory=list)  # per step
    lpips: list[float] = field(default_factory=list)
    steps: int = 0


@dataclass
class FaceRecord:
    """What happened to one face: its budget scale and quality as saved, per-model similarity."""

    box: list[float]
    lpips: float = float("nan")
    ssim: float = float("nan")
    scale: float = 1.0  # lambda of the budget (1: the attack fitted as it was)
    budget_met: bool = True
    similarity: dict[str, float] = field(default_factory=dict)
    work_scale: float = 1.0  # < 1: attacked on a downscaled copy of its region
    delta_e: float = float("nan")  # mean CIE76 colour difference on the face crop


class FaceProtector:
    """Protects the faces of photos with one attack setting; holds the surrogates and the metric."""

    def __init__(self, config, device: torch.device | str = "cpu", weights_dir=None,
                 surrogates: list[torch.nn.Module] | None = None, metric: torch.nn.Module | None = None,
                 work_side: float | None = WORK_SIDE, whole_photo_fraction: float = WHOLE_PHOTO_FRACTION):
        """``metric``: the ST-LPIPS (alex) that measures quality and budgets. ``surrogates``:
        networks to use instead of loading ``config.surrogates``. ``work_side`` None: never downscale."""
        self.config = to_attack_config(config)
        self.device = torch.device(device)
        self.metric = metric if metric is not None else stlpips("alex", weights_dir).to(self.device)
        # The attack's penalty is the measuring metric when both are ST-LPIPS alex; else its own.
        perceptual = self.metric if self.config.alpha > 0 and self.config.lpips_backbone == "alex" else None
        self.attack = build_attack(self.config, weights_dir, self.device, surrogates, perceptual)
        self.budget = Budget.of(self.config)
        self.work_side = work_side
        self.whole_photo_fraction = whole_photo_fraction
        self._scaled: dict[float, ProtectionAttack] = {}

    @property
    def models(self) -> list[torch.nn.Module]:
        return list(self.attack.objective.surrogates)

    @property
    def model_names(self) -> list[str]:
        return [m.spec.name for m in self.models]

    # ----------------------------------------------------------------------- geometry

    def _scale_of(self, landmarks: Sequence[np.ndarray]) -> float:
        if self.work_side is None or not len(landmarks):
            return 1.0
        return min(1.0, self.work_side / min(face_side(points) for points in landmarks))

    def regions(self, faces: Sequence[np.ndarray], image_hw: tuple[int, int]) -> list[tuple[Region, list[int]]]:
        """The regions (x0, y0, x1, y1) attacked for ``faces`` and the faces in each."""
        specs = [model.spec for model in self.models]
        rects = []
        for points in faces:
            margin = region_margin(self.attack.objective.reach, self._scale_of([points]))
            rects.append(snap_region(face_region(points, specs, margin), image_hw))
        groups = cluster_regions(rects)
        covered = sum((x1 - x0) * (y1 - y0) for (x0, y0, x1, y1), _ in groups)
        if groups and covered >= self.whole_photo_fraction * image_hw[0] * image_hw[1]:
            return [((0, 0, image_hw[1], image_hw[0]), list(range(len(faces))))]
        return groups

    def _attack_at(self, scale: float) -> ProtectionAttack:
        """The attack with its blur kernels scaled to the working resolution (``scaled_attack_config``):
        a platform blurs the photo at its own resolution, median k = 11 there is k ~ 5 at half size."""
        if scale >= 1.0:
            return self.attack
        if scale not in self._scaled:
            objective = self.attack.objective
            self._scaled[scale] = build_attack(scaled_attack_config(self.config, scale), device=self.device,
                                               surrogates=list(objective.surrogates), perceptual=objective.perceptual)
        return self._scaled[scale]

    # ----------------------------------------------------------------------- the attack

    def perturb(self, images: torch.Tensor, faces: Faces, on_step=None) -> list[list[RegionResult]]:
        """Attack every face of every photo ``images`` [B, 3, H, W]; per photo, its attacked regions."""
        items = []  # (photo, region, members, work image, work faces, scale, weight, bound)
        for index, photo_faces in enumerate(faces):
            image_hw = tuple(images.shape[-2:])
            for region, members in self.regions(photo_faces, image_hw):
                items.append(self._work_item(images[index:index + 1], index, region, members, photo_faces))
        results: list[list[RegionResult]] = [[] for _ in faces]
        groups: dict[tuple, list[dict]] = {}
        for item in items:
            groups.setdefault((tuple(item["work"].shape), item["scale"], item["whole"]), []).append(item)
        for (_, scale, whole), group in groups.items():
            batch = torch.cat([item["work"] for item in group])
            weights = None if whole else torch.tensor([item["weight"] for item in group], dtype=batch.dtype,
                                                      device=batch.device)
            bounds = None if group[0]["bound"] is None else torch.cat([item["bound"] for item in group])
            with torch.enable_grad():
                outcome = self._attack_at(scale)(batch, [item["faces"] for item in group], on_step, weights, bounds)
            for slot, item in enumerate(group):
                protected = self._full_resolution(item, outcome.protected[slot:slot + 1])
                curve = [step[slot] for step in outcome.objective]
                lpips = [step[slot] for step in outcome.lpips]
                steps = outcome.steps_taken[slot] if outcome.steps_taken else 0
                results[item["photo"]].append(RegionResult(item["region"], item["members"], protected, scale,
                                                           curve, lpips, steps))
        return results

    def _work_item(self, image: torch.Tensor, photo: int, region: Region, members: list[int],
                   faces: Sequence[np.ndarray]) -> dict:
        x0, y0, x1, y1 = region
        height, width = image.shape[-2:]
        whole = (x0, y0, x1, y1) == (0, 0, width, height)
        clean = image if whole else image[:, :, y0:y1, x0:x1]
        landmarks = [np.asarray(faces[i], np.float32) - np.array([x0, y0], np.float32) for i in members]
        scale = self._scale_of(landmarks)
        if scale < 1.0:
            size = (max(1, round((y1 - y0) * scale)), max(1, round((x1 - x0) * scale)))
            work = F.interpolate(clean, size=size, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
            fx, fy = size[1] / (x1 - x0), size[0] / (y1 - y0)
            work_faces = [np.stack([(p[:, 0] + 0.5) * fx - 0.5, (p[:, 1] + 0.5) * fy - 0.5], 1).astype(np.float32)
                          for p in landmarks]
            to_region = np.array([[1 / fx, 0, 0.5 / fx - 0.5], [0, 1 / fy, 0.5 / fy - 0.5]])
        else:
            work, work_faces, to_region = clean, landmarks, IDENTITY
        bound = None
        if self.config.mask == "face":
            limit = self.config.linf if self.config.linf is not None else 1.0
            bound = (limit * soft_mask(tuple(work.shape[-2:]), landmarks, to_region))[None, None].to(work)
            if self.config.texture_floor is not None:
                bound = bound * texture_weight(work, self.config.texture_floor)
            if self.config.jnd_scale is not None:
                bound = torch.minimum(bound, bound / limit * self.config.jnd_scale * jnd_map(work))
        # The full-photo penalty restricted to the region: its share of the photo, spread over its faces.
        weight = len(faces) / len(members) * (x1 - x0) * (y1 - y0) / (height * width)
        return {"photo": photo, "region": region, "members": members, "clean": clean, "work": work,
                "faces": work_faces, "landmarks": landmarks, "scale": scale, "whole": whole, "weight": weight,
                "bound": bound}

    def _full_resolution(self, item: dict, protected: torch.Tensor) -> torch.Tensor:
        if item["scale"] >= 1.0:
            return protected.detach()
        clean = item["clean"]
        delta = F.interpolate((protected - item["work"]).detach(), size=tuple(clean.shape[-2:]), mode="bilinear",
                              align_corners=False)
        if self.config.mask == "face":
            delta = delta * soft_mask(tuple(clean.shape[-2:]), item["landmarks"], IDENTITY).to(delta)
        return (clean + delta).clamp(0, 1)

    @staticmethod
    def paste(image: torch.Tensor, regions: Sequence[RegionResult]) -> torch.Tensor:
        """``image`` [1, 3, H, W] with each region's protected pixels in place."""
        result = image.clone()
        for part in regions:
            x0, y0, x1, y1 = part.region
            result[:, :, y0:y1, x0:x1] = part.protected
        return result

    # ----------------------------------------------------------------------- the budget

    def apply_budget(self, clean: torch.Tensor, attacked: torch.Tensor, faces: Sequence[np.ndarray],
                     render: Render | None = None) -> tuple[torch.Tensor, list[FaceRecord]]:
        """The photo as saved [1, 3, H, W] (8-bit values): each region's perturbation
        ``attacked - clean`` scaled until every face meets the budget on ``render``(region)
        (default: 8-bit rounding); and a record per face. Without a budget lambda is 1."""
        # Only the regions change (the rest of ``attacked`` is the photo's own 8-bit pixels): a
        # 30 MP photo is not re-quantised whole.
        result = attacked.clone()
        records = [FaceRecord(box=[]) for _ in faces]
        render = render or quantise
        for (x0, y0, x1, y1), members in self.regions(faces, tuple(clean.shape[-2:])):
            if self.budget is None:
                result[:, :, y0:y1, x0:x1] = quantise(attacked[:, :, y0:y1, x0:x1])
                continue
            region_clean = clean[:, :, y0:y1, x0:x1]
            delta = attacked[:, :, y0:y1, x0:x1] - region_clean
            landmarks = [np.asarray(faces[i], np.float32) - np.array([x0, y0], np.float32) for i in members]
            outcome = enforce_budget(region_clean, delta, landmarks, self.budget, self.metric, render)
            result[:, :, y0:y1, x0:x1] = quantise((region_clean + outcome.scale * delta).clamp(0, 1))
            for slot, index in enumerate(members):
                records[index] = FaceRecord(box=[], lpips=outcome.lpips[slot], ssim=outcome.ssim[slot],
                                            scale=outcome.scale, budget_met=outcome.met)
        return result, records

    def protect(self, image: torch.Tensor, faces: Sequence[np.ndarray], render: Render | None = None,
                on_step=None) -> tuple[torch.Tensor, list[FaceRecord]]:
        """One photo [1, 3, H, W]: attack, budget, 8-bit; a record per face. ``on_step`` as in
        ``perturb`` (called per step of each batch of regions: the command's progress bar)."""
        regions = self.perturb(image, [list(faces)], on_step)[0]
        protected, records = self.apply_budget(image, self.paste(image, regions), faces, render)
        for part in regions:
            for index in part.members:
                records[index].work_scale = part.work_scale
        return protected, records
