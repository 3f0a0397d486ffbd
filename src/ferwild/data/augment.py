"""Batched, per-sample-random image augmentation on tensors (CPU or GPU).

torchvision's v2 transforms draw one set of random parameters per call, so augmenting N
images independently costs N calls (~10 ms each for a 48x48 face on a CPU core). Here every
operation draws its parameters per sample and runs once for the whole batch: flips by index,
rotation/scale/translation by one ``affine_grid`` + ``grid_sample``, brightness/contrast/
saturation by broadcasting, blur by one grouped convolution, and occlusion patches by masks.
The same function serves class balancing in ``prepare`` and on-the-fly training augmentation.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ferwild.config import AugmentConfig


def _uniform(n: int, low: float, high: float, g: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device) * (high - low) + low


def augment_batch(images: torch.Tensor, generator: torch.Generator,
                  config: AugmentConfig = AugmentConfig()) -> torch.Tensor:
    """Augment a batch with independent random parameters per image.

    Args:
        images: (N, C, H, W) float tensor in [0, 1] (C = 1 or 3), on any device.
        generator: the source of randomness (same generator state -> same output).
        config: operation ranges.

    Returns:
        A new (N, C, H, W) float tensor in [0, 1].
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected (N, 1|3, H, W) images, got {tuple(images.shape)}")
    x = images
    n, c, h, w = x.shape
    dev = x.device
    g = generator
    if config.occlude_p > 0:
        x = _face_occluders(x, g, config)

    flip = torch.rand(n, generator=g, device=dev) < config.flip_p
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)

    # Rotation + scale + translation in one resampling (normalised coordinates).
    angle = _uniform(n, -config.degrees, config.degrees, g, dev) * math.pi / 180
    scale = _uniform(n, config.scale[0], config.scale[1], g, dev)
    tx = _uniform(n, -config.translate, config.translate, g, dev) * 2
    ty = _uniform(n, -config.translate, config.translate, g, dev) * 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    # Colour: brightness, contrast around each image's mean grey, saturation around its grey.
    bright = _uniform(n, 1 - config.brightness, 1 + config.brightness, g, dev)[:, None, None, None]
    x = x * bright
    contrast = _uniform(n, 1 - config.contrast, 1 + config.contrast, g, dev)[:, None, None, None]
    grey = _grey(x)
    x = (x - grey.mean(dim=(2, 3), keepdim=True)) * contrast + grey.mean(dim=(2, 3), keepdim=True)
    sat = _uniform(n, 1 - config.saturation, 1 + config.saturation, g, dev)[:, None, None, None]
    if c == 3:
        x = (x - _grey(x)) * sat + _grey(x)
    x = x.clamp(0, 1)

    # Blur a random subset with a per-image 3x3 Gaussian (one grouped convolution).
    sigma = _uniform(n, config.blur_sigma[0], config.blur_sigma[1], g, dev)
    blur = torch.rand(n, generator=g, device=dev) < config.blur_p
    offsets = torch.tensor([-1.0, 0.0, 1.0], device=dev)
    k1 = torch.exp(-(offsets[None, :] ** 2) / (2 * sigma[:, None] ** 2))
    k1 = k1 / k1.sum(1, keepdim=True)
    identity = torch.tensor([0.0, 1.0, 0.0], device=dev).expand(n, 3)
    k1 = torch.where(blur[:, None], k1, identity)
    kernel = (k1[:, :, None] * k1[:, None, :]).repeat_interleave(c, 0)[:, None]
    x = F.conv2d(F.pad(x.reshape(1, n * c, h, w), (1, 1, 1, 1), mode="replicate"), kernel,
                 groups=n * c).reshape(n, c, h, w)

    # Occlusion: one black rectangle on a random subset.
    area = _uniform(n, config.erase_area[0], config.erase_area[1], g, dev) * h * w
    log_r = _uniform(n, math.log(config.erase_ratio[0]), math.log(config.erase_ratio[1]), g, dev)
    ratio = torch.exp(log_r)
    eh = torch.sqrt(area * ratio).clamp(1, h).floor()
    ew = torch.sqrt(area / ratio).clamp(1, w).floor()
    top = (torch.rand(n, generator=g, device=dev) * (h - eh + 1)).floor()
    left = (torch.rand(n, generator=g, device=dev) * (w - ew + 1)).floor()
    erase = torch.rand(n, generator=g, device=dev) < config.erase_p
    rows = torch.arange(h, device=dev)[None, :]
    cols = torch.arange(w, device=dev)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < (top + eh)[:, None])
    in_cols = (cols >= left[:, None]) & (cols < (left + ew)[:, None])
    mask = (in_rows[:, :, None] & in_cols[:, None, :] & erase[:, None, None])[:, None]
    x = x.masked_fill(mask, 0.0)
    return x


#: Grey levels of the face-shaped occluders, in TRAINING_OCCLUDERS order (eyes, mouth, hand, half);
#: the hand (None) takes each face's own mean skin under the eyes.
_OCCLUDER_LEVELS = (20 / 255, 215 / 255, None, 128 / 255)


def _face_occluders(x: torch.Tensor, g: torch.Generator, config: AugmentConfig) -> torch.Tensor:
    """One of sunglasses, a mask, a hand or half the face on ``occlude_p`` of the images, placed
    by the crops' landmark template (before the geometric jitter, so it moves with the face)."""
    from ferwild.data.occluders import FacePoints, polygon_mask, skin_band, template_masks

    if config.occlude_points is None:
        raise ValueError("occlude_p needs occlude_points (the crops' landmark template)")
    n, c, h, w = x.shape
    masks = torch.from_numpy(template_masks(config.occlude_points, h, w)).to(x.device)  # (K, H, W)
    which = torch.randint(len(masks), (n,), generator=g, device=x.device)
    chosen = (torch.rand(n, generator=g, device=x.device) < config.occlude_p)
    face = FacePoints(np.asarray(config.occlude_points, dtype=np.float64) * [w, h])
    cheeks = torch.from_numpy(polygon_mask((h, w), skin_band(face))).to(x.device)
    skin = (x * cheeks).sum((2, 3), keepdim=True) / cheeks.sum().clamp(min=1)
    levels = torch.stack([skin if v is None else torch.full_like(skin, v) for v in _OCCLUDER_LEVELS], 0)  # (K, N, C, 1, 1)
    fill = levels[which, torch.arange(n, device=x.device)]  # (N, C, 1, 1)
    mask = (masks[which] & chosen[:, None, None])[:, None]  # (N, 1, H, W)
    return torch.where(mask, fill.expand_as(x), x)


def _grey(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    weights = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype)[None, :, None, None]
    return (x * weights).sum(1, keepdim=True)


def augment_uint8(images, seed: int, config: AugmentConfig = AugmentConfig()):
    """Augment an (N, H, W, C) uint8 numpy array with one seed; returns the same shape/dtype."""
    if len(images) == 0:
        return np.asarray(images, dtype=np.uint8).copy()
    x = torch.from_numpy(np.array(images, dtype=np.uint8, copy=True)).permute(0, 3, 1, 2).float() / 255
    g = torch.Generator().manual_seed(int(seed))
    out = augment_batch(x, g, config)
    return (out * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
