"""Issue 7: hard budgets (L-inf, face mask, per-face SSIM / ST-LPIPS), EOT sampling, momentum,
input diversity, ensemble weights, the differentiable JPEG and the trade-off tables.

Tiny random networks stand in for the FR models where the weights do not matter; the tests
marked ``real`` use real LFW faces and the real ST-LPIPS.
"""

from __future__ import annotations

import json
from pathlib import Path

import kornia
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from tiny_models import TinyFR, TinyPerceptual

from fr_shield.attacks import Branch, ProtectionAttack, ProtectionObjective
from fr_shield.attacks.attack import OptimiserSettings, remove_shading
from fr_shield.attacks.config import BranchConfig, compose_attack
from fr_shield.attacks.eot import (
    JPEG_TOLERANCE_MEAN,
    JPEG_TOLERANCE_PSNR,
    EOTFamily,
    EOTObjective,
    EOTSettings,
    OursEOT,
)
from fr_shield.attacks.objective import crops_of
from fr_shield.attacks.protector import FaceProtector, scaled_attack_config
from fr_shield.attacks.registry import attack_key, build_attack
from fr_shield.core import transforms
from fr_shield.core.align import ARCFACE_112, FACE_CROP
from fr_shield.core.quality import linf, psnr, ssim
from fr_shield.core.errors import ConfigError
from fr_shield.core.regions import jnd_map, soft_mask, texture_weight
from fr_shield.core.transforms import differentiable_jpeg
from fr_shield.study import protected_cache as store

FACE = (ARCFACE_112 * 0.8 + 30).astype(np.float32)  # a face well inside a 160 x 160 photo
IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def face_mask(shape_hw, faces) -> torch.Tensor:
    return soft_mask(shape_hw, faces, IDENTITY)

pytestmark = pytest.mark.usefixtures("one_thread")


def photo(seed: int = 0, size: int = 160) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 10, 10, generator=generator), size=size, mode="bilinear")
    return smooth.clamp(0, 1)


def surrogates():
    return [TinyFR(0), TinyFR(1, size=40, name="tiny40")]


def eot_objective(seed=0, samples=2, diversity=0.0, families=None, weights=None) -> EOTObjective:
    settings = EOTSettings(families or (EOTFamily("median_blur", (3, 5)), EOTFamily("box_blur", (3, 5)),
                                        EOTFamily("jpeg", (50, 75)), EOTFamily("resize", (0.5,))),
                           samples, diversity, 0.9, seed)
    return EOTObjective(surrogates(), [Branch()], "norm_squared", 0.0, None, weights, settings)


def settings(steps=4, linf=None, momentum=None, step_size=0.01, seed=0):
    return OptimiserSettings("signed", steps, step_size, 0.005, linf, seed, None, momentum)


# ----------------------------------------------------------------------------- EOT sampling


def test_eot_sampling_is_seeded_and_reproducible():
    image = photo()
    first, second, other = eot_objective(0, diversity=0.5), eot_objective(0, diversity=0.5), eot_objective(1, diversity=0.5)
    results = [ProtectionAttack(o, settings(steps=5))(image, [[FACE]]).protected for o in (first, second, other)]
    assert first.drawn == second.drawn and len(first.drawn) == 5
    assert all(len(step) == 2 for step in first.drawn)
    assert first.drawn != other.drawn
    assert torch.equal(results[0], results[1])
    assert not torch.equal(results[0], results[2])
    # The draws restart with every attack: the same objective run again gives the same photo.
    again = ProtectionAttack(first, settings(steps=5))(image, [[FACE]]).protected
    assert torch.equal(again, results[0])
    families = {name for step in first.drawn for name, _ in step}
    assert families <= {"median_blur", "box_blur", "jpeg", "resize"}


def test_eot_adds_sampled_views_and_every_family_is_differentiable():
    image = photo().requires_grad_(True)
    objective = eot_objective(samples=3)
    views = objective.views(image)
    assert len(views) == 1 + 3 and all(v.shape == image.shape for v in views)
    for name, level in [("median_blur", 5), ("box_blur", 9), ("gaussian_blur2d", 7), ("jpeg", 75), ("resize", 0.5)]:
        single = eot_objective(samples=1, families=(EOTFamily(name, (level,)),))
        targets = single.targets(image.detach(), [[FACE]])
        value, _ = single(image, image.detach(), [[FACE]], targets)
        (gradient,) = torch.autograd.grad(value.sum(), image)
        assert torch.isfinite(gradient).all() and gradient.abs().sum() > 0, name


