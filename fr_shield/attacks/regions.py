"""Attack a large photo through its face regions: the cost follows the faces, not the pixels.

Every term of the objective reads the photo only where a face's crops are warped from (after a
blur branch, also a kernel's radius around it), except the full-photo half of the perceptual
penalty. So the attack runs on regions cut around the faces, with enough margin that every warp
and blur reads real photo pixels, and the results are pasted back; pixels beyond the regions stay
exactly as they were.

The full-photo LPIPS is a spatial mean: on a region holding all of the change it equals the
region's LPIPS times (region area / photo area), up to the receptive field reaching past the
region's edge. Each region is one image of the attack's batch, so its face average covers only
its own faces; ``photo_weight`` rescales the full-photo part so every region's objective is the
photo's objective restricted to it (up to a positive factor, which signed steps and Adam ignore).

Regions are enlarged to a common size (real pixels around them, staying inside the photo) so the
faces of one photo are attacked as one batch; only each region's own rectangle is pasted back.
A photo whose regions would cover most of it is attacked whole.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fr_shield.attacks.attack import ProtectionAttack
from fr_shield.core.align import FACE_CROP, ROI_MARGIN
from fr_shield.core.regions import cluster_regions, crop_footprint, snap_region

Region = tuple[int, int, int, int]  # x0, y0, x1, y1 in photo pixels
# Attack the whole photo when its face regions would cover at least this fraction of it.
WHOLE_PHOTO_FRACTION = 0.5


@dataclass
class RegionResult:
    protected: torch.Tensor  # [1, 3, H, W]
    regions: list[Region]
    steps_taken: list[int]  # per region


def attack_regions(attack: ProtectionAttack, faces: list[np.ndarray], image_hw: tuple[int, int]) -> list[tuple[Region, list[int]]]:
    """The photo regions (x0, y0, x1, y1) the attack reads for ``faces``, merged where they overlap."""
    objective = attack.objective
    specs = [FACE_CROP, *(model.spec for model in objective.surrogates)]
    margin = objective.reach // 2 + ROI_MARGIN + 1
    rects = []
    for points in faces:
        boxes = np.array([crop_footprint(points, spec.template, spec.input_size) for spec in specs])
        rect = np.array([boxes[:, 0].min() - margin, boxes[:, 1].min() - margin,
                         boxes[:, 2].max() + margin, boxes[:, 3].max() + margin])
        rects.append(snap_region(rect, image_hw))
    return cluster_regions(rects)


def _enlarged(region: Region, size: tuple[int, int], image_hw: tuple[int, int]) -> Region:
    """``region`` grown to ``size`` (h, w) around its centre, shifted to stay inside the photo."""
    (x0, y0, x1, y1), (height, width) = region, size
    left = min(max(0, x0 - (width - (x1 - x0)) // 2), image_hw[1] - width)
    top = min(max(0, y0 - (height - (y1 - y0)) // 2), image_hw[0] - height)
    return left, top, left + width, top + height


class RegionAttack:
    """``RegionAttack(attack)(photo [1, 3, H, W], faces)``: the attack on the faces' regions only."""

    def __init__(self, attack: ProtectionAttack, whole_photo_fraction: float = WHOLE_PHOTO_FRACTION):
        self.attack = attack
        self.whole_photo_fraction = whole_photo_fraction

    def __call__(self, photo: torch.Tensor, faces: list[np.ndarray]) -> RegionResult:
        image_hw = tuple(photo.shape[-2:])
        if not faces:
            return RegionResult(photo.clone(), [], [])
        groups = attack_regions(self.attack, faces, image_hw)
        covered = sum((x1 - x0) * (y1 - y0) for (x0, y0, x1, y1), _ in groups)
        if covered >= self.whole_photo_fraction * image_hw[0] * image_hw[1]:
            result = self.attack(photo, [list(faces)])
            return RegionResult(result.protected, [(0, 0, image_hw[1], image_hw[0])], result.steps_taken)
        size = (max(y1 - y0 for (_, y0, _, y1), _ in groups), max(x1 - x0 for (x0, _, x1, _), _ in groups))
        windows = [_enlarged(region, size, image_hw) for region, _ in groups]
        crops = torch.cat([photo[:, :, y0:y1, x0:x1] for x0, y0, x1, y1 in windows])
        crop_faces = [[faces[i] - np.array([x0, y0], np.float32) for i in members]
                      for (x0, y0, _, _), (_, members) in zip(windows, groups)]
        area_fraction = size[0] * size[1] / (image_hw[0] * image_hw[1])
        photo_weights = torch.tensor([len(faces) / len(members) * area_fraction for _, members in groups],
                                     dtype=photo.dtype, device=photo.device)
        result = self.attack(crops, crop_faces, photo_weights=photo_weights)
        protected = photo.clone()
        for crop, window, (region, _) in zip(result.protected, windows, groups):
            x0, y0, x1, y1 = region
            inner = crop[:, y0 - window[1]:y1 - window[1], x0 - window[0]:x1 - window[0]]
            protected[0, :, y0:y1, x0:x1] = inner
        return RegionResult(protected, [region for region, _ in groups], result.steps_taken)
