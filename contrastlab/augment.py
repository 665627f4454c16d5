"""Batched image augmentations with one random parameter set per image.

Contrastive methods compare two random views of the same image, so every image in a batch needs
its own crop, flip, colour distortion and so on. ``torchvision.transforms.v2`` applied to a batch
draws one parameter set for the whole batch, which is wrong here. Every function below instead
draws a parameter vector of length N on ``x.device`` and applies it with one batched operation:
no Python loop over samples and no host synchronisation (no ``.item()``, boolean-mask indexing
or data-dependent shapes). An op applied "with probability p" is computed for every image and
selected per image with ``torch.where``.

Images are float tensors (N, C, H, W) in [0, 1] with C = 1 (grayscale) or C = 3 (RGB); use
:func:`to_float` for uint8 data. Each function keeps the input's dtype and device. All random
draws go through ``generator`` when one is given; it must live on ``x.device``.

:class:`SimCLRAugment` composes them into T of SimCLR's Algorithm 1 (Chen et al. 2020, "A Simple
Framework for Contrastive Learning of Visual Representations", appendix A)::

    aug = SimCLRAugment(size=32, strength=0.5)
    v1, v2 = aug.views(x_uint8)              # two (N, C, 32, 32) float32 views on x's device
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastlab._validate import check_positive, check_probability, check_tensor, shape_str

__all__ = [
    "AugmentConfig", "SimCLRAugment", "color_jitter", "cutout", "gaussian_blur", "gaussian_noise",
    "horizontal_flip", "hsv_to_rgb", "random_grayscale", "random_resized_crop", "rgb_to_hsv",
    "rotate", "sample_crop_boxes", "sobel", "solarize", "to_float",
]

_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights for R, G, B


# ----------------------------------------------------------------------------- helpers

def to_float(x: Tensor) -> Tensor:
    """uint8 images in [0, 255] -> float32 in [0, 1]; floating images pass through unchanged.

    Args:
        x: (N, C, H, W) uint8 or floating tensor.
    Returns:
        (N, C, H, W) floating tensor on x's device.
    """
    check_tensor("x", x, ndim=4)
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    if not x.is_floating_point():
        raise TypeError(f"x must be uint8 or floating point, got dtype {x.dtype}")
    return x


def _check_image(x) -> None:
    check_tensor("x", x, ndim=4, floating=True)
    if x.shape[1] not in (1, 3):
        raise ValueError(f"x must have 1 or 3 channels (N, C, H, W), got shape {shape_str(x.shape)}")


def _check_range(name: str, value) -> tuple[float, float]:
    """Return ``value`` as floats (a, b), raising ValueError unless it is a pair with 0 < a <= b."""
    if not isinstance(value, Sequence) or len(value) != 2 or not 0 < value[0] <= value[1]:
        raise ValueError(f"{name} must be an ordered pair (min, max) with 0 < min <= max, got {value!r}")
    return float(value[0]), float(value[1])


def _uniform(shape, low: float, high: float, device, generator) -> Tensor:
    """float32 draws from U[low, high) of the given shape."""
    return low + (high - low) * torch.rand(shape, device=device, generator=generator)


def _offset(extent: Tensor, limit: int, generator) -> Tensor:
    """Uniform integer offsets in [0, limit - extent] (as float), one per entry of ``extent``."""
    u = torch.rand(extent.shape, device=extent.device, generator=generator)
    return torch.minimum(torch.floor(u * (limit - extent + 1)), limit - extent)


def _coin(x: Tensor, p: float, generator) -> Tensor:
    """(N, 1, 1, 1) bool: True for the images an op with probability p is applied to."""
    return (torch.rand(x.shape[0], device=x.device, generator=generator) < p).view(-1, 1, 1, 1)


def _gray(x: Tensor) -> Tensor:
    """(N, C, H, W) -> (N, 1, H, W) luma; the identity for C == 1."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)


def _per_image(f: Tensor, x: Tensor) -> Tensor:
    """(N,) parameters -> (N, 1, 1, 1) in x's dtype, ready to broadcast against x."""
    return f.to(x.dtype).view(-1, 1, 1, 1)