def test_eot_settings_are_checked():
    with pytest.raises(ValueError, match="unknown transform 'sharpen'"):
        EOTFamily("sharpen", (3,))
    with pytest.raises(ValueError, match="probability"):
        EOTSettings(input_diversity=1.5)


def test_input_diversity_keeps_shape_and_is_reproducible():
    crops = torch.rand(4, 3, 32, 32)
    first, second = eot_objective(diversity=1.0), eot_objective(diversity=1.0)
    a, b = first.model_input(crops, None), second.model_input(crops, None)
    assert a.shape == crops.shape and torch.equal(a, b) and not torch.equal(a, crops)
    assert torch.equal(eot_objective(diversity=0.0).model_input(crops, None), crops)


# ----------------------------------------------------------------------------- differentiable JPEG


def _natural_image(seed: int = 0, size: int = 128) -> torch.Tensor:
    """Smooth colour fields with edges and mild texture: JPEG-like content without a real photo."""
    generator = torch.Generator().manual_seed(seed)
    low = torch.nn.functional.interpolate(torch.rand(1, 3, 6, 6, generator=generator), size=size, mode="bicubic")
    edges = (torch.arange(size)[None, :] > size // 2).float() * 0.2
    texture = 0.03 * torch.randn(1, 3, size, size, generator=generator)
    image = (low + edges + texture).clamp(0, 1)
    return torch.round(image * 255) / 255


def test_differentiable_jpeg_matches_real_jpeg_within_tolerance():
    """Kornia's codec vs PIL/libjpeg re-encoding at quality 75 (stated in fr_shield.attacks.eot)."""
    image = _natural_image()
    approx, real = differentiable_jpeg(image, 75), transforms.jpeg(image, 75)
    assert (approx - real).abs().mean() <= JPEG_TOLERANCE_MEAN
    assert psnr(approx, real).item() >= JPEG_TOLERANCE_PSNR
    # closer to the real codec than the input is: it models the compression, not the identity
    assert (approx - real).abs().mean() < (image - real).abs().mean()
    variable = image.clone().requires_grad_(True)
    differentiable_jpeg(variable, 75).sum().backward()
    assert variable.grad.abs().sum() > 0


@pytest.mark.real
def test_differentiable_jpeg_on_a_real_photo(lfw_root):
    from fr_shield.study.embed import photo_tensor

    image = photo_tensor(lfw_root / "George_W_Bush" / "George_W_Bush_0001.jpg")
    for quality in (75, 90):
        approx, real = differentiable_jpeg(image, quality), transforms.jpeg(image, quality)
        assert (approx - real).abs().mean() <= JPEG_TOLERANCE_MEAN, quality
        assert psnr(approx, real).item() >= JPEG_TOLERANCE_PSNR, quality


# ----------------------------------------------------------------------------- bounds and mask


def test_per_pixel_bound_and_masked_attack_agree():
    image = photo()
    bound = torch.zeros(1, 1, 160, 160)
    bound[..., 40:120, 40:120] = 6 / 255
    objective = ProtectionObjective(surrogates(), [Branch()], "norm", 0.0)
    base = ProtectionAttack(objective, settings(steps=6, linf=6 / 255))
    bounded = ProtectionAttack(objective, settings(steps=6, linf=6 / 255), bound=bound)(image, [[FACE]]).protected
    per_call = base(image, [[FACE]], bound=bound).protected
    assert torch.equal(bounded, per_call)
    delta = (bounded - image).abs()
    assert torch.all(delta <= bound + 1e-6)
    assert torch.equal(bounded[..., :40, :], image[..., :40, :]) and delta.max() > 0
    with pytest.raises(ValueError, match="bound"):
        ProtectionAttack(objective, settings(), bound=-bound - 1)


def test_face_mask_keeps_every_pixel_outside_the_faces_unchanged():
    images = torch.cat([photo(0), photo(1)])
    faces = [[FACE], [(ARCFACE_112 * 0.6 + 70).astype(np.float32)]]
    config = compose_attack("ours", ["attack.steps=6", "attack.linf=0.0313725", "attack.step_size=0.02",
                                     "attack.alpha=0", "attack.mask=face"])
    config.branches = [BranchConfig(), BranchConfig("median", 3)]
    protector = FaceProtector(config, surrogates=surrogates(), metric=TinyPerceptual(), whole_photo_fraction=0.0)
    parts = protector.perturb(images, faces)
    protected = torch.cat([FaceProtector.paste(images[i:i + 1], part) for i, part in enumerate(parts)])
    for index, points in enumerate(faces):
        mask = face_mask((160, 160), points)
        delta = (protected[index] - images[index]).abs()
        assert torch.equal(protected[index][:, mask == 0], images[index][:, mask == 0])
        assert torch.all(delta <= 8 / 255 * mask + 1e-6)
        assert delta[:, mask == 1].max() > 4 / 255  # inside the face it does move
    assert linf(images, protected).max() <= 8 / 255 + 1e-6


def test_texture_floor_shrinks_the_bound_on_flat_skin_only():
    """A photo flat on its left half and textured on its right: with texture_floor the flat half
    may move at most floor x the bound, the textured half the whole bound."""
    generator = torch.Generator().manual_seed(3)
    image = torch.full((1, 3, 160, 160), 0.5)
    image[..., 80:] = (0.5 + 0.2 * torch.randn(1, 3, 160, 80, generator=generator)).clamp(0, 1)
    weight = texture_weight(image, 0.25)
    assert weight[:, :60].max().item() == pytest.approx(0.25) and weight[:, 100:].min().item() > 0.9
    common = ["attack.steps=6", "attack.linf=0.0313725", "attack.step_size=0.02", "attack.alpha=0", "attack.mask=face"]
    for floor, flat_limit in ((None, 8 / 255), (0.25, 2 / 255)):
        config = compose_attack("lowkey", common + ([f"attack.texture_floor={floor}"] if floor else []))
        protector = FaceProtector(config, surrogates=surrogates(), metric=TinyPerceptual(), whole_photo_fraction=0.0)
        protected = FaceProtector.paste(image, protector.perturb(image, [[FACE]])[0])
        delta = (protected - image).abs()
        assert delta[..., 60:100, 40:70].max() <= flat_limit + 1e-6
        assert delta[..., 60:100, 100:120].max() > 6 / 255  # the textured side keeps the whole bound
    with pytest.raises(ConfigError, match="texture_floor"):
        compose_attack("lowkey", ["attack.texture_floor=0.3"])  # needs the face mask


def test_jnd_map_follows_chou_and_li():
    """Mid-grey flat: 3 grey levels; darker flat backgrounds hide more (luminance adaptation);
    a strong edge hides more than flat skin of the same brightness (contrast masking)."""
    flat = {level: jnd_map(torch.full((1, 3, 32, 32), level / 255))[16, 16].item() * 255 for level in (30, 127, 200)}
    assert flat[127] == pytest.approx(3.0, abs=1e-3)
    assert flat[200] == pytest.approx(3 / 128 * 73 + 3, abs=1e-3)
    assert flat[30] > 10 > flat[200] > flat[127]
    edge = torch.full((1, 3, 32, 32), 100 / 255)
    edge[..., 16:] = 200 / 255
    assert jnd_map(edge)[16, 16].item() * 255 > 2 * flat[200]
    with pytest.raises(ValueError, match="jnd_map"):
        jnd_map(torch.zeros(3, 32, 32))


def test_jnd_scale_bounds_the_perturbation_by_what_the_eye_sees():
    """With jnd_scale the perturbation stays within scale x the clean photo's JND everywhere (and
    within linf); a flat mid-grey face may move 3 grey levels where linf allows 8."""
    image = torch.full((1, 3, 160, 160), 0.5)
    image[..., 80:] = 0.15  # a dark half: a larger JND
    common = ["attack.steps=6", "attack.linf=0.0313725", "attack.step_size=0.02", "attack.alpha=0", "attack.mask=face"]
    config = compose_attack("lowkey", common + ["attack.jnd_scale=1.0"])
    protector = FaceProtector(config, surrogates=surrogates(), metric=TinyPerceptual(), whole_photo_fraction=0.0)
    protected = FaceProtector.paste(image, protector.perturb(image, [[FACE]])[0])
    delta = (protected - image).abs().amax(dim=1)[0]
    limit = torch.minimum(jnd_map(image), torch.tensor(8 / 255))
    assert torch.all(delta <= limit + 1e-6)
    assert delta[60:100, 40:70].max() > 2.5 / 255  # it does move, up to the JND
    assert delta[60:100, 100:120].max() > 4 / 255  # more on the dark side
    with pytest.raises(ConfigError, match="jnd_scale"):
        compose_attack("lowkey", ["attack.jnd_scale=1.0"])  # needs the face mask
    with pytest.raises(ConfigError, match="texture_floor"):
        compose_attack("lowkey", common + ["attack.jnd_scale=1.0", "attack.texture_floor=0.3"])


def test_remove_shading_keeps_grain_and_drops_regional_shifts():
    flat = torch.full((1, 1, 40, 40), 0.02)
    assert remove_shading(flat, 3.0).abs().max() < 1e-6  # a uniform darkening is all shading
    grain = torch.ones(1, 1, 40, 40)
    grain[..., ::2, :] = -1.0
    grain[..., :, ::2] *= -1.0  # a one-pixel checkerboard has no local mean
    assert torch.allclose(remove_shading(grain, 3.0), grain, atol=1e-3)
    with pytest.raises(ValueError, match="shading_sigma"):
        remove_shading(grain, 0.0)


def test_shading_sigma_takes_the_local_mean_out_of_the_perturbation():
    """With shading_sigma the protected photo differs from the clean one by fine grain only: the
    perturbation's own local mean is near zero, where without it the signed steps leave patches."""
    image = photo()
    common = ["attack.steps=8", "attack.linf=0.0313725", "attack.step_size=0.01", "attack.alpha=0",
              "attack.colour=luma"]
    plain = build_attack(compose_attack("lowkey", common), surrogates=surrogates())(image, [[FACE]]).protected
    config = compose_attack("lowkey", common + ["attack.shading_sigma=2.0"])
    flat = build_attack(config, surrogates=surrogates())(image, [[FACE]]).protected

    def shading(protected):  # mean |local mean of delta| over the face, in grey levels
        delta = (protected - image)[:, :1]
        local = kornia.filters.gaussian_blur2d(delta, (13, 13), (2.0, 2.0), border_type="reflect")
        return local[..., 40:120, 40:120].abs().mean().item() * 255

    assert (flat - image).abs().max() > 3 / 255  # it still moves
    assert shading(flat) < 0.5 * shading(plain)
    assert attack_key(config) != attack_key(compose_attack("lowkey", common))
    with pytest.raises(ConfigError, match="shading_sigma"):
        compose_attack("lowkey", common + ["attack.shading_sigma=0"])


def test_luma_perturbation_changes_brightness_only():
    image = photo()
    config = compose_attack("lowkey", ["attack.steps=6", "attack.linf=0.0313725", "attack.step_size=0.02",
                                       "attack.alpha=0", "attack.colour=luma"])
    protected = build_attack(config, surrogates=surrogates())(image, [[FACE]]).protected
    delta = protected - image
    assert delta.abs().max() > 4 / 255
    inside = ((image > 0.04) & (image < 0.96)).all(dim=1, keepdim=True).expand_as(delta)  # not clamped
    spread = (delta - delta.mean(dim=1, keepdim=True))[inside].abs().max()
    assert spread < 1e-6
    assert attack_key(config) != attack_key(compose_attack("lowkey", ["attack.steps=6", "attack.linf=0.0313725",
                                                                      "attack.step_size=0.02", "attack.alpha=0"]))
    with pytest.raises(ConfigError, match="colour"):
        compose_attack("lowkey", ["attack.colour=purple"])


def test_momentum_and_ensemble_weights():
    image = photo()
    objective = ProtectionObjective(surrogates(), [Branch()], "norm", 0.0)
    plain = ProtectionAttack(objective, settings(steps=6, linf=8 / 255))(image, [[FACE]]).protected
    mi = ProtectionAttack(objective, settings(steps=6, linf=8 / 255, momentum=1.0))(image, [[FACE]])
    assert not torch.equal(plain, mi.protected) and linf(image, mi.protected).item() <= 8 / 255 + 1e-6
    values = [step[0] for step in mi.objective]
    assert values[-1] > values[0]
    with pytest.raises(ValueError, match="momentum"):
        ProtectionAttack(objective, OptimiserSettings("adam", momentum=0.9))
    # weights [1, 0] (rescaled to mean 1): exactly the first surrogate alone
    adversarial = (image + 0.05 * torch.randn(image.shape, generator=torch.Generator().manual_seed(3))).clamp(0, 1)
    weighted = ProtectionObjective(surrogates(), [Branch()], "norm", 0.0, surrogate_weights=[1.0, 0.0])
    alone = ProtectionObjective(surrogates()[:1], [Branch()], "norm", 0.0)
    value_w = weighted(adversarial, image, [[FACE]], weighted.targets(image, [[FACE]]))[0]
    value_a = alone(adversarial, image, [[FACE]], alone.targets(image, [[FACE]]))[0]
    assert torch.allclose(value_w, value_a, rtol=1e-5)
    with pytest.raises(ValueError, match="surrogate_weights"):
        ProtectionObjective(surrogates(), [Branch()], surrogate_weights=[1.0])


# ----------------------------------------------------------------------------- configs and keys


def _compose(attack: str, *overrides: str):
    from hydra import compose, initialize_config_dir

    from fr_shield.core.paths import conf_dir
    from fr_shield.study.config import register_configs

    register_configs()
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return compose("config", overrides=[f"attack={attack}", *overrides])


def test_the_cache_key_covers_every_setting_but_labels():
    """The key hashes the whole resolved config: any setting changes it (even one no list names),
    the label and the batch size do not, and an unset budget is the attack's own output."""
    base = compose_attack("lowkey")
    key = attack_key(base)
    assert key == attack_key(compose_attack("lowkey")) and key == attack_key(base, with_budget=False)
    for override in ["attack.seed=1", "attack.steps=49", "attack.stop_margin=0.1", "attack.mask=face",
                     "attack.surrogates=[sface,dlib_resnet]", "attack.eot.samples=1", "attack.lpips_backbone=vgg"]:
        assert attack_key(compose_attack("ours_eot" if "eot." in override else "lowkey", [override])) != key, override
    assert attack_key(compose_attack("lowkey", ["attack.name=renamed", "attack.batch_size=3"])) == key
    budgeted = compose_attack("lowkey", ["attack.ssim_min=0.95"])
    assert attack_key(budgeted) != key and attack_key(budgeted, with_budget=False) == key


def test_ours_eot_builds_from_its_config():
    config = compose_attack("ours_eot", ["attack.mask=face", "attack.ssim_min=0.95"])
    attack = build_attack(config, surrogates=surrogates(), perceptual=TinyPerceptual())
    assert isinstance(attack, OursEOT) and isinstance(attack.objective, EOTObjective)
    assert attack.settings.momentum == 1.0 and attack.objective.eot.input_diversity == 0.5
    assert {f.name for f in attack.objective.eot.families} == {"median_blur", "box_blur", "gaussian_blur2d",
                                                               "jpeg", "resize"}
    plain = build_attack(compose_attack("ours"), surrogates=surrogates(), perceptual=TinyPerceptual())
    assert type(plain.objective) is ProtectionObjective and [b.kind for b in plain.objective.branches] == [
        "identity", "gaussian", "median"]


# ----------------------------------------------------------------------------- budgets in the study pipeline


def _budget_photos(tmp_path: Path, count: int = 2, size: int = 160) -> list[Path]:
    paths = []
    for index in range(count):
        image = (photo(index, size)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        path = tmp_path / f"p{index}.png"
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths


def _check_budgets(photos: dict, faces: dict, metric, ssim_min: float, lpips_max: float, linf_max: float) -> None:
    """Every saved photo, re-read from disk: face SSIM >= floor, ST-LPIPS <= ceiling, L-inf, mask."""
    from fr_shield.study.embed import photo_tensor

    for path, result in photos.items():
        clean, saved = photo_tensor(path), photo_tensor(result.protected)
        a, b = crops_of(clean, [faces[path]], FACE_CROP), crops_of(saved, [faces[path]], FACE_CROP)
        with torch.no_grad():
            assert ssim(a, b).min().item() >= ssim_min - 1e-6
            assert metric(a, b).max().item() <= lpips_max + 1e-6
        assert linf(clean, saved).item() <= linf_max + 0.5 / 255 + 1e-6
        mask = face_mask(tuple(clean.shape[-2:]), faces[path])
        assert torch.equal(saved[0][:, mask == 0], clean[0][:, mask == 0])
        assert 0.0 <= result.quality["budget_scale"] <= 1.0


def test_study_budget_holds_on_every_output_and_budgets_share_one_attack(tmp_path, monkeypatch):
    metric = TinyPerceptual()
    paths = _budget_photos(tmp_path)
    faces = {p: [FACE] for p in paths}
    config = {**_compose_dict("ours"), "alpha": 0.0, "steps": 4, "step_size": 0.03, "linf": 16 / 255,
              "mask": "face", "surrogates": ["tiny", "tiny40"], "branches": [{"kind": "identity", "kernel_size": 1,
                                                                                  "sigma": None}]}
    protector = store.study_protector(config, torch.device("cpu"), surrogates=surrogates(), metric=metric)
    attacked = []
    monkeypatch.setattr(protector, "perturb", lambda *args, **kw: attacked.append(1) or FaceProtector.perturb(
        protector, *args, **kw))
    raw = store.protect_photos(paths, faces, config, tmp_path / "cache", torch.device("cpu"), progress=False,
                               protector=protector)
    raw_ssim = min(r.quality["ssim_face"] for r in raw.values())
    floor = min(0.999, raw_ssim + 0.5 * (1 - raw_ssim))  # a floor the attack's own output breaks
    ceiling = 0.5 * min(r.quality["lpips_face"] for r in raw.values())
    budgeted = store.protect_photos(paths, faces, {**config, "ssim_min": floor, "lpips_max": ceiling},
                                    tmp_path / "cache", torch.device("cpu"), progress=False, protector=protector)
    assert len(attacked) == 1  # one batch, attacked once: the budget reuses the cached attack
    _check_budgets(budgeted, faces, metric, floor, ceiling, 16 / 255)
    assert all(0 < r.quality["budget_scale"] < 1 and r.quality["budget_met"] for r in budgeted.values())
    record = json.loads(next((tmp_path / "cache" / "protected").glob("*/*.json")).read_text())
    assert "ssim_face" in record
    # Optimised inside the budget: the hard limit is still enforced on what the attack made.
    in_loop = {**config, "ssim_min": floor, "lpips_max": ceiling, "budget_in_loop": True, "step_size": 0.06}
    inside = store.protect_photos(paths, faces, in_loop, tmp_path / "cache", torch.device("cpu"), progress=False,
                                  protector=store.study_protector(in_loop, torch.device("cpu"), surrogates=surrogates(),
                                                                  metric=metric))
    _check_budgets(inside, faces, metric, floor, ceiling, 16 / 255)
    assert all(r.quality["budget_met"] and "budget_scale" in r.quality for r in inside.values())


def _compose_dict(attack: str) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.structured(compose_attack(attack)), resolve=True)


@pytest.mark.real
def test_budget_holds_on_real_faces(tmp_path, monkeypatch, lfw_root, weight_cache):
    """Real LFW faces (YuNet landmarks), the real ST-LPIPS; tiny surrogates with a strong attack."""
    from fr_shield.core.detect import FaceDetector
    from fr_shield.core.imageio import load_rgb
    from fr_shield.core.perceptual import stlpips

    detector = FaceDetector(cache_dir=weight_cache)
    paths, faces = [], {}
    for name in ("George_W_Bush/George_W_Bush_0001.jpg", "Colin_Powell/Colin_Powell_0001.jpg"):
        path = lfw_root / name
        found = detector(load_rgb(path))
        paths.append(path)
        faces[path] = [found[0].landmarks]
    config = {**_compose_dict("ours_eot"), "alpha": 0.0, "steps": 3, "step_size": 0.05, "linf": 16 / 255,
              "mask": "face", "ssim_min": 0.95, "lpips_max": 0.05, "surrogates": ["tiny", "tiny112"]}
    metric = stlpips("alex", weight_cache)
    protector = store.study_protector(config, torch.device("cpu"), metric=metric,
                                      surrogates=[TinyFR(0, size=112), TinyFR(1, size=112, name="tiny112")])
    result = store.protect_photos(paths, faces, config, tmp_path / "cache", torch.device("cpu"), progress=False,
                                  protector=protector)
    _check_budgets(result, faces, metric, 0.95, 0.05, 16 / 255)
    assert any(r.quality["budget_scale"] < 1 for r in result.values())  # the budget had to act


# ----------------------------------------------------------------------------- trade-off tables


def test_tradeoff_points_tables_and_plot(tmp_path):
    from fr_shield.study.tradeoff import budget_label, curve_points, markdown_tables, plot_curves

    assert budget_label(None, None) == "unbounded" and budget_label(0.95, 0.05) == "ssim0.95_lpips0.05"
    rows = []
    for attack, budget, ssim_value, top1 in [("lowkey", "unbounded", 0.9, 0.1), ("lowkey", "ssim0.95_lpips0.05", 0.95, 0.4),
                                             ("none", "clean", np.nan, 1.0)]:
        for model, role in [("sface", "black-box"), ("dlib_resnet", "white-box")]:
            for cell in ["none", "median_k9"]:
                rows.append({"attack": attack, "budget": budget, "cell": cell, "model": model,
                             "role": role if attack != "none" else "clean", "subset": "protected", "top1": top1,
                             "top5": top1, "n_probes": 20, "mean_ssim_face": ssim_value, "mean_lpips_face": 0.01,
                             "mean_budget_scale": 0.5})
    points = curve_points(pd.DataFrame(rows))
    assert set(points["attack"]) == {"lowkey", "none"} and len(points) == 6
    clean = points[points["attack"] == "none"]
    assert (clean["ssim_face"] == 1.0).all()
    text = markdown_tables(points)
    assert "| lowkey | ssim0.95_lpips0.05 | 0.950 |" in text
    assert plot_curves(points, tmp_path / "curve.png").stat().st_size > 5_000


def test_heldout_csv_keeps_only_models_outside_the_ensemble(tmp_path):
    """``tradeoff heldout``: one tidy row per (data, held-out model, setting, surrogates, budget,
    cell); a surrogate of the run never appears; reruns replace their rows instead of adding."""
    from fr_shield.study.tradeoff import HELDOUT_COLUMNS, budget_label, heldout_markdown, write_heldout

    assert budget_label(0.95, 0.05, 2.3) == "ssim0.95_lpips0.05_de2.3"
    assert budget_label(0.95, 0.05, 2.3, 0.88) == "ssim0.95_lpips0.05_de2.3_worst0.88"
    assert budget_label(0.95, 0.05, 2.3, visibility_max=1.2) == "ssim0.95_lpips0.05_de2.3_eye1.2"
    assert budget_label() == "unbounded"
    rows = []
    for variant, role_of in [("clean", {}), ("ssim0.95_lpips0.05_de2.3", {"sface": "black-box", "dlib_resnet": "white-box",
                                                                        "onnx:/x/mfn_a.onnx": "black-box"})]:
        for model in ["sface", "dlib_resnet", "onnx:/x/mfn_a.onnx"]:
            for cell in ["none", "jpeg_q75"]:
                for subset in ["protected", "all"]:
                    rows.append({"data": "lfw", "surrogates": "dlib_resnet+onnx:/x/mfn_b.onnx", "attack": "none" if variant == "clean" else "ours_transfer",
                                 "budget": variant, "cell": cell, "model": model, "role": role_of.get(model, "clean"),
                                 "subset": subset, "top1": 0.25 if model == "sface" else 0.5, "top5": 0.75, "n_probes": 20,
                                 "mean_ssim_face": 0.95})
    job = tmp_path / "runs" / "job"
    job.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(job / "tradeoff.csv", index=False)
    pd.DataFrame([{"budget": "ssim0.95_lpips0.05_de2.3", "ssim_face": 0.951, "lpips_face": 0.02, "delta_e_face": 2.2,
                   "delta_e_p95_face": 5.0, "seconds": 40.0}] * 2).to_csv(job / "quality.csv", index=False)
    out = tmp_path / "heldout.csv"
    for _ in range(2):
        table = write_heldout([tmp_path / "runs"], out)
    written = pd.read_csv(out)
    assert list(written.columns) == HELDOUT_COLUMNS and len(written) == len(table) == 2 * 2 * 2
    assert set(written["heldout_model"]) == {"sface", "mfn_a"}  # dlib_resnet was a surrogate
    attacked = written[written["attack"] == "ours_transfer"]
    assert (attacked["delta_e_face"] == 2.2).all() and (attacked["seconds_per_photo"] == 40.0).all()
    # an ONNX surrogate is labelled by its file name, as held-out models are
    assert "| lfw | ours_transfer | dlib_resnet+mfn_b | ssim0.95_lpips0.05_de2.3 | 0.951 |" in heldout_markdown(written)
    # a job that measured the worst windows too: its mean joins the row and the table's SSIM cell
    pd.DataFrame([{"budget": "ssim0.95_lpips0.05_de2.3", "ssim_face": 0.951, "ssim_worst_face": 0.87,
                   "visibility_face": 1.5, "lpips_face": 0.02,
                   "delta_e_face": 2.2, "delta_e_p95_face": 5.0, "seconds": 40.0}]).to_csv(job / "quality.csv", index=False)
    rewritten = write_heldout([tmp_path / "runs"], out)
    assert (rewritten.loc[rewritten["attack"] == "ours_transfer", "ssim_worst_face"] == 0.87).all()
    assert (rewritten.loc[rewritten["attack"] == "none", "ssim_worst_face"] == 1.0).all()
    assert "| ssim0.95_lpips0.05_de2.3 | 0.951 (0.87) | 1.50 |" in heldout_markdown(rewritten)


@pytest.mark.real
def test_tradeoff_job_end_to_end_on_tiny_data(tmp_path, weight_cache):
    """``experiment=tradeoff`` on a tiny dataset and a tiny ONNX surrogate/evaluator: the job writes
    and logs one row per budget x transform level x model x subset, and the report draws them."""
    import mlflow
    from test_run import _job

    from fr_shield.study.tradeoff import report

    model = tmp_path / "tiny.onnx"
    done = _job(tmp_path, "experiment=tradeoff", "attack=ours_eot", "attack.steps=2", "attack.batch_size=4",
                f"attack.surrogates=['onnx:{model}']", "data.max_distractor_identities=null",
                "tradeoff.transforms=[{name: none, levels: [null]}, {name: jpeg, levels: [75]}]",
                "tradeoff.budgets=[{ssim_min: null}, {ssim_min: 0.99, lpips_max: 0.01, delta_e_max: 1.0}]")
    assert done.returncode == 0, done.stderr[-3000:]
    table = pd.read_csv(next((tmp_path / "multirun").glob("*/tradeoff.csv")))
    assert set(table["budget"]) == {"clean", "unbounded", "ssim0.99_lpips0.01_de1"}
    assert len(table) == 3 * 2 * 1 * 2  # budgets (with clean) x levels x models x subsets
    quality = pd.read_csv(next((tmp_path / "multirun").glob("*/quality.csv")))
    budgeted = quality[quality["budget"] == "ssim0.99_lpips0.01_de1"]
    assert (budgeted["ssim_face"] >= 0.99 - 1e-6).all() and (budgeted["lpips_face"] <= 0.01 + 1e-6).all()
    assert (budgeted["delta_e_face"] <= 1.0 + 1e-6).all()
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("fr_shield").experiment_id])
    assert any(key.startswith("top1/protected/") and key.endswith("/ssim0.99_lpips0.01_de1")
               for run in runs for key in run.data.metrics)
    text = report([tmp_path / "multirun"], tmp_path / "report", ["ssim0.99_lpips0.01_de1"], log=False)
    assert "ours_eot" in text and (tmp_path / "report" / "tradeoff_heldout.png").exists()


