"""The protection attack on tiny random networks: behaviour, formulas, budget, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_models import ChannelMean, TinyFR, TinyPerceptual

from fr_shield.attacks import Branch, ProtectionAttack, ProtectionObjective
from fr_shield.attacks.attack import OptimiserSettings
from fr_shield.core.align import ARCFACE_112

FACE = (ARCFACE_112 * 0.8 + 30).astype(np.float32)  # a face well inside a 160 x 160 photo


def photo(seed: int = 0, size: int = 160) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 10, 10, generator=generator), size=size, mode="bilinear")
    return smooth.clamp(0, 1)


def tiny_attack(steps=20, branches=(Branch(),), linf=None, optimiser="signed", seed=0, step_size=0.01):
    objective = ProtectionObjective([TinyFR(0), TinyFR(1, size=40, name="tiny40")], list(branches), "norm", alpha=0.0)
    return ProtectionAttack(objective, OptimiserSettings(optimiser, steps, step_size, 0.005, linf, seed))


@pytest.mark.parametrize("optimiser", ["signed", "adam"])
def test_objective_rises(optimiser):
    result = tiny_attack(optimiser=optimiser, branches=(Branch(), Branch("gaussian", 7, 3.0)))(photo(), [[FACE]])
    values = [step[0] for step in result.objective]
    assert values[-1] > 3 * values[0]
    assert np.mean(np.diff(values) > 0) > 0.8  # rises (nearly) every step


@pytest.mark.parametrize("normaliser, power", [("norm", 1), ("norm_squared", 2)])
@pytest.mark.parametrize("branches", [(Branch(),), (Branch(), Branch("box", 5)), (Branch(), Branch("median", 3), Branch("gaussian", 7, 3.0))])
def test_objective_matches_hand_computation(normaliser, power, branches):
    """Constant photo 0.5 shifted by c: every branch sees a shift of c in all 3 channel means."""
    clean = torch.full((1, 3, 160, 160), 0.5)
    shift = 0.04
    objective = ProtectionObjective([ChannelMean(), ChannelMean(48)], list(branches), normaliser, alpha=0.0)
    targets = objective.targets(clean, [[FACE]])
    value, parts = objective(clean + shift, clean, [[FACE]], targets)
    expected = 3 * shift**2 / np.sqrt(3 * 0.25) ** power
    assert value.item() == pytest.approx(expected, rel=1e-4)


def test_direction_normaliser_counts_the_angle_not_the_length():
    """Brightening a grey photo only lengthens ChannelMean's embedding: no progress by direction;
    a shift of one channel turns it, by 2 - 2 cos of the angle, whatever the embedding's length."""
    clean = torch.full((1, 3, 160, 160), 0.5)
    direction = ProtectionObjective([ChannelMean()], [Branch()], "direction", alpha=0.0)
    targets = direction.targets(clean, [[FACE]])
    brighter, _ = direction(clean + 0.04, clean, [[FACE]], targets)
    assert brighter.item() == pytest.approx(0.0, abs=1e-6)
    redder = clean.clone()
    redder[:, 0] += 0.2
    value, parts = direction(redder, clean, [[FACE]], targets)
    cosine = (0.7 * 0.5 + 0.5 * 0.5 * 2) / (np.sqrt(0.7**2 + 2 * 0.25) * np.sqrt(3 * 0.25))
    assert value.item() == pytest.approx(2 - 2 * cosine, rel=1e-4)
    squared = ProtectionObjective([ChannelMean()], [Branch()], "norm_squared", alpha=0.0)
    assert squared(clean + 0.04, clean, [[FACE]], squared.targets(clean, [[FACE]]))[0].item() > 1e-3
    # the match margin is still measured on the raw embeddings, in the model's own terms
    assert torch.isfinite(parts["margin"]).all()


def test_ours_direction_entry_protects_otherwise_than_ours():
    from fr_shield.attacks.config import compose_attack
    from fr_shield.attacks.registry import build_attack

    common = ["attack.steps=4", "attack.alpha=0", "attack.step_size=0.01"]
    config = compose_attack("ours_direction", common)
    assert config.normaliser == "direction"
    image = photo()
    direction = build_attack(config, surrogates=[TinyFR(0)])(image, [[FACE]]).protected
    plain = build_attack(compose_attack("ours", common), surrogates=[TinyFR(0)])(image, [[FACE]]).protected
    assert not torch.equal(direction, image) and not torch.equal(direction, plain)


