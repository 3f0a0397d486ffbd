"""What a model expects of its input (:class:`Preprocessing`), applied in numpy or in torch.

A model takes square ``input_size`` images, 3 channels, scaled to [0, 1] and normalised with
its per-channel ``mean``/``std``. Training and evaluation apply that to uint8 batches with
torch (:class:`~ferwild.data.loader.BatchTransform`, on the GPU when there is one);
inference on aligned crops applies the same steps in numpy
(:meth:`Preprocessing.pixel_values`), so a classifier that needs no torch (ONNX Runtime) runs
without importing it.

The numpy path gives the same numbers as ``BatchTransform(train=False)`` to float32 rounding
(tested to 1e-5; measured at most 5e-7 on normalised values, up- and downscaling, grey and
colour): the same scaling and normalisation, then the same bilinear resize, written out as the
two separable weight matrices that torch's ``F.interpolate(mode="bilinear",
align_corners=False)`` computes, with its antialiasing filter (PIL's triangle filter) when
the image shrinks.

This module imports numpy only; :meth:`Preprocessing.normalize` (for torch tensors) imports
torch when it is called.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["Preprocessing", "bilinear_weights"]


def _triple(values: Any, what: str) -> tuple[float, float, float]:
    vals = tuple(float(v) for v in values)
    if len(vals) == 1:
        vals = vals * 3
    if len(vals) != 3:
        raise ValueError(f"{what} needs 3 values (one per RGB channel), got {len(vals)}")
    return vals  # type: ignore[return-value]


@dataclass(frozen=True)
class Preprocessing:
    """What a model expects: square ``input_size`` and per-channel ``mean``/``std``.

    Inputs are 3-channel floats in [0, 1] before normalisation; grey images are replicated
    to 3 channels by the data pipeline.
    """

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self) -> None:
        if isinstance(self.input_size, bool) or int(self.input_size) != self.input_size or self.input_size <= 0:
            raise ValueError(f"input_size must be a positive integer, got {self.input_size!r}")
        object.__setattr__(self, "input_size", int(self.input_size))
        object.__setattr__(self, "mean", _triple(self.mean, "mean"))
        std = _triple(self.std, "std")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {std}")
        object.__setattr__(self, "std", std)

    def to_dict(self) -> dict:
        """``{"input_size", "mean", "std"}`` with lists, as checkpoints and ONNX metadata store it."""
        return {"input_size": self.input_size, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        """The inverse of :meth:`to_dict` (values are validated)."""
        return cls(input_size=int(d["input_size"]), mean=tuple(d["mean"]), std=tuple(d["std"]))

    def normalize(self, pixels: "torch.Tensor") -> "torch.Tensor":
        """``(pixels - mean) / std`` over the channel axis of ``(N, 3, H, W)`` or ``(3, H, W)`` floats in [0, 1]."""
        import torch

        shape = (3, 1, 1)
        mean = torch.tensor(self.mean, dtype=pixels.dtype, device=pixels.device).view(shape)
        std = torch.tensor(self.std, dtype=pixels.dtype, device=pixels.device).view(shape)
        return (pixels - mean) / std

    def normalize_array(self, pixels: np.ndarray) -> np.ndarray:
        """:meth:`normalize` for numpy: float32 ``(pixels - mean) / std`` over the channel axis of
        ``(N, 3, H, W)`` or ``(3, H, W)`` floats in [0, 1]."""
        mean = np.asarray(self.mean, dtype=np.float32).reshape(3, 1, 1)
        std = np.asarray(self.std, dtype=np.float32).reshape(3, 1, 1)
        return (np.asarray(pixels, dtype=np.float32) - mean) / std

    def pixel_values(self, images: np.ndarray) -> np.ndarray:
        """A uint8 ``(N, H, W, C)`` batch (``C`` 1 or 3) as the model's float32 ``(N, 3, S, S)`` input.

        The numpy twin of ``BatchTransform(input_size, mean, std)`` without augmentation, step
        for step: scale to [0, 1], replicate grey to 3 channels, normalise, resize bilinearly
        (antialiased when the image is larger than ``input_size``).
        """
        arr = np.asarray(images)
        if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[3] not in (1, 3):
            raise ValueError(f"expected a uint8 (N, H, W, 1 or 3) batch, got {arr.dtype} {arr.shape}")
        x = arr.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)
        if x.shape[1] == 1:
            x = np.repeat(x, 3, axis=1)
        # Normalised before resizing, as BatchTransform does (bilinear weights sum to 1, so the
        # two commute; keeping the order keeps the float32 rounding the same too).
        x = self.normalize_array(x)
        height, width = x.shape[2:]
        size = self.input_size
        if (height, width) != (size, size):
            antialias = width > size  # BatchTransform's rule, decided by the width
            x = _resize(x, bilinear_weights(height, size, antialias=antialias),
                        bilinear_weights(width, size, antialias=antialias))
        return np.ascontiguousarray(x, dtype=np.float32)


def _resize(x: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``rows @ image @ cols.T`` for every image and channel of ``(N, C, H, W)``, as two large
    matrix products (one per axis) rather than N*C small ones: about twice as fast."""
    n, c, height, width = x.shape
    out_h, out_w = rows.shape[0], cols.shape[0]
    y = (x.reshape(-1, width) @ cols.T).reshape(n * c, height, out_w)
    y = rows @ y.transpose(1, 0, 2).reshape(height, -1)
    return y.reshape(out_h, n, c, out_w).transpose(1, 2, 0, 3)


