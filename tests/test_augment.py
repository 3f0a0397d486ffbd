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


# the FER+ crops' landmark template (eyes, nose, mouth corners), normalised
FERPLUS_POINTS = ((0.3054, 0.4016), (0.6964, 0.4007), (0.5072, 0.6145), (0.3485, 0.8081), (0.6644, 0.8088))


def test_face_occluders_follow_the_template_one_per_chosen_image():
    from ferwild.data.occluders import TRAINING_OCCLUDERS, template_masks

    still = dict(flip_p=0, degrees=0, scale=(1, 1), translate=0, brightness=0, contrast=0, saturation=0, blur_p=0,
                 erase_p=0)
    x = torch.rand(64, 1, 48, 48) * 0.2 + 0.4  # no pixel at a fill level by chance
    out = augment_batch(x, torch.Generator().manual_seed(0),
                        AugmentConfig(**still, occlude_p=1.0, occlude_points=FERPLUS_POINTS))
    masks = torch.from_numpy(template_masks(FERPLUS_POINTS, 48, 48))
    changed = (out - x).abs() > 1e-4  # the other (identity) steps leave float rounding behind
    # every image got exactly one occluder, drawn exactly over its template mask, all kinds used
    # (a pixel already at its occluder's grey level by chance reads as unchanged: IoU, not equality)
    iou = torch.stack([(changed[:, 0] & m).sum((1, 2)) / (changed[:, 0] | m).sum((1, 2)) for m in masks], 1)
    assert bool((iou.max(1).values > 0.99).all())
    kinds = iou.argmax(1).tolist()
    assert set(kinds) == set(range(len(TRAINING_OCCLUDERS)))
    mouth = masks[TRAINING_OCCLUDERS.index("mouth")]
    eyes = masks[TRAINING_OCCLUDERS.index("eyes")]
    # the mask covers the mouth corners' row, not the eyes'; sunglasses the other way round
    assert mouth[39, 20] and not mouth[19, 20] and eyes[19, 20] and not eyes[39, 20]
    untouched = augment_batch(x, torch.Generator().manual_seed(0),
                              AugmentConfig(**still, occlude_p=0.0, occlude_points=FERPLUS_POINTS))
    torch.testing.assert_close(untouched, x, atol=1e-5, rtol=0)


def test_face_occluders_need_a_template():
    with pytest.raises(ValueError, match="occlude_points"):
        augment_batch(torch.rand(2, 1, 16, 16), torch.Generator(), AugmentConfig(occlude_p=0.5))
    with pytest.raises(Exception, match="occlude_points"):
        AugmentConfig(occlude_p=0.5, occlude_points=((0.1, 0.2),))
