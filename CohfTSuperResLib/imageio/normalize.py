"""Robust per-volume intensity normalisation, shared by training and inference.

A volume is divided by one scale, the 99.5th percentile of its strictly
positive finite voxels, so that tissue lies in about [0, 1] whatever the
scanner units; the output is multiplied back by the same scale. Division by a
positive scale keeps background (0) at exactly 0 and keeps the sign of every
voxel. If the volume has fewer than ``MIN_POSITIVE_VOXELS`` positive voxels the
percentile of |x| over all finite voxels is used instead.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

if TYPE_CHECKING:
    import torch

ArrayT = TypeVar("ArrayT", np.ndarray, "torch.Tensor")

PERCENTILE = 99.5
MIN_POSITIVE_VOXELS = 100


def robust_scale(array: np.ndarray | torch.Tensor) -> float:
    """99.5th percentile of the strictly positive finite voxels (fallback: of |x|); ValueError if 0 or non-finite."""
    values = array.detach().cpu().numpy() if _is_tensor(array) else np.asarray(array)
    values = values.astype(np.float64, copy=False).ravel()
    finite = values[np.isfinite(values)]
    positive = finite[finite > 0]
    if positive.size >= MIN_POSITIVE_VOXELS:
        scale = float(np.percentile(positive, PERCENTILE))
    elif finite.size > 0:
        scale = float(np.percentile(np.abs(finite), PERCENTILE))
    else:
        scale = math.nan
    if not math.isfinite(scale) or scale <= 0:
        content = ("it has no finite voxels" if finite.size == 0 else
                   f"only {np.count_nonzero(finite)} of its {finite.size} voxels are not zero" if np.any(finite) else
                   "it is all zero")
        raise ValueError(f"cannot normalise intensities: the robust scale ({PERCENTILE}th percentile) is {scale}, "
                         f"because {content}; an MR image has signal in far more voxels")
    return scale


def _is_tensor(array: Any) -> bool:
    """True for a torch tensor, without importing torch (this module is used where torch is not installed)."""
    return type(array).__module__.startswith("torch")


def _check(scale: float) -> float:
    """Return scale as a float, raising ValueError unless it is positive and finite."""
    scale = float(scale)
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"intensity scale must be positive and finite, got {scale}")
    return scale


def normalize(array: ArrayT, scale: float) -> ArrayT:
    """array / scale as float32 (same type as the input; background 0 stays 0)."""
    scale = _check(scale)
    if _is_tensor(array):
        return array.float() / scale
    return (np.asarray(array, dtype=np.float32) / np.float32(scale)).astype(np.float32, copy=False)


def denormalize(array: ArrayT, scale: float) -> ArrayT:
    """array * scale as float32 (same type as the input); inverse of ``normalize``."""
    scale = _check(scale)
    if _is_tensor(array):
        return array.float() * scale
    return (np.asarray(array, dtype=np.float32) * np.float32(scale)).astype(np.float32, copy=False)
