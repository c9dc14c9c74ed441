"""The fast paths of the attack agree with the reference loop and the whole-photo attack."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import TinyFR, TinyPerceptual

from fr_shield.attacks import Branch, ProtectionAttack, ProtectionObjective
from fr_shield.attacks.attack import OptimiserSettings
from fr_shield.attacks.config import AttackConfig, BranchConfig
from fr_shield.attacks.protector import FaceProtector
from fr_shield.attacks.reference import reference_protect
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


def region_protector(steps: int = 6, init_noise: float = 0.0, alpha: float = 0.0,
                     whole_photo_fraction: float = 1.0) -> FaceProtector:
    """The protector with the same objective as ``objective()``; 1.0: regions unless they cover everything."""
    config = AttackConfig(name="test", method="lowkey", surrogates=["tiny", "tiny40"],
                          branches=[BranchConfig(), BranchConfig("gaussian", 7, 3.0), BranchConfig("median", 3)],
                          normaliser="norm_squared", steps=steps, step_size=0.01, init_noise=init_noise, alpha=alpha)
    return FaceProtector(config, surrogates=[TinyFR(0), TinyFR(1, size=40, name="tiny40")], metric=TinyPerceptual(),
                         work_side=None, whole_photo_fraction=whole_photo_fraction)


def test_region_attack_matches_the_whole_photo_and_leaves_the_rest_untouched():
    protector = region_protector()  # no start noise: only gradients move pixels
    image = photo(1, 480, 640)
    faces = [(ARCFACE_112 * 0.6 + np.array([40, 60])).astype(np.float32),
             (ARCFACE_112 * 0.9 + np.array([450, 300])).astype(np.float32)]
    parts = protector.perturb(image, [faces])[0]
    assert len(parts) == 2  # far apart: one region each
    protected = FaceProtector.paste(image, parts)
    whole = protector.attack(image, [faces]).protected
    assert close_fraction(protected, whole) > 0.999
    outside = torch.ones(480, 640, dtype=torch.bool)
    for part in parts:
        x0, y0, x1, y1 = part.region
        outside[y0:y1, x0:x1] = False
    assert torch.equal(protected[0][:, outside], image[0][:, outside])
    assert not torch.equal(protected, image)


def test_region_attack_weights_the_full_photo_penalty_by_area(monkeypatch):
    protector = region_protector(steps=2, init_noise=0.005, alpha=0.5)
    seen = []
    attack = protector.attack

    def recording(images, faces, on_step=None, photo_weights=None, bound=None):
        seen.append((images.shape, photo_weights))
        return attack(images, faces, on_step, photo_weights, bound)

    monkeypatch.setattr(protector, "_attack_at", lambda scale: recording)
    faces = [(ARCFACE_112 * 0.7 + np.array([100, 100])).astype(np.float32)]
    protector.perturb(photo(2, 600, 800), [faces])
    (shape, weights), = seen
    assert weights.tolist() == pytest.approx([shape[-2] * shape[-1] / (600 * 800)])


def test_small_photo_is_attacked_whole_and_no_face_passes_through():
    protector = region_protector(steps=2, init_noise=0.005, whole_photo_fraction=0.5)
    image = photo(3, 160, 160)
    face = (ARCFACE_112 * 1.1 + 15).astype(np.float32)
    (part,) = protector.perturb(image, [[face]])[0]
    assert part.region == (0, 0, 160, 160)
    assert protector.perturb(image, [[]])[0] == []
