import pytest
import torch

from contrastlab.augment import AugmentConfig
from contrastlab.multicrop import MultiCropAugment


def images(n=6, side=28, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, side, side), dtype=torch.uint8, generator=g)


def test_views_are_two_large_then_the_small_ones():
    aug = MultiCropAugment(AugmentConfig(size=28), n_small=3)
    views = aug.views(images(), 5)
    assert [tuple(v.shape) for v in views] == [(6, 1, 28, 28)] * 2 + [(6, 1, 16, 16)] * 3
    assert all(v.dtype == torch.float32 and 0 <= v.min() and v.max() <= 1 for v in views)
    assert aug.n_views == 5 and aug.config.size == 28 and aug.small_config.size == 16
    assert aug.config.crop_scale == (0.3, 1.0) and aug.small_config.crop_scale == (0.1, 0.3)


def test_sizes_and_scales_can_be_chosen():
    config = AugmentConfig(size=32, crop_scale=(0.4, 1.0), strength=0.5)
    aug = MultiCropAugment(config, n_small=1, small_size=12, large_scale=None, small_scale=(0.05, 0.14))
    assert aug.config.crop_scale == (0.4, 1.0) and aug.config.strength == 0.5
    assert aug.small_config.size == 12 and aug.small_config.strength == 0.5
    assert MultiCropAugment(config).small_config.size == 18          # round(4 * 32 / 7)
    assert config.crop_scale == (0.4, 1.0)                             # the caller's config is not modified
    views = aug.views(images(4, 32), 3)
    assert [v.shape[-1] for v in views] == [32, 32, 12]
    assert len(MultiCropAugment(config, n_small=0).views(images(4, 32), 2)) == 2


def test_view_count_must_match():
    aug = MultiCropAugment(AugmentConfig(size=12), n_small=2)
    with pytest.raises(ValueError, match=r"n_views must equal 2 \+ n_small = 4 .* got 2"):
        aug.views(images(), 2)


@pytest.mark.parametrize("kwargs, message", [
    ({"n_small": -1}, "n_small must be an int >= 0"),
    ({"small_size": 0}, "small_size must be a positive int"),
    ({"small_scale": (0.3, 0.1)}, "small_scale must be an ordered pair"),
    ({"large_scale": (0.0, 1.0)}, "large_scale must be an ordered pair"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MultiCropAugment(AugmentConfig(size=12), **kwargs)


def test_every_image_and_view_gets_its_own_parameters():
    x = images(1).repeat(8, 1, 1, 1)                  # eight copies of one image
    g = torch.Generator().manual_seed(0)
    views = MultiCropAugment(AugmentConfig(size=14, color=False), n_small=2).views(x, 4, generator=g)
    for v in views:                                   # copies get different crops (two may share a box by chance)
        assert len({tuple(row.flatten().tolist()) for row in v}) >= 6
    assert not torch.equal(views[0], views[1]) and not torch.equal(views[2], views[3])


def test_generator_makes_views_reproducible():
    aug = MultiCropAugment(AugmentConfig(size=12), n_small=2)
    a = aug.views(images(), 4, generator=torch.Generator().manual_seed(3))
    b = aug.views(images(), 4, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