def test_objective_averages_faces_and_subtracts_penalty():
    clean = torch.full((1, 3, 160, 160), 0.5)

    class Penalty(torch.nn.Module):  # a stand-in perceptual metric: 0.1 for every pair
        def forward(self, x, y):
            return torch.full((x.shape[0],), 0.1)

    objective = ProtectionObjective([ChannelMean()], [Branch()], "norm", alpha=2.0, perceptual=Penalty())
    faces = [[FACE, FACE + 5]]
    value, parts = objective(clean + 0.04, clean, faces, objective.targets(clean, faces))
    assert parts["lpips"].item() == pytest.approx(0.1)
    assert value.item() == pytest.approx(3 * 0.04**2 / np.sqrt(0.75) - 0.2, rel=1e-4)


def test_bounds_input_untouched_and_determinism():
    image = photo()
    before = image.clone()
    attack = tiny_attack(steps=15, linf=4 / 255, step_size=0.02)
    first = attack(image, [[FACE]]).protected
    assert torch.equal(image, before)
    assert first.min() >= 0 and first.max() <= 1
    assert (first - image).abs().max() <= 4 / 255 + 1e-6
    assert torch.equal(first, attack(image, [[FACE]]).protected)
    assert not torch.equal(first, tiny_attack(steps=15, linf=4 / 255, step_size=0.02, seed=1)(image, [[FACE]]).protected)


def test_unbounded_output_stays_in_unit_range():
    bright = torch.ones(1, 3, 160, 160) * 0.99
    result = tiny_attack(steps=5, step_size=0.05)(bright, [[FACE]]).protected
    assert result.min() >= 0 and result.max() <= 1


def test_gradient_reaches_full_resolution_pixels_only_near_the_face():
    image = photo(size=400).requires_grad_(True)
    objective = ProtectionObjective([TinyFR(0)], [Branch()], "norm", alpha=0.0)
    face = (ARCFACE_112 * 2 + 100).astype(np.float32)
    targets = objective.targets(image.detach() + 0.01, [[face]])
    value, _ = objective(image, image.detach(), [[face]], targets)
    value.sum().backward()
    grad = image.grad.abs().sum(dim=(0, 1))
    assert grad.sum() > 0 and torch.isfinite(grad).all()
    assert grad[:, :80].sum() == 0 and grad[:, 360:].sum() == 0  # beyond the face region: untouched


def test_photo_without_face_passes_through():
    images = torch.cat([photo(0), photo(1)])
    result = tiny_attack(steps=3)(images, [[], [FACE]])
    assert torch.equal(result.protected[0], images[0])
    assert not torch.equal(result.protected[1], images[1])
    none = tiny_attack(steps=3)(images[:1], [[]])
    assert torch.equal(none.protected, images[:1]) and none.objective == []


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="normaliser"):
        ProtectionObjective([ChannelMean()], [Branch()], "cube")
    with pytest.raises(ValueError, match="optimiser"):
        ProtectionAttack(ProtectionObjective([ChannelMean()], [Branch()]), OptimiserSettings("sgd"))
    with pytest.raises(ValueError, match="unknown transform 'sharpen'"):
        Branch("sharpen", 3)
    with pytest.raises(ValueError, match="no differentiable twin"):
        Branch("max", 3)


def stopping_attack(stop_margin, steps=40, optimiser="signed"):
    objective = ProtectionObjective([TinyFR(0), TinyFR(1, size=40, name="tiny40")], [Branch(), Branch("box", 3)],
                                    "norm", alpha=0.0)
    return ProtectionAttack(objective, OptimiserSettings(optimiser, steps, 0.01, 0.005, None, 0, stop_margin))


@pytest.mark.parametrize("optimiser", ["signed", "adam"])
def test_early_stop_freezes_each_image_once_past_every_threshold(optimiser):
    images = torch.cat([photo(0), photo(1)])
    faces = [[FACE], [FACE]]
    stopped = stopping_attack(0.0, optimiser=optimiser)(images, faces)
    assert min(stopped.steps_taken) < 40  # at least one image stopped early
    objective = stopping_attack(0.0).objective
    _, parts = objective(stopped.protected, images, faces, objective.targets(images, faces))
    for image, taken in enumerate(stopped.steps_taken):
        if taken < 40:
            assert parts["margin"][image] >= 0  # every view of every model is past its threshold
            assert np.isnan(stopped.objective[-1][image]) or taken == len(stopped.objective) - 1
    # A stopped image is exactly where a run of that many steps (same batch, same noise) left it.
    first = int(np.argmin(stopped.steps_taken))
    shorter = stopping_attack(None, steps=stopped.steps_taken[first], optimiser=optimiser)(images, faces)
    assert torch.allclose(stopped.protected[first], shorter.protected[first], atol=1e-6)


