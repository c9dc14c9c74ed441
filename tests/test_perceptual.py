"""ST-LPIPS (fr_shield.core.perceptual) and the image-quality metrics (fr_shield.core.quality).

Agreement with the reference ``stlpips-pytorch`` package was checked outside the test suite
(the package needs torchvision, which the project does not install); these tests pin the
properties the attack and the reports rely on.
"""

from __future__ import annotations

import math

import kornia
import pytest
import torch

from fr_shield.core import quality
from fr_shield.core.errors import WeightError
from fr_shield.core.imageio import load_rgb
from fr_shield.core.perceptual import STLPIPS, stlpips
from fr_shield.core.quality import delta_e, linf, psnr, ssim, ssim_worst, visibility

BACKBONES = ["alex", "vgg"]
NOISE_LEVELS = [0.0, 2 / 255, 8 / 255, 16 / 255]


def _tensor(array) -> torch.Tensor:
    return torch.from_numpy(array).permute(2, 0, 1)[None].contiguous()


@pytest.fixture(scope="module")
def photos(lfw_root) -> torch.Tensor:
    """Two real 250x250 LFW photos, [2, 3, 250, 250] in [0, 1]."""
    return torch.cat([
        _tensor(load_rgb(lfw_root / "George_W_Bush" / "George_W_Bush_0001.jpg")),
        _tensor(load_rgb(lfw_root / "Serena_Williams" / "Serena_Williams_0001.jpg")),
    ])


def _face(photos: torch.Tensor, size: int = 112) -> torch.Tensor:
    top = (photos.shape[-1] - size) // 2
    return photos[..., top:top + size, top:top + size]


@pytest.mark.real
@pytest.mark.parametrize("backbone", BACKBONES)
def test_identical_images_are_at_distance_zero(backbone, weight_cache, photos):
    metric = stlpips(backbone, weight_cache)
    faces = _face(photos, 80)
    with torch.no_grad():  # one call: each face against itself, then against the other person
        distances = metric(torch.cat([faces, faces]), torch.cat([faces.clone(), faces.flip(0)]))
    assert distances.shape == (4,)
    same, different = distances[:2], distances[2:]
    assert torch.all(same.abs() < 1e-7)
    assert torch.all(different > 0.2)


@pytest.mark.real
@pytest.mark.parametrize("backbone", BACKBONES)
def test_distance_grows_with_noise(backbone, weight_cache, photos):
    """One fixed noise pattern at growing amplitude: the distance must rise at every step."""
    metric = stlpips(backbone, weight_cache)
    # AlexNet on the full photo; VGG16 (~10x the compute) on the face crop to stay fast.
    clean = photos[:1] if backbone == "alex" else _face(photos[:1])
    pattern = torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    noisy = torch.cat([(clean + level * pattern).clamp(0, 1) for level in NOISE_LEVELS])
    with torch.no_grad():
        # The clean features are computed once and broadcast against the noisy batch.
        distances = metric.distance_from_features(metric.features(clean), metric.features(noisy))
    assert distances.shape == (len(NOISE_LEVELS),)
    assert distances[0].abs() < 1e-7
    assert torch.all(distances[1:] > distances[:-1]), distances


@pytest.mark.real
def test_gradient_reaches_both_inputs_and_not_the_weights(weight_cache, photos):
    metric = stlpips("alex", weight_cache)
    clean = _face(photos, 64).clone().requires_grad_()
    noisy = (clean.detach() + 4 / 255 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(1)))
    noisy = noisy.clamp(0, 1).requires_grad_()
    metric(clean, noisy).sum().backward()
    for image in (clean, noisy):
        assert image.grad is not None and torch.isfinite(image.grad).all()
        assert image.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in metric.parameters())
    assert not metric.training