# ----------------------------------------------------------------------------- geometry

def sample_crop_boxes(n: int, height: int, width: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), *,
                      device=None, generator=None) -> Tensor:
    """Draw n crop boxes following torchvision's ``RandomResizedCrop.get_params``.

    Per box: area fraction s ~ U(scale), log aspect ratio log(w/h) ~ U(log ratio), w and h
    rounded to whole pixels. Ten candidates are drawn per box at once and the first that fits
    in the image is kept; if none fits, the box is the central crop of the whole image with
    its aspect ratio clamped to ``ratio`` (torchvision's fallback). top/left are uniform over
    the valid integer positions.

    Args:
        n: number of boxes; height, width: image size in pixels.
        scale: (min, max) fraction of the image area. ratio: (min, max) aspect ratio w / h.
        device, generator: where to draw (the generator must be on ``device``).
    Returns:
        (n, 4) float32 boxes (top, left, h, w) in whole pixels.
    """
    smin, smax = _check_range("scale", scale)
    rmin, rmax = _check_range("ratio", ratio)
    check_positive("height", height)
    check_positive("width", width)
    tries = 10
    area = height * width
    target = area * _uniform((n, tries), smin, smax, device, generator)            # (n, tries)
    aspect = torch.exp(_uniform((n, tries), math.log(rmin), math.log(rmax), device, generator))
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)                         # (n, tries)
    first = torch.argmax(fits.to(torch.uint8), dim=1, keepdim=True)                  # first True
    found = fits.any(dim=1)                                                          # (n,)
    h = h.gather(1, first).squeeze(1)
    w = w.gather(1, first).squeeze(1)
    top, left = _offset(h, height, generator), _offset(w, width, generator)
    # Fallback (plain Python numbers: depends on the arguments only, not on the draws).
    if width / height < rmin:
        fw, fh = width, round(width / rmin)
    elif width / height > rmax:
        fw, fh = round(height * rmax), height
    else:
        fw, fh = width, height
    # torch.where with Python scalars: no host-to-device copy, hence no stream synchronisation.
    columns = [(top, (height - fh) // 2), (left, (width - fw) // 2), (h, fh), (w, fw)]
    return torch.stack([torch.where(found, drawn, float(fixed)) for drawn, fixed in columns], dim=1)


def _sample(x: Tensor, theta: Tensor, size: tuple[int, int], padding_mode: str) -> Tensor:
    """Bilinear resampling of x through per-image affine maps theta (N, 2, 3), in x's dtype."""
    theta = theta.to(x.dtype)
    grid = F.affine_grid(theta, [x.shape[0], x.shape[1], *size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


def _pair(name: str, size) -> tuple[int, int]:
    if isinstance(size, int):
        size = (size, size)
    if not isinstance(size, Sequence) or len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(f"{name} must be a positive int or a pair (height, width), got {size!r}")
    return int(size[0]), int(size[1])


def random_resized_crop(x: Tensor, size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), *, generator=None) -> Tensor:
    """Crop a random box per image (see :func:`sample_crop_boxes`) and resize it to ``size``.

    One sampling grid (``F.affine_grid``'s, built as an outer sum of two ramps: it has no shear) and
    one ``grid_sample`` (bilinear, half-pixel centres, no antialiasing) for the whole batch; the
    output pixel grid spans exactly the box, so scale=(1, 1), ratio=(1, 1) on a
    square image is the identity.

    Args:
        x: (N, C, H, W) float images. size: int or (height, width) of the output.
        scale, ratio: as in :func:`sample_crop_boxes`.
    Returns:
        ``(N, C, *size)`` tensor.
    """
    return _crop_flip(x, size, scale, ratio, flip_p=0.0, generator=generator)


def _crop_flip(x: Tensor, size, scale, ratio=(3 / 4, 4 / 3), *, flip_p: float, generator=None) -> Tensor:
    """`random_resized_crop`, then `horizontal_flip` with probability ``flip_p`` (0: no flip, no draw),
    in one ``grid_sample``: mirroring the output mirrors the grid's x ramp about the box centre,
    which is its scale negated. The random draws are those of the two ops called in turn, and the
    result equals theirs exactly (the ramp's pixel centres are symmetric, so -a * c == a * c')."""
    _check_image(x)
    out_size = _pair("size", size)
    n, _, height, width = x.shape
    top, left, h, w = sample_crop_boxes(n, height, width, scale, ratio, device=x.device,
                                        generator=generator).unbind(1)
    sx = w / width
    if flip_p > 0:
        sx = torch.where(_coin(x, flip_p, generator).view(-1), -sx, sx)
    # x_in = a * x_out + b in [-1, 1] coordinates, per axis: the affine map has no shear, so the grid is an
    # outer sum of two 1-D ramps (what F.affine_grid computes with a batched matmul, at several times the cost)
    grid = torch.stack([_ramp(out_size[1], sx, (2 * left + w) / width - 1).unsqueeze(1).expand(-1, *out_size),
                        _ramp(out_size[0], h / height, (2 * top + h) / height - 1).unsqueeze(2).expand(-1, *out_size)],
                       dim=-1).to(x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _ramp(size: int, scale: Tensor, shift: Tensor) -> Tensor:
    """(N, size): scale * c + shift at the pixel centres c of ``size`` pixels in [-1, 1] (half-pixel
    centres, affine_grid's base grid with align_corners=False)."""
    centres = torch.linspace(-1, 1, size, device=scale.device) * ((size - 1) / size)
    return scale[:, None] * centres + shift[:, None]


def horizontal_flip(x: Tensor, p: float = 0.5, *, generator=None) -> Tensor:
    """Mirror each image left-right with probability p. (N, C, H, W) -> (N, C, H, W)."""
    _check_image(x)
    check_probability("p", p)
    return torch.where(_coin(x, p, generator), x.flip(-1), x)


def rotate(x: Tensor, degrees: Sequence[float] = (0, 90, 180, 270), p: float = 0.5, *, generator=None) -> Tensor:
    """With probability p, rotate each image counter-clockwise by an angle drawn from ``degrees``.

    ``degrees`` is a discrete set of angles chosen uniformly (SimCLR's rotation ablation uses
    multiples of 90). One batched affine grid with zero padding; multiples of 90 on a square
    image only permute pixels.

    Args:
        x: (N, C, H, W) float images. degrees: non-empty sequence of angles in degrees.
        p: probability of rotating an image.
    Returns:
        (N, C, H, W) tensor.
    """
    _check_image(x)
    check_probability("p", p)
    if not isinstance(degrees, Sequence) or len(degrees) == 0:
        raise ValueError(f"degrees must be a non-empty sequence of angles, got {degrees!r}")
    n, _, height, width = x.shape
    pick = torch.randint(len(degrees), (n,), device=x.device, generator=generator)
    pick = torch.where(_coin(x, p, generator).view(-1), pick, -1)                   # -1: not rotated
    cos, sin = torch.ones(n, device=x.device), torch.zeros(n, device=x.device)
    for i, angle in enumerate(map(math.radians, degrees)):   # Python scalars: no host-to-device copy
        cos = torch.where(pick == i, math.cos(angle), cos)
        sin = torch.where(pick == i, math.sin(angle), sin)
    # Rotate in pixel units about the centre, expressed in normalised [-1, 1] coordinates.
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin * height / width
    theta[:, 1, 0], theta[:, 1, 1] = sin * width / height, cos
    return _sample(x, theta, (height, width), "zeros")


def cutout(x: Tensor, scale=(0.02, 0.25), p: float = 0.5, *, ratio=(0.3, 3.3), value: float | None = 0.0,
           generator=None) -> Tensor:
    """With probability p, fill one random rectangle per image (DeVries & Taylor 2017).

    The rectangle covers an area fraction ~ U(scale) with aspect ratio w/h log-uniform in
    ``ratio`` (clipped to the image), at a uniform position.

    Args:
        x: (N, C, H, W) float images. scale: (min, max) area fraction in (0, 1].
        p: probability per image. ratio: (min, max) aspect ratio of the rectangle.
        value: fill value, or None for each image's per-channel mean.
    Returns:
        (N, C, H, W) tensor.
    """
    _check_image(x)
    check_probability("p", p)
    smin, smax = _check_range("scale", scale)
    if smax > 1:
        raise ValueError(f"scale must lie in (0, 1], got {tuple(scale)!r}")
    rmin, rmax = _check_range("ratio", ratio)
    n, _, height, width = x.shape
    area = height * width * _uniform(n, smin, smax, x.device, generator)
    aspect = torch.exp(_uniform(n, math.log(rmin), math.log(rmax), x.device, generator))
    h = torch.sqrt(area / aspect).round().clamp(1, height)
    w = torch.sqrt(area * aspect).round().clamp(1, width)
    top, left = _offset(h, height, generator), _offset(w, width, generator)
    rows = torch.arange(height, device=x.device).view(1, -1)                         # (1, H)
    cols = torch.arange(width, device=x.device).view(1, -1)                          # (1, W)
    in_rows = (rows >= top[:, None]) & (rows < (top + h)[:, None])                   # (N, H)
    in_cols = (cols >= left[:, None]) & (cols < (left + w)[:, None])                 # (N, W)
    hole = (in_rows[:, :, None] & in_cols[:, None, :]).unsqueeze(1) & _coin(x, p, generator)
    fill = x.mean(dim=(2, 3), keepdim=True) if value is None else torch.full_like(x[:1, :1, :1, :1], value)
    return torch.where(hole, fill, x)


# ----------------------------------------------------------------------------- colour

def rgb_to_hsv(x: Tensor) -> Tensor:
    """RGB -> HSV, all channels in [0, 1] (hue as a fraction of a turn). (N, 3, H, W) -> same."""
    r, g, b = x.unbind(1)
    value = x.amax(dim=1)
    delta = value - x.amin(dim=1)                   # chroma; 0 for gray pixels, which get hue 0
    tiny = torch.finfo(x.dtype).tiny
    sat = delta / value.clamp_min(tiny)
    hue = torch.where(value == r, g - b, torch.where(value == g, 2 * delta + b - r, 4 * delta + r - g))
    hue = torch.remainder(hue / (6 * delta.clamp_min(tiny)), 1.0)
    return torch.stack([hue, sat, value], dim=1)


def hsv_to_rgb(x: Tensor) -> Tensor:
    """HSV -> RGB, the inverse of :func:`rgb_to_hsv`. (N, 3, H, W) -> (N, 3, H, W).

    Branch-free form: channel_n = V - V S clamp(min(k, 4 - k), 0, 1), k = (n + 6H) mod 6,
    with n = 5, 3, 1 for R, G, B.
    """
    hue, sat, value = x.unbind(1)
    channels = []
    for n in (5, 3, 1):
        k = torch.remainder(n + 6 * hue, 6)
        channels.append(value - value * sat * torch.minimum(k, 4 - k).clamp(0, 1))
    return torch.stack(channels, dim=1)


def _blend_(x: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    """factor * x + (1 - factor) * other, clamped to [0, 1], written into ``x`` (a tensor of our own);
    factor is (N, 1, 1, 1). A factor of 1 returns x clamped (``0 * other`` adds nothing)."""
    return x.mul_(factor).add_((1 - factor) * other).clamp_(0, 1)


def _adjust_brightness(x: Tensor, factor: Tensor) -> Tensor:
    return (x * _per_image(factor, x)).clamp_(0, 1)


def _adjust_contrast_(x: Tensor, factor: Tensor) -> Tensor:
    return _blend_(x, _gray(x).mean(dim=(1, 2, 3), keepdim=True), _per_image(factor, x))


def _adjust_saturation_(x: Tensor, factor: Tensor) -> Tensor:
    return _blend_(x, _gray(x), _per_image(factor, x))


def _adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    hsv = rgb_to_hsv(x)
    hue = torch.remainder(hsv[:, :1] + _per_image(shift, x), 1.0)
    return hsv_to_rgb(torch.cat([hue, hsv[:, 1:]], dim=1)).clamp(0, 1)


def color_jitter(x: Tensor, brightness: float = 0.8, contrast: float = 0.8, saturation: float = 0.8,
                 hue: float = 0.2, p: float = 0.8, *, generator=None) -> Tensor:
    """With probability p, jitter each image's brightness, contrast, saturation and hue.

    Factors follow torchvision's ``ColorJitter``: b, c, s ~ U[max(0, 1 - B), 1 + B] for strength B,
    hue shift ~ U[-hue, hue] of a full turn. Brightness multiplies; contrast blends with the
    image's mean luma; saturation blends with the luma image; hue rotates H in HSV. Unlike
    torchvision, which permutes the four ops per call, the order here is fixed:
    brightness, contrast, saturation, hue. Each step clamps to [0, 1]. For C == 1 saturation and
    hue are no-ops. A strength of 0 skips that op.

    Args:
        x: (N, C, H, W) float images in [0, 1].
        brightness, contrast, saturation: strengths >= 0. hue: in [0, 0.5]. p: probability per image.
    Returns:
        (N, C, H, W) tensor in [0, 1].
    """
    _check_image(x)
    check_probability("p", p)
    for name, value in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
        check_positive(name, value, allow_zero=True)
    if not 0 <= hue <= 0.5:
        raise ValueError(f"hue must be in [0, 0.5], got {hue!r}")
    n, rgb = x.shape[0], x.shape[1] == 3
    factors = [(_uniform(n, max(0.0, 1 - strength), 1 + strength, x.device, generator) if strength > 0 else None)
               for strength in (brightness, contrast, saturation if rgb else 0)]
    shift = _uniform(n, -hue, hue, x.device, generator) if rgb and hue > 0 else None
    chosen = _coin(x, p, generator)                                                  # (N, 1, 1, 1)
    if shift is None:
        # an image left alone gets factors of 1, which return it as it is (clamped to [0, 1], where it
        # already lies): no pass over the batch to select from two copies. Hue needs that pass: its
        # RGB -> HSV -> RGB round trip is exact only up to rounding.
        factors = [f if f is None else torch.where(chosen.view(-1), f, 1.0) for f in factors]
        chosen = None
    brightness_f, contrast_f, saturation_f = factors
    out = x.clone() if brightness_f is None else _adjust_brightness(x, brightness_f)   # ours: blended in place
    if contrast_f is not None:
        out = _adjust_contrast_(out, contrast_f)
    if saturation_f is not None:
        out = _adjust_saturation_(out, saturation_f)
    if shift is not None:
        out = _adjust_hue(out, shift)
    return out if chosen is None else torch.where(chosen, out, x)


def random_grayscale(x: Tensor, p: float = 0.2, *, generator=None) -> Tensor:
    """With probability p, replace an RGB image by its BT.601 luma, repeated over the C channels.

    A no-op for C == 1. (N, C, H, W) -> (N, C, H, W).
    """
    _check_image(x)
    check_probability("p", p)
    if x.shape[1] == 1:
        return x
    return torch.where(_coin(x, p, generator), _gray(x).expand_as(x), x)


def solarize(x: Tensor, threshold: float = 0.5, p: float = 0.2, *, generator=None) -> Tensor:
    """With probability p, invert the pixels >= threshold (x -> 1 - x), as in BYOL's pipeline."""
    _check_image(x)
    check_probability("p", p)
    check_probability("threshold", threshold)
    return torch.where(_coin(x, p, generator) & (x >= threshold), 1 - x, x)


def gaussian_noise(x: Tensor, std: float = 0.1, p: float = 0.5, *, generator=None) -> Tensor:
    """With probability p, add N(0, std^2) noise to every pixel, then clamp to [0, 1]."""
    _check_image(x)
    check_probability("p", p)
    check_positive("std", std, allow_zero=True)
    noise = torch.randn(x.shape, device=x.device, generator=generator).to(x.dtype)
    return torch.where(_coin(x, p, generator), (x + std * noise).clamp(0, 1), x)


# ----------------------------------------------------------------------------- filters

def _default_kernel_size(height: int, width: int) -> int:
    """About 10% of the image side, odd and at least 3 (SimCLR, appendix A)."""
    k = int(0.1 * min(height, width))
    return max(3, k + 1 - k % 2)


def gaussian_blur(x: Tensor, sigma=(0.1, 2.0), p: float = 0.5, kernel_size: int | None = None, *,
                  generator=None) -> Tensor:
    """With probability p, blur each image with a Gaussian of its own sigma ~ U(sigma).

    The per-image separable kernel is applied as two grouped convolutions (groups = N * C) on
    the batch reshaped to (1, N * C, H, W), with reflect padding.

    Args:
        x: (N, C, H, W) float images. sigma: (min, max) standard deviation in pixels, min > 0.
        p: probability per image. kernel_size: odd size; default about 10% of the image side.
    Returns:
        (N, C, H, W) tensor.
    """
    _check_image(x)
    check_probability("p", p)
    smin, smax = _check_range("sigma", sigma)
    n, c, height, width = x.shape
    k = _default_kernel_size(height, width) if kernel_size is None else kernel_size
    if not isinstance(k, int) or k < 1 or k % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd int, got {kernel_size!r}")
    sig = _uniform(n, smin, smax, x.device, generator)                               # (N,)
    t = torch.arange(k, device=x.device, dtype=torch.float32) - k // 2               # (k,)
    kernel = torch.exp(-0.5 * (t / sig[:, None]) ** 2)                               # (N, k)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0).to(x.dtype)  # (N*C, k)
    half = k // 2
    mode = "reflect" if half < min(height, width) else "replicate"
    y = x.reshape(1, n * c, height, width)
    y = F.conv2d(F.pad(y, (0, 0, half, half), mode=mode), kernel.view(n * c, 1, k, 1), groups=n * c)
    y = F.conv2d(F.pad(y, (half, half, 0, 0), mode=mode), kernel.view(n * c, 1, 1, k), groups=n * c)
    return torch.where(_coin(x, p, generator), y.view_as(x), x)


def sobel(x: Tensor, p: float = 1.0, *, generator=None) -> Tensor:
    """With probability p, replace the image by the Sobel gradient magnitude of its luma.

    The magnitude is rescaled per image to [0, 1] (a constant image gives zeros) and repeated
    over the C channels. (N, C, H, W) -> (N, C, H, W).
    """
    _check_image(x)
    check_probability("p", p)
    g = F.pad(_gray(x), (1, 1, 1, 1), mode="replicate")                             # (N, 1, H+2, W+2)
    diff = torch.arange(3, device=x.device, dtype=x.dtype) - 1                      # [-1, 0, 1]
    gx = torch.outer(2 - diff.abs(), diff)                                           # Sobel x kernel
    weight = torch.stack([gx, gx.T]).unsqueeze(1)                                    # (2, 1, 3, 3)
    mag = F.conv2d(g, weight).square().sum(1, keepdim=True).sqrt()                   # (N, 1, H, W)
    low = mag.amin(dim=(2, 3), keepdim=True)
    span = mag.amax(dim=(2, 3), keepdim=True) - low
    mag = (mag - low) / torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(_coin(x, p, generator), mag.expand_as(x), x)


# ----------------------------------------------------------------------------- pipeline

@dataclass
class AugmentConfig:
    """Switches of the SimCLR augmentation pipeline; defaults are SimCLR's (Chen et al. 2020, app. A)."""

    size: int = 32                                  # output side in pixels
    crop: bool = True                               # random resized crop (else a plain resize to size)
    crop_scale: tuple[float, float] = (0.08, 1.0)   # area fraction range of the crop
    flip: bool = True                               # horizontal flip, p = 0.5
    color: bool = True                              # colour jitter (0.8s, 0.8s, 0.8s, 0.2s), p = 0.8
    strength: float = 1.0                           # s above; SimCLR uses 0.5 on CIFAR-10
    grayscale: bool = True                          # random grayscale, p = 0.2
    blur: bool = False                              # Gaussian blur, sigma in [0.1, 2], p = 0.5 (ImageNet only)
    solarize: bool = False                          # ablation: solarize at 0.5, p = 0.2
    cutout: bool = False                            # ablation: one zeroed rectangle, p = 0.5
    noise: bool = False                             # ablation: Gaussian noise std 0.1, p = 0.5
    sobel: bool = False                             # ablation: Sobel filtering, p = 1
    rotate: bool = False                            # ablation: rotation by a multiple of 90 degrees, p = 0.5

    def __post_init__(self):
        if not isinstance(self.size, int) or self.size <= 0:
            raise ValueError(f"size must be a positive int, got {self.size!r}")
        self.crop_scale = _check_range("crop_scale", self.crop_scale)   # a JSON list becomes a tuple
        check_positive("strength", self.strength, allow_zero=True)


class SimCLRAugment(torch.nn.Module):
    """T in SimCLR's Algorithm 1: composed stochastic augmentation applied per sample on the input's device.

    Order: crop (else resize to ``size`` if needed), flip, colour jitter, grayscale, blur, then the
    ablation ops rotate, cutout, sobel, noise, solarize.

    Args:
        config: an :class:`AugmentConfig`; keyword overrides replace its fields,
            e.g. ``SimCLRAugment(size=96, blur=True)``.
    """

    def __init__(self, config: AugmentConfig | None = None, **overrides):
        super().__init__()
        config = config or AugmentConfig()
        fields = [f.name for f in dataclasses.fields(AugmentConfig)]
        for name in overrides:
            if name not in fields:
                raise TypeError(f"unknown augmentation option {name!r}; valid options are {', '.join(fields)}")
        self.config = dataclasses.replace(config, **overrides)

    def forward(self, x: Tensor, *, generator=None) -> Tensor:
        """One random view per image: (N, C, H, W) uint8 or float -> (N, C, size, size) float32."""
        cfg, g = self.config, generator
        x = to_float(x).float()
        _check_image(x)
        s = cfg.strength
        if cfg.crop:   # the flip rides on the crop's sampling grid: the same draws and pixels, one pass fewer
            x = _crop_flip(x, cfg.size, cfg.crop_scale, flip_p=0.5 if cfg.flip else 0.0, generator=g)
        else:
            if x.shape[-2:] != (cfg.size, cfg.size):
                x = F.interpolate(x, size=(cfg.size, cfg.size), mode="bilinear", antialias=True, align_corners=False)
            if cfg.flip:
                x = horizontal_flip(x, 0.5, generator=g)
        if cfg.color:
            x = color_jitter(x, 0.8 * s, 0.8 * s, 0.8 * s, min(0.2 * s, 0.5), p=0.8, generator=g)
        if cfg.grayscale:
            x = random_grayscale(x, 0.2, generator=g)
        if cfg.blur:
            x = gaussian_blur(x, (0.1, 2.0), p=0.5, generator=g)
        if cfg.rotate:
            x = rotate(x, (0, 90, 180, 270), p=0.5, generator=g)
        if cfg.cutout:
            x = cutout(x, (0.02, 0.25), p=0.5, generator=g)
        if cfg.sobel:
            x = sobel(x, p=1.0, generator=g)
        if cfg.noise:
            x = gaussian_noise(x, 0.1, p=0.5, generator=g)
        if cfg.solarize:
            x = solarize(x, 0.5, p=0.2, generator=g)
        return x

    def views(self, x: Tensor, n_views: int = 2, *, generator=None) -> list[Tensor]:
        """n_views independent augmentations of the same batch, each (N, C, size, size) float32."""
        if not isinstance(n_views, int) or n_views < 1:
            raise ValueError(f"n_views must be a positive int, got {n_views!r}")
        check_tensor("x", x, ndim=4)
        n = x.shape[0]
        # one pass over a batch of n_views * N images: every row still draws its own parameters
        # (repeated before the conversion to float, so uint8 images are copied at a quarter of the bytes)
        views = self(x.repeat(n_views, 1, 1, 1), generator=generator)
        return list(views.split(n))

    def extra_repr(self) -> str:
        return repr(self.config)