def test_without_stop_margin_every_step_runs():
    result = stopping_attack(None, steps=6)(photo(), [[FACE]])
    assert result.steps_taken == [6] and len(result.objective) == 6


def test_cached_clean_features_give_the_same_objective():
    class Uncached(torch.nn.Module):  # the same metric without the features interface
        def __init__(self, metric):
            super().__init__()
            self.metric = metric

        def forward(self, x, y):
            return self.metric(x, y)

    metric = TinyPerceptual()
    clean = torch.cat([photo(0), photo(1)])
    adversarial = (clean + 0.03 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    faces = [[FACE], [FACE, FACE + 8]]
    values = []
    for perceptual in (metric, Uncached(metric)):
        objective = ProtectionObjective([TinyFR(0)], [Branch(), Branch("gaussian", 7, 3.0)], "norm", 0.5, perceptual)
        values.append(objective(adversarial, clean, faces, objective.targets(clean, faces))[0])
    assert torch.allclose(values[0], values[1], atol=1e-6)


def test_targets_select_and_photo_weights():
    clean = torch.cat([photo(0), photo(1), photo(2)])
    faces = [[FACE], [FACE, FACE + 8], [FACE + 4]]
    objective = ProtectionObjective([TinyFR(0)], [Branch()], "norm", 1.0, TinyPerceptual())
    targets = objective.targets(clean, faces)
    picked = targets.select([1, 2], faces)
    assert torch.equal(picked.embeddings[0], targets.embeddings[0][1:])
    assert torch.equal(picked.photo_features[0], targets.photo_features[0][1:])
    adversarial = (clean + 0.05).clamp(0, 1)
    plain = objective.perceptual_term(adversarial, clean, faces, targets)
    doubled = objective.perceptual_term(adversarial, clean, faces, targets, torch.tensor([2.0, 2.0, 2.0]))
    on_photo = TinyPerceptual()(clean, adversarial)
    assert torch.allclose(doubled - plain, 0.5 * on_photo, atol=1e-6)


def test_only_pixels_move_to_the_accelerator():
    """Lightning's batch transfer must leave landmarks as host NumPy arrays (alignment solves them
    with NumPy); a CUDA run failed here before the module said so."""
    from torch.utils.data import DataLoader

    from fr_shield.attacks.config import AttackConfig
    from fr_shield.attacks.protector import FaceProtector
    from fr_shield.study.lightning import PhotoBatchDataset, ProtectionModule

    batch = (["a"], photo(), [[FACE]])
    loaded = next(iter(DataLoader(PhotoBatchDataset([batch]), batch_size=None)))  # converts NumPy to tensors
    config = AttackConfig(name="test", surrogates=["tiny"], steps=1, alpha=0.0)
    module = ProtectionModule(FaceProtector(config, surrogates=[TinyFR(0)], metric=TinyPerceptual()))
    keys, images, faces = module.transfer_batch_to_device(loaded, torch.device("cpu"), 0)
    assert keys == ["a"] and images.shape == batch[1].shape
    assert isinstance(faces[0][0], np.ndarray) and np.allclose(faces[0][0], FACE)


def test_feature_dropout_is_a_seeded_switch_that_leaves_the_targets_clean():
    from fr_shield.attacks.config import compose_attack
    from fr_shield.attacks.registry import build_attack

    image = photo()
    plain = build_attack(compose_attack("ours", ["attack.steps=4", "attack.alpha=0"]), surrogates=[TinyFR(0)])
    dropped_config = compose_attack("ours", ["attack.steps=4", "attack.alpha=0", "attack.feature_dropout=0.2"])
    dropped = build_attack(dropped_config, surrogates=[TinyFR(0)])
    assert dropped.objective.feature_dropout == 0.2 and plain.objective.feature_dropout == 0.0
    clean_targets = plain.objective.targets(image, [[FACE]]).embeddings[0]
    assert torch.equal(dropped.objective.targets(image, [[FACE]]).embeddings[0], clean_targets)
    with torch.no_grad():  # during the steps each call sees a different sub-network
        crops = torch.rand(1, 3, 32, 32)
        first, _ = dropped.objective.surrogate(dropped.objective.surrogates[0], crops, dropout=0.2)
        again, _ = dropped.objective.surrogate(dropped.objective.surrogates[0], crops, dropout=0.2)
    assert not torch.equal(first, again)
    one, two = dropped(image, [[FACE]]).protected, dropped(image, [[FACE]]).protected
    assert torch.equal(one, two)  # seeded: the same attack gives the same photo
    assert not torch.equal(one, plain(image, [[FACE]]).protected)


def test_feature_dropout_is_lowered_where_it_would_change_the_network(monkeypatch):
    """A surrogate keeps the configured rate while, dropped, it still embeds the clean face near
    its clean embedding; where no rate down to p / 8 does, it is attacked without dropout."""
    from fr_shield.attacks import objective as objective_module
    from fr_shield.attacks.config import compose_attack
    from fr_shield.attacks.registry import build_attack

    image = photo()
    settings = ["attack.steps=4", "attack.alpha=0"]
    plain = build_attack(compose_attack("ours", settings), surrogates=[TinyFR(0)])
    dropped = build_attack(compose_attack("ours", [*settings, "attack.feature_dropout=0.2"]), surrogates=[TinyFR(0)])
    monkeypatch.setattr(objective_module, "DROPOUT_MIN_SIMILARITY", -1.0)  # any network is near enough
    assert dropped.objective.targets(image, [[FACE]]).dropout_rates == [0.2]
    kept = dropped(image, [[FACE]]).protected
    monkeypatch.setattr(objective_module, "DROPOUT_MIN_SIMILARITY", 1.01)  # none is
    assert dropped.objective.targets(image, [[FACE]]).dropout_rates == [0.0]
    lowered = dropped(image, [[FACE]]).protected
    assert torch.equal(lowered, plain(image, [[FACE]]).protected) and not torch.equal(kept, lowered)


def test_optimising_inside_the_budget_keeps_faces_closer_to_it():
    """budget_in_loop: the adaptive penalty pulls the attack back toward the per-face SSIM floor
    (the hard limit is still enforced afterwards); off, the same attack goes far below it."""
    from fr_shield.attacks.config import compose_attack
    from fr_shield.attacks.objective import crops_of
    from fr_shield.attacks.registry import attack_key, build_attack
    from fr_shield.core.align import FACE_CROP
    from fr_shield.core.quality import ssim

    image = photo()
    common = ["attack.steps=12", "attack.step_size=0.02", "attack.alpha=0", "attack.init_noise=0", "attack.ssim_min=0.97"]
    free = build_attack(compose_attack("lowkey", common), surrogates=[TinyFR(0)])
    inside_config = compose_attack("lowkey", [*common, "attack.budget_in_loop=true"])
    inside = build_attack(inside_config, surrogates=[TinyFR(0)])

    def face_ssim(result):
        return float(ssim(crops_of(image, [[FACE]], FACE_CROP), crops_of(result, [[FACE]], FACE_CROP))[0])

    free_ssim, inside_ssim = face_ssim(free(image, [[FACE]]).protected), face_ssim(inside(image, [[FACE]]).protected)
    assert free_ssim < 0.97 and inside_ssim > free_ssim + 0.02, (free_ssim, inside_ssim)
    assert attack_key(inside_config, with_budget=False) != attack_key(
        compose_attack("lowkey", [*common[:-1], "attack.ssim_min=0.9", "attack.budget_in_loop=true"]), with_budget=False)
    unbounded = build_attack(compose_attack("lowkey", ["attack.budget_in_loop=true", "attack.alpha=0"]),
                             surrogates=[TinyFR(0)])
    assert unbounded.settings.budget is None  # no budget set: nothing to steer toward


def test_a_visibility_limit_is_keyed_by_the_model_it_bounds(monkeypatch):
    """Results cached under a visibility limit are not reused once the model of the eye changes
    its scale; keys without that limit stay as they were."""
    from fr_shield.attacks import registry
    from fr_shield.attacks.config import compose_attack

    seen, unseen = (compose_attack("lowkey", ["attack.visibility_max=1.0"]), compose_attack("lowkey", []))
    before = registry.attack_key(seen), registry.attack_key(unseen)
    monkeypatch.setattr(registry, "VISIBILITY_MODEL", registry.VISIBILITY_MODEL + 1)
    assert registry.attack_key(seen) != before[0] and registry.attack_key(unseen) == before[1]


def test_mid_layer_term_pushes_the_feature_map_and_is_a_seeded_switch():
    """layer_weight adds each surrogate's mid-level map shift to the objective (0 at the clean
    photo, > 0 once it moves); the clean maps are computed once, in the targets."""
    from fr_shield.attacks.config import compose_attack
    from fr_shield.attacks.registry import build_attack

    image = photo()
    common = ["attack.steps=4", "attack.alpha=0", "attack.branches=[{kind:identity}]"]  # clean view = target
    plain = build_attack(compose_attack("ours", common), surrogates=[TinyFR(0)])
    layered = build_attack(compose_attack("ours_layer", common), surrogates=[TinyFR(0)])
    targets = layered.objective.targets(image, [[FACE]])
    assert plain.objective.targets(image, [[FACE]]).layers is None and len(targets.layers) == 1
    at_clean, _ = layered.objective(image, image, [[FACE]], targets)
    assert at_clean.abs().max() < 1e-6
    moved = (image + 0.05 * torch.randn_like(image)).clamp(0, 1)
    with_layer, _ = layered.objective(moved, image, [[FACE]], targets)
    without, _ = plain.objective(moved, image, [[FACE]], plain.objective.targets(image, [[FACE]]))
    assert (with_layer > without).all()
    one, two = layered(image, [[FACE]]).protected, layered(image, [[FACE]]).protected
    assert torch.equal(one, two) and not torch.equal(one, plain(image, [[FACE]]).protected)
    with pytest.raises(ValueError, match="layer_weight"):
        build_attack(compose_attack("ours", common + ["attack.layer_weight=-1"]), surrogates=[TinyFR(0)])


class TinyResidualFR(TinyFR):
    """TinyFR with one residual block after its convolution (its second conv ends the branch)."""

    def __init__(self, seed: int = 0):
        super().__init__(seed)
        self.branch = torch.nn.Conv2d(8, 8, 3, padding=1)
        with torch.no_grad():
            self.branch.weight.copy_(torch.randn(self.branch.weight.shape, generator=torch.Generator().manual_seed(seed)))
        self.requires_grad_(False)

    def residual_branch_ends(self):
        return [self.branch]

    def forward(self, x):
        stem = torch.relu(self.conv(x * 2 - 1))
        features = torch.nn.functional.adaptive_avg_pool2d(stem + self.branch(stem), 4)
        return self.head(features.flatten(1)) + 1.0


def test_skip_gradient_scales_residual_branches_only_while_attacking():
    """skip_gamma: the surrogate's forward pass is unchanged; its input gradient moves toward
    the shortcut's (gamma 0: the shortcut's alone); a seeded switch that changes the photo."""
    from fr_shield.attacks.config import compose_attack
    from fr_shield.attacks.registry import build_attack
    from fr_shield.core.errors import ConfigError

    model, image = TinyResidualFR(0), photo()
    common = ["attack.steps=4", "attack.alpha=0"]
    plain = build_attack(compose_attack("ours", common), surrogates=[model])
    skipped = build_attack(compose_attack("ours_skipgrad", [*common, "attack.skip_gamma=0"]), surrogates=[model])
    crops = torch.rand(1, 3, 32, 32, requires_grad=True)

    def gradient(objective):
        embedding, _ = objective.surrogate(model, crops)
        return embedding, torch.autograd.grad(embedding.sum(), crops)[0]

    (out_plain, grad_plain), (out_skipped, grad_skipped) = gradient(plain.objective), gradient(skipped.objective)
    assert torch.equal(out_plain, out_skipped)
    stem_only = TinyFR(0)  # the same network without the branch: the shortcut's gradient
    (expected,) = torch.autograd.grad(stem_only(crops).sum(), crops)
    assert torch.allclose(grad_skipped, expected, atol=1e-5) and not torch.allclose(grad_plain, expected, atol=1e-3)
    one, two = skipped(image, [[FACE]]).protected, skipped(image, [[FACE]]).protected
    assert torch.equal(one, two) and not torch.equal(one, plain(image, [[FACE]]).protected)
    with pytest.raises(ConfigError, match="skip_gamma"):
        compose_attack("ours", ["attack.skip_gamma=1.5"])


def test_an_attack_that_cannot_leave_the_clean_photo_is_refused():
    """With no start noise and only the unblurred view, every term of the objective is a distance
    from the clean photo's own embedding: its gradient there is 0 and the photo never changes.
    The config says so instead of returning the photo untouched; start noise (or a blur branch)
    makes the same attack move."""
    from fr_shield.attacks.config import compose_attack
    from fr_shield.attacks.registry import build_attack
    from fr_shield.core.errors import ConfigError

    identity_only = ["attack.steps=3", "attack.alpha=0", "attack.branches=[{kind:identity,kernel_size:1}]"]
    with pytest.raises(ConfigError, match="init_noise"):
        compose_attack("ours", [*identity_only, "attack.init_noise=0"])
    compose_attack("ours", ["attack.init_noise=0"])  # blur branches: a gradient at the clean photo
    compose_attack("ours", [*identity_only, "attack.init_noise=0", "attack.feature_dropout=0.1"])
    image = photo()
    moved = build_attack(compose_attack("ours", [*identity_only, "attack.init_noise=0.005"]), surrogates=[TinyFR(0)])
    assert not torch.equal(moved(image, [[FACE]]).protected, image)
