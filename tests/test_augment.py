"""Tests for contrastlab.augment: per-sample randomness, torchvision's distributions, closed cases."""
import math

import numpy as np
import pytest
import torch

from contrastlab import augment as A
from contrastlab.augment import (
    AugmentConfig,
    SimCLRAugment,
    color_jitter,
    cutout,
    gaussian_blur,
    gaussian_noise,
    horizontal_flip,
    hsv_to_rgb,
    random_grayscale,
    random_resized_crop,
    rgb_to_hsv,
    rotate,
    sample_crop_boxes,
    sobel,
    solarize,
    to_float,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def identical_batch(n=16, c=3, size=16, seed=0):
    """n copies of one smooth random image (N, C, size, size) in [0.1, 0.9]."""
    img = torch.rand(1, c, size // 4, size // 4, generator=gen(seed))
    img = torch.nn.functional.interpolate(img, size=size, mode="bilinear", align_corners=False)
    return (0.1 + 0.8 * img).expand(n, -1, -1, -1).contiguous()


def all_pairs_differ(y):
    flat = y.flatten(1)
    dist = torch.cdist(flat, flat)
    return bool((dist + torch.eye(len(y)) > 1e-4).all())


# ----------------------------------------------------------------------------- per-sample parameters

@pytest.mark.parametrize("op", [
    lambda x, g: random_resized_crop(x, 12, generator=g),
    lambda x, g: color_jitter(x, p=1.0, generator=g),
    lambda x, g: gaussian_blur(x, p=1.0, kernel_size=5, generator=g),
    lambda x, g: cutout(x, p=1.0, generator=g),
    lambda x, g: gaussian_noise(x, p=1.0, generator=g),
])
def test_parameters_differ_within_batch(op):
    y = op(identical_batch(), gen(1))
    assert all_pairs_differ(y)


def test_flip_applies_to_some_but_not_all():
    x = identical_batch(n=64)
    flipped = (horizontal_flip(x, generator=gen(2)) == x.flip(-1)).flatten(1).all(1)
    assert 0 < int(flipped.sum()) < 64


def test_simclr_views_are_independent():
    v1, v2 = SimCLRAugment().views(identical_batch(n=8, size=32), generator=gen(3))
    assert all_pairs_differ(v1) and not torch.allclose(v1, v2)


# ----------------------------------------------------------------------------- distributions

def torchvision_boxes(n, height, width, scale, ratio):
    from torchvision.transforms import RandomResizedCrop
    torch.manual_seed(0)
    img = torch.empty(1, height, width)
    return np.array([RandomResizedCrop.get_params(img, list(scale), list(ratio)) for _ in range(n)], float)


@pytest.mark.parametrize("height,width", [(32, 32), (24, 48)])
def test_crop_boxes_match_torchvision(height, width):
    n, scale, ratio = 20000, (0.08, 1.0), (3 / 4, 4 / 3)
    ours = sample_crop_boxes(n, height, width, scale, ratio, generator=gen(4)).numpy()
    ref = torchvision_boxes(n, height, width, scale, ratio)
    assert ours.shape == (n, 4)
    for boxes in (ours, ref):
        top, left, h, w = boxes.T
        assert (top >= 0).all() and (left >= 0).all() and (top + h <= height).all() and (left + w <= width).all()
    # Rounding to whole pixels widens the bounds slightly; allow one pixel of slack.
    _, _, h, w = ours.T
    area = h * w / (height * width)
    assert area.min() >= scale[0] * 0.7 and area.max() <= 1.0
    assert ((w / (h + 1) <= ratio[1]) & ((w + 1) / h >= ratio[0])).all()
    # Means agree with torchvision's get_params: standard error of each mean is about 0.002
    # (area) and 0.003 (log ratio), so 0.01 is about 3.5 standard errors of the difference.
    ref_area = ref[:, 2] * ref[:, 3] / (height * width)
    assert abs(area.mean() - ref_area.mean()) < 0.01
    assert abs(np.log(w / h).mean() - np.log(ref[:, 3] / ref[:, 2]).mean()) < 0.01
    for col in (0, 1):  # positions: normalised mean offset
        assert abs(ours[:, col].mean() - ref[:, col].mean()) < 0.03 * max(height, width)


def test_crop_fallback_matches_torchvision_exactly():
    # ratio (3, 4) never fits with area >= 0.9 of a square: torchvision's central fallback crop.
    ours = sample_crop_boxes(50, 30, 30, (0.9, 1.0), (3.0, 4.0), generator=gen(5)).numpy()
    ref = torchvision_boxes(50, 30, 30, (0.9, 1.0), (3.0, 4.0))
    np.testing.assert_array_equal(ours, ref)
    tall = sample_crop_boxes(5, 40, 10, (0.9, 1.0), (0.5, 2.0), generator=gen(5)).numpy()
    np.testing.assert_array_equal(tall, torchvision_boxes(5, 40, 10, (0.9, 1.0), (0.5, 2.0)))


def rate(changed):
    return changed.float().mean().item()


def test_application_rates():
    n = 10000
    x = torch.rand(n, 3, 4, 4, generator=gen(6)) * 0.5 + 0.25
    gray = random_grayscale(x, generator=gen(7))
    assert abs(rate((gray[:, 0] == gray[:, 1]).flatten(1).all(1)) - 0.2) < 0.02
    jit = color_jitter(x, 0.5, 0, 0, 0, generator=gen(8))
    assert abs(rate((jit != x).flatten(1).any(1)) - 0.8) < 0.02
    flip = horizontal_flip(x, generator=gen(9))
    assert abs(rate((flip != x).flatten(1).any(1)) - 0.5) < 0.02
    for op, p in [(solarize, 0.2), (gaussian_noise, 0.5), (gaussian_blur, 0.5), (rotate, 0.5 * 3 / 4)]:
        assert abs(rate((op(x, generator=gen(10)) != x).flatten(1).any(1)) - p) < 0.02, op.__name__


def test_jitter_factor_ranges():
    x = torch.full((4000, 3, 2, 2), 0.25)
    y = color_jitter(x, brightness=0.8, contrast=0, saturation=0, hue=0, p=1.0, generator=gen(11))
    factor = y / x                                   # one brightness factor per image
    assert torch.allclose(factor, factor[:, :1, :1, :1].expand_as(factor), atol=1e-6)
    f = factor[:, 0, 0, 0]
    assert f.min() >= 0.2 - 1e-6 and f.max() <= 1.8 + 1e-6
    assert abs(f.mean().item() - 1.0) < 0.02 and f.min() < 0.25 and f.max() > 1.75


# ----------------------------------------------------------------------------- closed cases

def test_full_crop_is_identity():
    x = torch.rand(4, 3, 16, 16, generator=gen(12))
    y = random_resized_crop(x, 16, scale=(1.0, 1.0), ratio=(1.0, 1.0), generator=gen(13))
    torch.testing.assert_close(y, x, atol=1e-5, rtol=0)


def test_crop_matches_slicing_and_resize():
    x = torch.rand(2, 1, 20, 20, generator=gen(14))
    boxes = sample_crop_boxes(2, 20, 20, generator=gen(15))
    y = random_resized_crop(x, 8, generator=gen(15))
    for i, (top, left, h, w) in enumerate(boxes.long().tolist()):
        ref = torch.nn.functional.interpolate(x[i:i + 1, :, top:top + h, left:left + w], size=8,
                                              mode="bilinear", align_corners=False)
        torch.testing.assert_close(y[i:i + 1], ref, atol=1e-5, rtol=0)


def test_jitter_matches_torchvision_per_op():
    import torchvision.transforms.v2.functional as TF
    x = torch.rand(3, 3, 8, 8, generator=gen(16))
    f = torch.tensor([0.5, 1.0, 1.7])
    for ours, theirs in [(A._adjust_brightness, TF.adjust_brightness), (A._adjust_contrast_, TF.adjust_contrast),
                         (A._adjust_saturation_, TF.adjust_saturation)]:
        ref = torch.cat([theirs(x[i:i + 1], float(f[i])) for i in range(3)])
        torch.testing.assert_close(ours(x.clone(), f), ref, atol=2e-3, rtol=0)   # luma 0.299 vs 0.2989 (the blends write in place)
    shift = torch.tensor([-0.3, 0.1, 0.45])
    ref = torch.cat([TF.adjust_hue(x[i:i + 1], float(shift[i])) for i in range(3)])
    torch.testing.assert_close(A._adjust_hue(x, shift), ref, atol=1e-5, rtol=0)


def test_hue_zero_identity_and_round_trip():
    x = torch.rand(8, 3, 8, 8, generator=gen(17))
    torch.testing.assert_close(hsv_to_rgb(rgb_to_hsv(x)), x, atol=1e-6, rtol=0)
    torch.testing.assert_close(A._adjust_hue(x, torch.zeros(8)), x, atol=1e-6, rtol=0)
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(A._adjust_hue(red, torch.tensor([1 / 3])), torch.tensor([0.0, 1.0, 0.0]).view(1, 3, 1, 1))
    torch.testing.assert_close(rgb_to_hsv(torch.full((1, 3, 1, 1), 0.4)).flatten(), torch.tensor([0.0, 0.0, 0.4]))


def test_grayscale_luma():
    x = torch.rand(5, 3, 4, 4, generator=gen(18))
    y = random_grayscale(x, p=1.0)
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    for c in range(3):
        torch.testing.assert_close(y[:, c], luma)
    one = torch.rand(5, 1, 4, 4)
    assert torch.equal(random_grayscale(one, p=1.0), one)
    assert torch.equal(color_jitter(one, 0, 0, 0.8, 0.4, p=1.0), one)   # saturation, hue: no-ops for C == 1


def test_blur_constant_and_mean():
    const = torch.full((3, 3, 32, 32), 0.3)
    torch.testing.assert_close(gaussian_blur(const, p=1.0, generator=gen(19)), const)
    x = torch.rand(3, 3, 32, 32, generator=gen(20))
    y = gaussian_blur(x, sigma=(1.5, 2.0), p=1.0, kernel_size=7, generator=gen(21))
    torch.testing.assert_close(y.mean(dim=(2, 3)), x.mean(dim=(2, 3)), atol=5e-3, rtol=0)
    assert (y.std(dim=(2, 3)) < 0.6 * x.std(dim=(2, 3))).all()       # it does smooth
    assert A._default_kernel_size(32, 32) == 3 and A._default_kernel_size(224, 224) == 23


def test_simple_ops_closed_form():
    x = torch.linspace(0, 1, 16).view(1, 1, 4, 4).repeat(2, 3, 1, 1)
    torch.testing.assert_close(solarize(x, 0.5, p=1.0), torch.where(x >= 0.5, 1 - x, x))
    assert torch.equal(horizontal_flip(x, p=1.0), x.flip(-1))
    assert torch.equal(gaussian_noise(x, std=0.0, p=1.0), x)
    r90 = rotate(x, degrees=(90,), p=1.0)
    torch.testing.assert_close(r90, torch.rot90(x, 1, dims=(-2, -1)), atol=1e-5, rtol=0)
    holes = cutout(torch.ones(200, 1, 10, 10), scale=(0.1, 0.1), ratio=(1, 1), p=1.0, generator=gen(22))
    assert ((holes == 0).flatten(1).sum(1) == 9).all()                 # round(sqrt(10))^2 pixels
    s = sobel(x, generator=gen(23))
    assert s.amin(dim=(1, 2, 3)).eq(0).all() and s.amax(dim=(1, 2, 3)).eq(1).all()
    assert torch.equal(sobel(torch.full((1, 3, 5, 5), 0.7)), torch.zeros(1, 3, 5, 5))


# ----------------------------------------------------------------------------- pipeline, devices, dtypes

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("channels", [1, 3])
def test_pipeline_shapes_devices(device, channels):
    x = torch.randint(0, 256, (6, channels, 28, 28), dtype=torch.uint8, device=device)
    everything = {name: True for name in ("blur", "solarize", "cutout", "noise", "sobel", "rotate")}
    for aug in (SimCLRAugment(size=16), SimCLRAugment(size=16, crop=False, **everything)):
        y = aug(x, generator=torch.Generator(device).manual_seed(0))
        assert y.shape == (6, channels, 16, 16) and y.dtype == torch.float32 and y.device == x.device
        assert y.min() >= 0 and y.max() <= 1


@pytest.mark.parametrize("channels", [1, 3])
def test_no_host_sync_runs_on_meta_device(channels):
    # Meta tensors have no data: .item(), bool(tensor), nonzero() or boolean-mask indexing raise there.
    x = torch.empty(8, channels, 32, 32, device="meta")
    everything = {name: True for name in ("blur", "solarize", "cutout", "noise", "sobel", "rotate")}
    for aug in (SimCLRAugment(**everything), SimCLRAugment(size=16, crop=False, **everything)):
        y = aug(x)
        assert y.device.type == "meta" and y.shape[:2] == (8, channels)
    assert sample_crop_boxes(5, 10, 20, device="meta").shape == (5, 4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_keeps_dtype(dtype):
    x = torch.rand(4, 3, 16, 16, generator=gen(24)).to(dtype)
    assert random_resized_crop(x, 8).dtype == dtype
    for op in (horizontal_flip, color_jitter, random_grayscale, gaussian_blur, solarize, cutout,
               gaussian_noise, sobel, rotate):
        assert op(x, p=1.0).dtype == dtype, op.__name__
    assert SimCLRAugment(size=8)(x).dtype == torch.float32


def test_generator_reproducible():
    x = torch.rand(8, 3, 16, 16, generator=gen(25))
    aug = SimCLRAugment(size=12, blur=True, cutout=True)
    assert torch.equal(aug(x, generator=gen(7)), aug(x, generator=gen(7)))
    assert not torch.equal(aug(x, generator=gen(7)), aug(x, generator=gen(8)))
    assert torch.equal(sample_crop_boxes(9, 10, 10, generator=gen(1)), sample_crop_boxes(9, 10, 10, generator=gen(1)))


def test_to_float_and_config():
    assert torch.equal(to_float(torch.full((1, 1, 2, 2), 255, dtype=torch.uint8)), torch.ones(1, 1, 2, 2))
    x = torch.rand(1, 3, 2, 2)
    assert to_float(x) is x
    aug = SimCLRAugment(AugmentConfig(size=24), strength=0.5)
    assert aug.config.size == 24 and aug.config.strength == 0.5 and aug.config.grayscale


# ----------------------------------------------------------------------------- errors

def test_bad_inputs_raise():
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match="x must have 4 dimensions, got shape \\(8, 8\\)"):
        horizontal_flip(torch.rand(8, 8))
    with pytest.raises(ValueError, match="x must have 4 dimensions"):
        to_float(torch.zeros(3, 8, 8, dtype=torch.uint8))
    with pytest.raises(TypeError, match="floating"):
        color_jitter(torch.zeros(1, 3, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="p must be a probability in \\[0, 1\\], got 1.5"):
        random_grayscale(x, p=1.5)
    with pytest.raises(ValueError, match="scale must be an ordered pair"):
        random_resized_crop(x, 4, scale=(1.0, 0.08))
    with pytest.raises(ValueError, match="ratio must be an ordered pair"):
        sample_crop_boxes(2, 8, 8, ratio=(0.0, 1.0))
    with pytest.raises(ValueError, match="hue must be in"):
        color_jitter(x, hue=0.7)
    with pytest.raises(ValueError, match="kernel_size"):
        gaussian_blur(x, kernel_size=4)
    with pytest.raises(ValueError, match="strength must be >= 0"):
        SimCLRAugment(strength=-1.0)
    with pytest.raises(TypeError, match="'colour'.*valid options are size, crop"):
        SimCLRAugment(colour=False)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        horizontal_flip(torch.rand(2, 2, 4, 4))
    assert math.isfinite(float(SimCLRAugment()(x).sum()))


def test_crop_grid_is_affine_grids_to_float_rounding():
    # random_resized_crop builds its sampling grid as two ramps (no batched matmul); it must be the grid
    # F.affine_grid makes from the same boxes, so crops equal the affine version up to float rounding
    g = torch.Generator().manual_seed(3)
    x = torch.rand(64, 3, 20, 24, generator=g)
    n, (height, width), size = len(x), x.shape[-2:], (9, 11)
    top, left, h, w = A.sample_crop_boxes(n, height, width, (0.2, 1.0), generator=torch.Generator().manual_seed(5)).unbind(1)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = w / width, (2 * left + w) / width - 1
    theta[:, 1, 1], theta[:, 1, 2] = h / height, (2 * top + h) / height - 1
    grid = torch.nn.functional.affine_grid(theta, [n, 3, *size], align_corners=False)
    expected = torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    got = A.random_resized_crop(x, size, (0.2, 1.0), generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------- fused passes (issue 19)

@pytest.mark.parametrize("c, size", [(1, 28), (3, 16), (3, (9, 11))])
def test_crop_with_flip_on_its_grid_is_crop_then_flip_exactly(c, size):
    # SimCLRAugment mirrors the crop's x ramp instead of flipping the cropped batch: the same random
    # draws, in the same order, and the same pixels, bit for bit
    x = torch.rand(64, c, 20, 24, generator=gen(30))
    got = A._crop_flip(x, size, (0.2, 1.0), (3 / 4, 4 / 3), flip_p=0.5, generator=gen(31))
    g = gen(31)
    expected = horizontal_flip(random_resized_crop(x, size, (0.2, 1.0), generator=g), 0.5, generator=g)
    assert torch.equal(got, expected)
    assert not torch.equal(got, random_resized_crop(x, size, (0.2, 1.0), generator=gen(31)))   # some were flipped


def _jitter_by_loop(x, brightness, contrast, saturation, hue, p, g):
    """color_jitter written per image from its docstring: draw b, c, (s, h), then the coin, for the
    whole batch in that order; an image the coin picks is brightened, contrasted, (saturated,
    hue-shifted), each step clamped; any other image is returned as it is."""
    n, rgb = len(x), x.shape[1] == 3

    def draw(strength):
        return 1 - strength + 2 * strength * torch.rand(n, generator=g) if strength > 0 else None
    b, c = draw(brightness), draw(contrast)
    s = draw(saturation) if rgb else None
    h = -hue + 2 * hue * torch.rand(n, generator=g) if rgb and hue > 0 else None
    coin = torch.rand(n, generator=g) < p
    out = []
    for i in range(n):
        img = x[i:i + 1].clone()
        if coin[i]:
            if b is not None:
                img = (img * b[i]).clamp(0, 1)
            luma = img if not rgb else 0.299 * img[:, :1] + 0.587 * img[:, 1:2] + 0.114 * img[:, 2:]
            if c is not None:
                img = (c[i] * img + (1 - c[i]) * luma.mean()).clamp(0, 1)
                luma = img if not rgb else 0.299 * img[:, :1] + 0.587 * img[:, 1:2] + 0.114 * img[:, 2:]
            if s is not None:
                img = (s[i] * img + (1 - s[i]) * luma).clamp(0, 1)
            if h is not None:
                img = A._adjust_hue(img, h[i:i + 1])
        out.append(img)
    return torch.cat(out)


@pytest.mark.parametrize("c, strengths, p", [(1, (0.8, 0.8, 0.8, 0.2), 0.8), (3, (0.8, 0.8, 0.8, 0.2), 0.8),
                                             (3, (0.4, 0.4, 0.4, 0.0), 0.5), (3, (0.0, 0.8, 0.0, 0.0), 0.8),
                                             (1, (0.5, 0.0, 0.0, 0.0), 1.0)])
def test_color_jitter_equals_the_per_image_loop(c, strengths, p):
    # the batched jitter writes its blends in place and, without hue, gives the images the coin leaves
    # alone factors of 1 instead of selecting between two copies: it must still be the loop above
    x = torch.rand(48, c, 6, 7, generator=gen(32))
    got = color_jitter(x, *strengths, p=p, generator=gen(33))
    expected = _jitter_by_loop(x, *strengths, p, gen(33))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert torch.equal(x, torch.rand(48, c, 6, 7, generator=gen(32)))   # the input is left as it was
