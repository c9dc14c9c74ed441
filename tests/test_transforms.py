"""Operator transforms: shape, range, agreement with Kornia, borders, levels."""

import pytest
import torch
import torch.nn.functional as F
from kornia import filters as KF

from fr_shield.core import transforms as T

KERNEL_FAMILIES = ["median_blur", "box_blur", "gaussian_blur2d", "motion_blur", "max_blur_pool2d", "blur_pool2d"]


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    smooth = F.interpolate(torch.rand(2, 3, 8, 10, generator=g), size=(40, 44), mode="bilinear")
    return (0.7 * smooth + 0.3 * torch.rand(2, 3, 40, 44, generator=g)).clamp(0, 1)


def test_registry_lists_every_family():
    assert set(T.available()) == {"none", *KERNEL_FAMILIES, "jpeg", "resize"}
    for name in KERNEL_FAMILIES:
        assert T.get(name).levels == (3, 5, 7, 9, 11, 17)
        assert T.get(name).scales_with_resolution
    assert T.get("jpeg").differentiable is T.differentiable_jpeg  # the real codec has a Kornia twin
    assert T.get("max_blur_pool2d").differentiable is None
    assert T.get("median").name == "median_blur" and T.get("identity").name == "none"
    with pytest.raises(KeyError, match="choose one of"):
        T.get("sharpen")


def test_one_label_format_round_trips():
    for name, level, text in [("median_blur", 9, "median_k9"), ("box_blur", 11, "box_k11"), ("jpeg", 75, "jpeg_q75"),
                              ("resize", 0.5, "resize_x0.5"), ("max_blur_pool2d", 5, "max_k5"), ("none", None, "none")]:
        assert T.label(name, level) == text
        transform, parsed = T.parse_label(text)
        assert (transform.name, parsed) == (name, level)
    with pytest.raises(ValueError, match="not a transform label"):
        T.parse_label("median_q9")


def test_kernels_scale_with_the_working_resolution():
    assert T.get("median_blur").scaled(11, 0.5) == 5 and T.get("box_blur").scaled(5, 0.4) is None
    assert T.get("jpeg").scaled(75, 0.5) == 75 and T.get("resize").scaled(0.5, 0.25) == 0.5


def test_bounded_median_equals_the_plain_one():
    images = torch.rand(1, 3, 70, 33)
    bounded = T.median_blur_bounded(images, 5, budget_bytes=5 * 5 * 3 * 33 * 4 * 2 * 12)
    assert torch.equal(bounded, T.median_blur(images, 5))


@pytest.mark.parametrize("name", T.available())
def test_every_level_keeps_shape_and_range(name: str, images: torch.Tensor):
    for level in T.get(name).levels:
        out = T.apply(name, images, level)
        assert out.shape == images.shape and out.dtype == images.dtype
        assert out.min() >= 0 and out.max() <= 1


def _kornia_reference(name: str, x: torch.Tensor, k: int) -> torch.Tensor:
    size = x.shape[-2:]
    return {
        "median_blur": lambda: KF.median_blur(x, (k, k)),
        "box_blur": lambda: KF.box_blur(x, (k, k)),
        "gaussian_blur2d": lambda: KF.gaussian_blur2d(x, (k, k), (T.gaussian_sigma(k),) * 2),
        "motion_blur": lambda: KF.motion_blur(x, k, 45.0, 0.0),
        "max_blur_pool2d": lambda: F.interpolate(KF.max_blur_pool2d(x, k), size=size, mode="bilinear"),
        "blur_pool2d": lambda: F.interpolate(KF.blur_pool2d(x, k), size=size, mode="bilinear"),
    }[name]()


@pytest.mark.parametrize("name", KERNEL_FAMILIES)
@pytest.mark.parametrize("k", [3, 7, 17])
def test_matches_kornia_away_from_border(name: str, k: int, images: torch.Tensor):
    ours = T.apply(name, images, k)
    ref = _kornia_reference(name, images, k)
    m = k  # the border band where padding choices may differ
    torch.testing.assert_close(ours[..., m:-m, m:-m], ref[..., m:-m, m:-m])
    assert not torch.equal(ours, images)


def test_median_border_is_reflected_not_dark():
    flat = torch.full((1, 3, 20, 20), 0.8)
    for name in ["median_blur", "box_blur", "gaussian_blur2d", "motion_blur"]:
        torch.testing.assert_close(T.apply(name, flat, 11), flat)


def test_even_kernel_rejected(images: torch.Tensor):
    for name in KERNEL_FAMILIES:
        with pytest.raises(ValueError, match="odd"):
            T.apply(name, images, 4)
    with pytest.raises(ValueError, match="needs a level"):
        T.apply("median_blur", images)


def test_gaussian_sigma_rule():
    assert T.gaussian_sigma(3) == pytest.approx(0.8)
    assert T.gaussian_sigma(7) == pytest.approx(1.4)


def test_jpeg_and_resize_change_image_slightly(images: torch.Tensor):
    for name, level in [("jpeg", 90), ("jpeg", 10), ("resize", 0.5), ("resize", 0.25)]:
        out = T.apply(name, images, level)
        diff = (out - images).abs().mean()
        assert out.shape == images.shape
        assert 0 < diff < 0.2, (name, level, diff)
    strong, mild = T.apply("jpeg", images, 10), T.apply("jpeg", images, 90)
    assert (strong - images).abs().mean() > (mild - images).abs().mean()
    gray = T.apply("jpeg", images[:, :1], 50)
    assert gray.shape == images[:, :1].shape
    with pytest.raises(ValueError):
        T.apply("jpeg", images, 0)
    with pytest.raises(ValueError):
        T.apply("resize", images, 2.0)


def test_none_is_identity(images: torch.Tensor):
    assert T.apply("none", images) is images


@pytest.mark.parametrize("name", ["median_blur", "box_blur", "gaussian_blur2d", "motion_blur", "resize"])
def test_differentiable(name: str, images: torch.Tensor):
    x = images[:1].clone().requires_grad_(True)
    level = 0.5 if name == "resize" else 5
    T.apply(name, x, level).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_small_images_fall_back_to_replicate():
    x = torch.rand(1, 3, 6, 6)
    for name in KERNEL_FAMILIES:
        assert T.apply(name, x, 17).shape == x.shape


def test_bad_inputs():
    with pytest.raises(ValueError, match="B, C, H, W"):
        T.apply("box_blur", torch.rand(3, 8, 8), 3)
    with pytest.raises(ValueError, match="floating"):
        T.apply("box_blur", torch.zeros(1, 3, 8, 8, dtype=torch.uint8), 3)