def test_downscaled_faces_keep_eot_with_kernels_scaled():
    """protect attacks a large face on a downscaled copy: the blur kernels shrink with it, and the
    EOT views, momentum and input diversity stay (they were once dropped there)."""
    config = compose_attack("ours_eot")
    half = scaled_attack_config(config, 0.5)
    assert half.branches == [BranchConfig()]
    levels = {family.name: family.levels for family in half.eot.families}
    assert levels["median_blur"] == [3, 5] and levels["gaussian_blur2d"] == [3, 5]
    assert levels["jpeg"] == [50, 60, 75, 90] and levels["resize"] == [0.5, 0.75]
    attack = build_attack(half, surrogates=surrogates(), perceptual=TinyPerceptual())
    assert isinstance(attack.objective, EOTObjective) and attack.settings.momentum == 1.0
    assert attack.objective.eot.input_diversity == 0.5 and attack.objective.reach == 5
    assert build_attack(config, surrogates=surrogates(), perceptual=TinyPerceptual()).objective.reach == 11

    ours = scaled_attack_config(compose_attack("ours"), 0.5)
    assert [(b.kind, b.kernel_size, b.sigma) for b in ours.branches] == [
        ("identity", 1, None), ("gaussian", 3, 1.5), ("median", 5, None)]
    tiny = scaled_attack_config(compose_attack("ours"), 0.1)  # every blur under 3 px
    assert tiny.branches == [BranchConfig()]
