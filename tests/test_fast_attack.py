"""The fast paths of the attack agree with the reference loop and the whole-photo attack."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import TinyFR, TinyPerceptual

from fr_shield.attacks import Branch, ProtectionAttack, ProtectionObjective
from fr_shield.attacks.attack import OptimiserSettings
from fr_shield.attacks.reference import reference_protect
from fr_shield.attacks.regions import RegionAttack, attack_regions
from fr_shield.core.align import ARCFACE_112


def photo(seed: int, height: int, width: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.interpolate(torch.rand(1, 3, 12, 12, generator=generator), size=(height, width),
                                           mode="bilinear").clamp(0, 1)


def objective(alpha: float = 0.0) -> ProtectionObjective:
    return ProtectionObjective([TinyFR(0), TinyFR(1, size=40, name="tiny40")],
                               [Branch(), Branch("gaussian", 7, 3.0), Branch("median", 3)], "norm_squared",
                               alpha, TinyPerceptual() if alpha else None)


def close_fraction(a: torch.Tensor, b: torch.Tensor, tolerance: float = 1e-4) -> float:
    return float(((a - b).abs() <= tolerance).float().mean())


@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_reference_loop_and_batched_attack_give_the_same_photo(alpha):
    settings = OptimiserSettings("signed", 8, 0.01, 0.005, None, 3)
    image = photo(0, 160, 160)
    faces = [(ARCFACE_112 * 0.8 + 30).astype(np.float32), (ARCFACE_112 * 0.5 + 90).astype(np.float32)]
    target = objective(alpha)
    reference = reference_protect(target, settings, image, faces)
    fast = ProtectionAttack(target, settings)(image, [faces]).protected
    # Same objective, same noise: equal up to float rounding (a rare sign flip of a ~0 gradient).
    assert close_fraction(reference, fast) > 0.999
    assert not torch.equal(fast, image)


def test_region_attack_matches_the_whole_photo_and_leaves_the_rest_untouched():
    settings = OptimiserSettings("signed", 6, 0.01, 0.0, None, 0)  # no start noise: only gradients move pixels
    attack = ProtectionAttack(objective(), settings)
    image = photo(1, 480, 640)
    faces = [(ARCFACE_112 * 0.6 + np.array([40, 60])).astype(np.float32),
             (ARCFACE_112 * 0.9 + np.array([450, 300])).astype(np.float32)]
    regions = attack_regions(attack, faces, (480, 640))
    assert len(regions) == 2  # far apart: one region each, batched at a common size
    result = RegionAttack(attack, whole_photo_fraction=1.0)(image, faces)
    whole = attack(image, [faces]).protected
    assert close_fraction(result.protected, whole) > 0.999
    outside = torch.ones(480, 640, dtype=torch.bool)
    for x0, y0, x1, y1 in result.regions:
        outside[y0:y1, x0:x1] = False
    assert torch.equal(result.protected[0][:, outside], image[0][:, outside])
    assert not torch.equal(result.protected, image)


def test_region_attack_weights_the_full_photo_penalty_by_area():
    class Recording(ProtectionAttack):
        def __call__(self, images, faces, on_step=None, photo_weights=None):
            self.seen = (images.shape, photo_weights)
            return super().__call__(images, faces, on_step, photo_weights)

    attack = Recording(objective(alpha=0.5), OptimiserSettings("signed", 2, 0.01, 0.005, None, 0))
    faces = [(ARCFACE_112 * 0.7 + np.array([100, 100])).astype(np.float32)]
    RegionAttack(attack, whole_photo_fraction=1.0)(photo(2, 600, 800), faces)
    shape, weights = attack.seen
    assert weights.tolist() == pytest.approx([shape[-2] * shape[-1] / (600 * 800)])


def test_small_photo_is_attacked_whole_and_no_face_passes_through():
    attack = ProtectionAttack(objective(), OptimiserSettings("signed", 2, 0.01, 0.005, None, 0))
    image = photo(3, 160, 160)
    face = (ARCFACE_112 * 1.1 + 15).astype(np.float32)
    result = RegionAttack(attack)(image, [face])
    assert result.regions == [(0, 0, 160, 160)]
    assert torch.equal(RegionAttack(attack)(image, []).protected, image)
