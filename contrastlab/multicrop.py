"""Multi-crop views (Caron et al. 2020, "Unsupervised Learning of Visual Features by Contrasting
Cluster Assignments", section 3.2): two large views plus a few small, cheap ones per image.

SwAV compares every view of an image with the cluster codes of the two large views. Small crops
add comparisons (more "views" per image) at a fraction of the compute, because they are
low-resolution. On ImageNet the paper uses 2 x 224 px crops of area scale (0.14, 1) and
6 x 96 px crops of scale (0.05, 0.14). On 28x28 or 32x32 images a 5% crop is a few pixels, so the
defaults here are scaled up: large crops (0.3, 1.0), small crops (0.1, 0.3), small side about
4/7 of the large one (16 px for 28 px views, 18 px for 32 px views).

Each group of views is made by a :class:`~contrastlab.augment.SimCLRAugment` whose config only
differs in ``size`` and ``crop_scale``, so every image still gets its own random parameters and
no host synchronisation happens::

    aug = MultiCropAugment(AugmentConfig(size=28), n_small=4)
    views = aug.views(x_uint8, 6)   # [2 x (N, C, 28, 28), 4 x (N, C, 16, 16)], float32
"""
from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from contrastlab.augment import AugmentConfig, SimCLRAugment, _check_range

__all__ = ["MultiCropAugment"]


class MultiCropAugment(torch.nn.Module):
    """2 large views at ``config.size`` + ``n_small`` small views at ``small_size``, SwAV's multi-crop.

    Args:
        config: the large views' :class:`~contrastlab.augment.AugmentConfig` (colour, flip, ... apply to both groups).
        n_small: number of small views per image, >= 0 (the paper: 6 on ImageNet).
        small_size: side of the small views in pixels; default ``round(4 * config.size / 7)``.
        large_scale: crop area range of the large views, replacing ``config.crop_scale``
            (paper: (0.14, 1.0)); None keeps ``config.crop_scale``.
        small_scale: crop area range of the small views (paper: (0.05, 0.14)).

    Attributes:
        config: the large views' config; ``fit`` reads ``config.size`` to resize evaluation images.
        small_config: the small views' config.
    """

    def __init__(self, config: AugmentConfig | None = None, *, n_small: int = 2, small_size: int | None = None,
                 large_scale: tuple[float, float] | None = (0.3, 1.0),
                 small_scale: tuple[float, float] = (0.1, 0.3)):
        super().__init__()
        config = config or AugmentConfig()
        if isinstance(n_small, bool) or not isinstance(n_small, int) or n_small < 0:
            raise ValueError(f"n_small must be an int >= 0, got {n_small!r}")
        if small_size is None:
            small_size = max(1, round(4 * config.size / 7))
        if isinstance(small_size, bool) or not isinstance(small_size, int) or small_size <= 0:
            raise ValueError(f"small_size must be a positive int, got {small_size!r}")
        large_scale = config.crop_scale if large_scale is None else _check_range("large_scale", large_scale)
        small_scale = _check_range("small_scale", small_scale)
        self.n_small = n_small
        self.large = SimCLRAugment(dataclasses.replace(config, crop_scale=large_scale))
        self.small = SimCLRAugment(dataclasses.replace(config, size=small_size, crop_scale=small_scale))

    @property
    def config(self) -> AugmentConfig:
        return self.large.config

    @property
    def small_config(self) -> AugmentConfig:
        return self.small.config

    @property
    def n_views(self) -> int:
        return 2 + self.n_small

    def forward(self, x: Tensor, *, generator=None) -> Tensor:
        """One large view per image: (N, C, H, W) -> (N, C, size, size) float32."""
        return self.large(x, generator=generator)

    def views(self, x: Tensor, n_views: int, *, generator=None) -> list[Tensor]:
        """The 2 large views, then the ``n_small`` small ones, each a float32 batch of N images.

        Args:
            x: (N, C, H, W) uint8 or float images.
            n_views: must equal ``2 + n_small`` (the method's ``n_views``).
        Returns:
            list of 2 tensors (N, C, size, size) then n_small tensors (N, C, small_size, small_size).
        """
        if n_views != self.n_views:
            raise ValueError(f"n_views must equal 2 + n_small = {self.n_views} for this MultiCropAugment "
                             f"(2 large + {self.n_small} small views), got {n_views!r}")
        out = self.large.views(x, 2, generator=generator)
        if self.n_small:
            out += self.small.views(x, self.n_small, generator=generator)
        return out

    def extra_repr(self) -> str:
        return f"n_small={self.n_small}"