@lru_cache(maxsize=32)
def bilinear_weights(in_size: int, out_size: int, *, antialias: bool) -> np.ndarray:
    """The ``(out_size, in_size)`` float32 matrix of torch's 1-D bilinear resize (``align_corners=False``).

    Without ``antialias`` each output samples the two nearest inputs (torch's
    ``upsample_bilinear2d``); with it, every input under a triangle filter stretched by the
    scale factor contributes (torch's ``_upsample_bilinear2d_aa``, PIL's ``BILINEAR`` resample),
    which is what keeps a shrunk image from aliasing. The matrix is cached (read-only).

    Positions and weights are computed in float32 where torch computes them in float32 for a
    float32 image: in float64 the weights differ in the 7th digit and, summed over a resize,
    reach 1e-5 on normalised pixels.
    """
    f32 = np.float32
    scale = f32(in_size) / f32(out_size)
    weights = np.zeros((out_size, in_size), dtype=np.float32)
    if not antialias:
        for i in range(out_size):
            src = max(f32(float(scale) * (i + 0.5) - 0.5), f32(0))
            lo = min(int(np.floor(src)), in_size - 1)
            hi = lo + 1 if lo < in_size - 1 else lo
            frac = min(max(f32(src - f32(lo)), f32(0)), f32(1))
            weights[i, lo] += f32(1) - frac
            weights[i, hi] += frac
        weights.flags.writeable = False
        return weights
    support = scale if scale >= 1.0 else f32(1)
    inv_scale = f32(1.0 / float(scale)) if scale >= 1.0 else f32(1)
    for i in range(out_size):
        center = f32(float(scale) * (i + 0.5))
        first = max(int(float(center - support) + 0.5), 0)
        last = min(int(float(center + support) + 0.5), in_size)
        taps = np.arange(first, last, dtype=np.float32)
        x = ((taps - center).astype(np.float64) + 0.5) * float(inv_scale)
        w = np.abs(x.astype(np.float32))
        w = np.where(w < 1, f32(1) - w, f32(0)).astype(np.float32)
        total = f32(0)
        for v in w:  # summed in order, in float32, as torch does
            total = f32(total + v)
        weights[i, first:last] = w / total if total != 0 else w
    weights.flags.writeable = False
    return weights
