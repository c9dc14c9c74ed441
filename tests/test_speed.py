"""Issue 14's speed-ups on tiny networks: the exact ones compute the same thing as before, the
switchable ones do what they say and are seeded."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from kornia import filters as KF
from tiny_models import TinyFR, TinyPerceptual

from fr_shield.attacks import Branch, ProtectionObjective
from fr_shield.attacks.config import compose_attack
from fr_shield.attacks.objective import InLoopBudget, crops_of
from fr_shield.attacks.registry import attack_key, build_attack
from fr_shield.core import transforms
from fr_shield.core.align import FACE_CROP
from fr_shield.core.errors import ConfigError
from test_attacks import FACE, photo


@pytest.mark.parametrize("kernel", [3, 5, 11])
@pytest.mark.parametrize("grad", [False, True])
def test_median_equals_kornias_with_and_without_autograd(kernel, grad):
    images = (torch.rand(2, 3, 40, 48, generator=torch.Generator().manual_seed(kernel)) * 255).round() / 255
    images.requires_grad_(grad)
    p = kernel // 2
    kornia = KF.median_blur(F.pad(images.detach(), (p, p, p, p), mode="reflect"), (kernel, kernel))[..., p:-p, p:-p]
    ours = transforms.median_blur(images, kernel)
    assert torch.equal(ours.detach(), kornia)
    if grad:  # every output pixel sends its gradient to exactly one input pixel
        ours.sum().backward()
        assert images.grad.sum().item() == pytest.approx(images[0].numel() * 2)


def _budget_objective(**switches):
    return ProtectionObjective([TinyFR(0)], [Branch(), Branch("median", 5)], "norm", 0.5, TinyPerceptual(), **switches)


def test_budget_excess_shares_the_steps_crops_and_lpips():
    clean = torch.cat([photo(0), photo(1)])
    noise = 0.05 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(3))
    adversarial = (clean + noise).clamp(0, 1).requires_grad_(True)
    faces = [[FACE], [FACE, FACE + 6]]
    budget = InLoopBudget(ssim_min=0.99, lpips_max=1e-4, delta_e_max=0.5)
    objective = _budget_objective()
    targets = objective.targets(clean, faces)
    value, parts = objective(adversarial, clean, faces, targets, budget=budget)
    alone = objective.budget_excess(adversarial, clean, faces, budget)  # crops and LPIPS computed afresh
    assert torch.allclose(parts["excess"], alone, rtol=1e-5) and (alone > 0).all()
    assert parts["excess"].requires_grad
    assert "excess" not in objective(adversarial, clean, faces, targets)[1]
    worst_only = objective.budget_excess(adversarial, clean, faces, InLoopBudget(ssim_worst_min=0.99))
    assert (worst_only > 0).all() and worst_only.requires_grad
    assert (objective.budget_excess(adversarial, clean, faces, InLoopBudget(ssim_worst_min=-1.0)) == 0).all()
    seen = objective.budget_excess(adversarial, clean, faces, InLoopBudget(visibility_max=0.1))
    assert (seen > 0).all() and seen.requires_grad


def test_face_penalty_only_drops_the_photo_term():
    clean = torch.cat([photo(0), photo(1)])
    adversarial = (clean + 0.04).clamp(0, 1)
    faces = [[FACE], [FACE]]
    full, face_only = _budget_objective(), _budget_objective(face_penalty_only=True)
    full_targets, face_targets = full.targets(clean, faces), face_only.targets(clean, faces)
    assert face_targets.photo_features is None and full_targets.photo_features is not None
    on_faces = TinyPerceptual()(crops_of(clean, faces, FACE_CROP), crops_of(adversarial, faces, FACE_CROP))
    assert torch.allclose(face_only.perceptual_term(adversarial, clean, faces, face_targets), on_faces, atol=1e-6)
    on_photo = TinyPerceptual()(clean, adversarial)
    assert torch.allclose(full.perceptual_term(adversarial, clean, faces, full_targets),
                          0.5 * (on_faces + on_photo), atol=1e-6)


def test_branches_per_step_draws_a_seeded_subset_each_step():
    branches = [Branch(), Branch("gaussian", 7, 3.0), Branch("median", 5)]
    objective = ProtectionObjective([TinyFR(0)], branches, "norm", 0.0, branches_per_step=2, seed=4)
    image = photo()
    objective.targets(image, [[FACE]])
    first = [tuple(b.kind for b in objective.step_branches()) for _ in range(12)]
    assert all(len(kinds) == 2 for kinds in first) and len(set(first)) > 1
    assert all(kinds[0] == "identity" for kinds in first)  # the photo as posted is in every step
    objective.targets(image, [[FACE]])  # a new attack restarts the draws
    assert [tuple(b.kind for b in objective.step_branches()) for _ in range(12)] == first
    assert len(objective.views(image)) == 2
    with pytest.raises(ValueError, match="branches_per_step"):
        ProtectionObjective([TinyFR(0)], branches, "norm", 0.0, branches_per_step=0)
    # more than there are (a downscaled face may lose its blur branches): every branch, every step
    everything = ProtectionObjective([TinyFR(0)], branches[:1], "norm", 0.0, branches_per_step=2)
    assert everything.step_branches() == branches[:1]


def test_speed_switches_are_attack_settings_in_the_cache_key():
    base = compose_attack("ours", ["attack.steps=3", "attack.alpha=0"])
    sampled = compose_attack("ours", ["attack.steps=3", "attack.alpha=0", "attack.branches_per_step=1"])
    face_only = compose_attack("ours", ["attack.steps=3", "attack.alpha=0", "attack.face_penalty_only=true"])
    assert len({attack_key(base), attack_key(sampled), attack_key(face_only)}) == 3
    attack = build_attack(sampled, surrogates=[TinyFR(0)])
    assert attack.objective.branches_per_step == 1
    one, two = attack(photo(), [[FACE]]).protected, attack(photo(), [[FACE]]).protected
    assert torch.equal(one, two)
    with pytest.raises(ConfigError, match="branches_per_step"):
        compose_attack("ours", ["attack.branches_per_step=0"])
    assert compose_attack("ours", ["attack.branches_per_step=7"]).branches_per_step == 7  # all of them


def test_surrogates_per_step_draws_a_seeded_subset_and_averages_over_it():
    models = [TinyFR(0), TinyFR(1, size=40, name="tiny40"), TinyFR(2)]
    objective = ProtectionObjective(models, [Branch()], "norm", 0.0, surrogates_per_step=1, seed=2)
    image = photo()
    targets = objective.targets(image, [[FACE]])
    drawn = [objective.step_surrogates() for _ in range(10)]
    assert all(len(d) == 1 for d in drawn) and len({d[0] for d in drawn}) > 1
    objective.targets(image, [[FACE]])
    assert [objective.step_surrogates() for _ in range(10)] == drawn
    moved = (image + 0.05).clamp(0, 1)
    generator_state = objective.sample_generator.get_state()
    (index,) = objective.step_surrogates()
    objective.sample_generator.set_state(generator_state)
    single = ProtectionObjective([models[index]], [Branch()], "norm", 0.0)
    value, _ = objective(moved, image, [[FACE]], targets)
    expected, _ = single(moved, image, [[FACE]], single.targets(image, [[FACE]]))
    assert torch.allclose(value, expected, rtol=1e-5)
    with pytest.raises(ConfigError, match="stop_margin"):
        compose_attack("ours", ["attack.surrogates_per_step=2", "attack.stop_margin=0"])


def test_a_downscaled_face_that_loses_its_blur_branches_keeps_the_speed_settings():
    from fr_shield.attacks.config import compose_preset
    from fr_shield.attacks.protector import scaled_attack_config

    mid = compose_preset("mid").attack
    small = scaled_attack_config(mid, 0.1)  # median k11 and Gaussian k7 shrink under 3 px
    assert [b.kind for b in small.branches] == ["identity"] and small.branches_per_step == mid.branches_per_step
    objective = build_attack(small, surrogates=[TinyFR(0)], perceptual=TinyPerceptual()).objective
    assert objective.step_branches() == objective.branches