@pytest.mark.real
def test_any_size_from_32_px(weight_cache):
    metric = stlpips("alex", weight_cache)
    x = torch.rand(3, 3, 32, 45, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert metric(x, x.flip(-1)).shape == (3,)
    with pytest.raises(ValueError, match="at least 32"):
        metric(x[..., :31, :], x[..., :31, :])
    with pytest.raises(ValueError, match="same shape"):
        metric(x, x[:2])


@pytest.mark.parametrize("backbone,filename", [("alex", "alex_shift_tolerant.pth"),
                                               ("vgg", "vgg_shift_tolerant.pth")])
def test_missing_weight_file_names_file_and_fix(backbone, filename, tmp_path):
    with pytest.raises(WeightError) as caught:
        STLPIPS(backbone, cache_dir=tmp_path)
    message = str(caught.value)
    assert filename in message
    assert "python -m fr_shield weights fetch" in message


def test_unknown_backbone():
    with pytest.raises(ValueError, match="backbone"):
        STLPIPS("squeeze")


# --- quality metrics ---------------------------------------------------------------------------


def test_quality_of_identical_images():
    x = torch.rand(3, 3, 40, 50, generator=torch.Generator().manual_seed(3))
    assert torch.equal(ssim(x, x), torch.ones(3))
    assert torch.isinf(psnr(x, x)).all()
    assert torch.equal(linf(x, x), torch.zeros(3))


def test_quality_known_values():
    x = torch.full((2, 3, 32, 32), 0.5)
    y = x.clone()
    y[0] += 4 / 255  # uniform shift of 4 levels: MSE = (4/255)^2
    y[1, 1, 3, 7] -= 0.25  # one pixel changed
    assert torch.allclose(linf(x, y), torch.tensor([4 / 255, 0.25]))
    assert psnr(x, y)[0].item() == pytest.approx(-20 * math.log10(4 / 255), abs=1e-3)
    assert psnr(x, y)[1].item() == pytest.approx(10 * math.log10(3 * 32 * 32 / 0.25**2), abs=1e-3)


@pytest.mark.real
def test_ssim_and_psnr_fall_with_noise(photos):
    clean = photos[:1]
    pattern = torch.randn(clean.shape, generator=torch.Generator().manual_seed(4))
    noisy = torch.cat([(clean + level * pattern).clamp(0, 1) for level in NOISE_LEVELS[1:]])
    clean = clean.expand_as(noisy)
    s, p = ssim(clean, noisy), psnr(clean, noisy)
    assert s.shape == p.shape == (3,)
    assert torch.all(s[1:] < s[:-1]) and torch.all(s < 1) and torch.all(s > 0)
    assert torch.all(p[1:] < p[:-1])


def test_worst_window_ssim_sees_a_line_the_mean_dilutes():
    """A thin line drawn on a flat face-sized patch barely moves the mean SSIM; the worst 5 % of
    windows fall with it. Identical images score 1; the gradient reaches the line's pixels."""
    x = torch.full((1, 3, 112, 112), 0.6) + 0.01 * torch.rand(1, 3, 112, 112, generator=torch.Generator().manual_seed(5))
    y = x.clone()
    y[:, :, 40:42, 20:90] -= 12 / 255
    assert torch.equal(ssim_worst(x, x), torch.ones(1))
    assert ssim(x, y)[0] > 0.95 and ssim_worst(x, y)[0] < 0.8
    assert ssim_worst(x, y, fraction=1.0)[0] == pytest.approx(float(ssim(x, y)[0]), abs=1e-6)
    z = y.clone().requires_grad_(True)
    ssim_worst(x, z).sum().backward()
    on_line, far = z.grad[0, :, 35:47, 20:90].abs().sum(), z.grad[0, :, 80:, :].abs().sum()
    assert on_line > 0 and far == 0
    with pytest.raises(ValueError, match="fraction"):
        ssim_worst(x, y, fraction=0.0)


def test_visibility_sees_lines_mottling_grain_and_shading_but_not_faint_grain_and_less_among_texture():
    """The model of the eye (about 1: starts to show): 0 for no change; a line or mottling on flat
    skin scores well above random grain of the same energy, which stays below one level and
    unseen; grain of three levels and a broad dark patch show; the same line along stripes of its
    own orientation is masked by them, but not by one crease it deepens; the gradient reaches the
    changed pixels and stays finite where nothing changed."""
    generator = torch.Generator().manual_seed(7)
    flat = torch.full((1, 3, 112, 112), 0.6)
    assert visibility(flat, flat)[0] < 1e-6
    line = torch.zeros_like(flat)
    line[:, :, 55:57, 20:92] = -8 / 255
    noise = torch.randn(flat.shape, generator=generator).mean(1, keepdim=True).expand_as(flat)
    grain = noise * line.norm() / noise.norm()
    assert visibility(flat, flat + grain)[0] < 0.8
    assert visibility(flat, flat + line)[0] > 2.5 * visibility(flat, flat + grain)[0]
    y, x = torch.meshgrid(torch.arange(112.0), torch.arange(112.0), indexing="ij")
    mottling = sum(-4 / 255 * torch.exp(-((y - cy) ** 2 + (x - cx) ** 2) / 8) for cy in range(20, 100, 12)
                   for cx in range(20, 100, 12))  # dark blobs of sigma 2 px on smooth skin
    assert visibility(flat, flat + mottling)[0] > 1.5 * visibility(flat, flat + grain)[0]
    assert visibility(flat, flat + noise * (3 / 255) / noise.std())[0] > 1.5  # the 2 px channel
    shading = -8 / 255 * torch.exp(-((y - 56) ** 2 + (x - 40) ** 2) / (2 * 8.0 ** 2))
    assert visibility(flat, flat + shading)[0] > 1.0  # the 16 px channel
    rows = torch.arange(112.0).view(1, 1, 112, 1).expand(1, 3, 112, 112)
    striped = 0.6 + 0.15 * torch.cos(2 * torch.pi * rows / 8)  # horizontal stripes, period 8 px
    assert visibility(striped, striped + line)[0] < 0.5 * visibility(flat, flat + line)[0]
    # a single crease is no texture: deepening it shows as much as drawing it on flat skin
    assert visibility(flat + line, flat + 2 * line)[0] > 0.8 * visibility(flat, flat + line)[0]
    changed = (flat + line).requires_grad_(True)
    visibility(flat, changed).sum().backward()
    assert changed.grad[:, :, 50:62, 20:92].abs().sum() > 0
    unchanged = flat.clone().requires_grad_(True)  # an attack's first step
    visibility(flat, unchanged).sum().backward()
    assert torch.isfinite(unchanged.grad).all()
    with pytest.raises(ValueError, match="too small"):
        visibility(flat[..., :20, :20], flat[..., :20, :20])


def test_visibility_sees_a_colour_patch_but_not_fine_colour_grain_or_brightness_alone(monkeypatch):
    """The colour channel: a pink patch that keeps the brightness (R up, G down) shows, while the
    brightness channels alone read nothing of it; colour grain with more per-pixel Delta E than
    the patch is averaged out by the eye's low-pass colour vision."""
    generator = torch.Generator().manual_seed(3)
    skin = torch.tensor([0.80, 0.60, 0.50]).view(1, 3, 1, 1).expand(1, 3, 112, 112).clone()
    y, x = torch.meshgrid(torch.arange(112.0), torch.arange(112.0), indexing="ij")
    blob = torch.exp(-((y - 50) ** 2 + (x - 60) ** 2) / (2 * 6.0 ** 2))
    pink = torch.stack([blob, -blob * 0.299 / 0.587, torch.zeros_like(blob)])[None] * (5 / 255)  # luma unchanged
    assert kornia.color.rgb_to_grayscale(skin + pink).sub(kornia.color.rgb_to_grayscale(skin)).abs().max() < 1e-6
    assert visibility(skin, skin + pink)[0] > 1.0
    grain = torch.randn(1, 1, 112, 112, generator=generator)
    colour_grain = torch.cat([grain, -grain * 0.299 / 0.587, torch.zeros_like(grain)], 1) * (4 / 255)
    grain_delta_e, pink_delta_e = (float(delta_e(skin, skin + change)[0][0]) for change in (colour_grain, pink))
    assert grain_delta_e > pink_delta_e  # more Delta E, yet unseen
    assert visibility(skin, skin + colour_grain)[0] < 0.8
    monkeypatch.setattr(quality, "VISIBILITY_CHROMA_THRESHOLD", float("inf"))
    assert visibility(skin, skin + pink)[0] < 0.3  # the brightness channels alone (model 3) miss it


def test_quality_rejects_mismatched_or_tiny_inputs():
    x = torch.rand(1, 3, 20, 20)
    with pytest.raises(ValueError, match="same shape"):
        psnr(x, x[..., :10])
    with pytest.raises(ValueError, match="at least 11"):
        ssim(x[..., :10, :10], x[..., :10, :10])
