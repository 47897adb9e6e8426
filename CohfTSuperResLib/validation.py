"""Checks of the volumes and options given to the inference engine, each failing with a specific InputError."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .model import SCALES

COMPLEX_PIXELS = {sitk.sitkComplexFloat32, sitk.sitkComplexFloat64}


def check_scale(scale: int) -> int:
    """The scale as an int if the network supports it (x2, x3, x4)."""
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or int(scale) not in SCALES:
        raise InputError(f"scale must be one of {', '.join(f'x{s}' for s in SCALES)}, got {scale!r}")
    return int(scale)


def check_choice(value: str, choices: tuple[str, ...], what: str) -> str:
    """value if it is one of choices, else an InputError listing them."""
    if value not in choices:
        raise InputError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")
    return value


def volume_array(image: sitk.Image, role: str) -> np.ndarray:
    """A float32 copy of a scalar 3-D volume's voxels, (k, j, i) order; InputError if it cannot be super-resolved.

    Rejects non-images, 2-D or 4-D images, vector / RGB / complex pixels, empty
    volumes, NaN or Inf voxels and constant volumes. The image is not modified.
    """
    if not isinstance(image, sitk.Image):
        raise InputError(f"{role} must be a SimpleITK image, got {type(image).__name__}")
    if image.GetDimension() != 3:
        raise InputError(f"{role} must be a 3-D volume, got a {image.GetDimension()}-D image")
    if image.GetNumberOfComponentsPerPixel() != 1 or image.GetPixelID() in COMPLEX_PIXELS:
        raise InputError(
            f"{role} must have scalar voxels, got {image.GetPixelIDTypeAsString()} "
            f"with {image.GetNumberOfComponentsPerPixel()} component(s); convert it to a grey-level volume"
        )
    if 0 in image.GetSize():
        raise InputError(f"{role} is empty (size {image.GetSize()})")
    voxels = sitk.GetArrayViewFromImage(image)
    finite = np.isfinite(voxels)
    if not finite.all():
        raise InputError(f"{role} has {int(finite.size - finite.sum())} NaN or Inf voxel(s); fix or mask them first")
    low, high = voxels.min(), voxels.max()
    if low == high:
        raise InputError(f"{role} is constant (every voxel is {low}); there is nothing to super-resolve")
    return voxels.astype(np.float32)
