import numpy as np
import pytest
import torch

from ferwild.config import AugmentConfig
from ferwild.data.augment import augment_batch, augment_uint8


@pytest.mark.parametrize("channels", [1, 3])
def test_augment_uint8_is_seeded_per_sample_and_keeps_shape(channels):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 36, channels), dtype=np.uint8)
    batch = np.stack([image] * 8)
    a = augment_uint8(batch, seed=1)
    assert a.shape == batch.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, augment_uint8(batch, seed=1))
    assert not np.array_equal(a, augment_uint8(batch, seed=2))
    # same input image, different random parameters per sample
    assert len({a[i].tobytes() for i in range(8)}) == 8


def test_identity_config_returns_the_input():
    none = AugmentConfig(flip_p=0, degrees=0, scale=(1, 1), translate=0, brightness=0, contrast=0,
                         saturation=0, blur_p=0, erase_p=0)
    x = torch.rand(4, 3, 16, 16)
    out = augment_batch(x, torch.Generator().manual_seed(0), none)
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_flip_only_mirrors_every_image():
    cfg = AugmentConfig(flip_p=1, degrees=0, scale=(1, 1), translate=0, brightness=0, contrast=0,
                        saturation=0, blur_p=0, erase_p=0)
    x = torch.rand(3, 1, 8, 8)
    out = augment_batch(x, torch.Generator().manual_seed(0), cfg)
    torch.testing.assert_close(out, x.flip(-1), atol=1e-5, rtol=0)


def test_erasing_blacks_out_a_rectangle():
    cfg = AugmentConfig(flip_p=0, degrees=0, scale=(1, 1), translate=0, brightness=0, contrast=0,
                        saturation=0, blur_p=0, erase_p=1, erase_area=(0.1, 0.1), erase_ratio=(1, 1))
    x = torch.full((2, 1, 20, 20), 0.8)
    out = augment_batch(x, torch.Generator().manual_seed(0), cfg)
    zeros = (out == 0).sum(dim=(1, 2, 3))
    assert torch.all(zeros == 36)  # floor(sqrt(0.1 * 400)) = 6 -> a 6x6 patch


def test_bad_shape_and_config():
    with pytest.raises(ValueError):
        augment_batch(torch.rand(2, 2, 8, 8), torch.Generator())
    with pytest.raises(ValueError):
        AugmentConfig(flip_p=2)
