"""Checks of the volumes and options given to the inference engine, each failing with a specific InputError."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from CohfTSuperResLib.errors import InputError
from CohfTSuperResLib.options import SCALES

COMPLEX_PIXELS = {sitk.sitkComplexFloat32, sitk.sitkComplexFloat64}
INTEGER_PIXELS = {sitk.sitkUInt8, sitk.sitkInt8, sitk.sitkUInt16, sitk.sitkInt16, sitk.sitkUInt32, sitk.sitkInt32,
                  sitk.sitkUInt64, sitk.sitkInt64}
NEGATIVE_LEVEL = 0.01  # a voxel below -NEGATIVE_LEVEL x the robust scale counts as clearly negative
NEGATIVE_FRACTION = 0.01  # ... and more than this fraction of such voxels is not an MR magnitude image
LABEL_MAP_VALUES = 32  # an integer volume with at most this many distinct values is a label map, not an image
LARGEST_INTENSITY = 1e30  # larger magnitudes would overflow float32 on the way through the network
NIFTI_LABEL_INTENT = "1002"  # NIFTI_INTENT_LABEL


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

    Rejects non-images, images that are not 3-D, vector / RGB / complex pixels,
    empty volumes, NaN or Inf voxels, constant volumes and volumes with many
    clearly negative voxels (CT, phase or difference images). The image is not modified.
    """
    if not isinstance(image, sitk.Image):
        raise InputError(f"{role} must be a SimpleITK image, got {type(image).__name__}")
    if image.GetDimension() != 3:
        raise InputError(
            f"{role} must be a 3-D volume or a single 2-D slice, got a {image.GetDimension()}-D image "
            "(a 4-D series holds several volumes: pick one)"
        )
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
        first = tuple(int(i) for i in reversed(np.argwhere(~finite)[0]))
        raise InputError(f"{role} has {int(finite.size - finite.sum()):,} NaN or Inf voxel(s) (the first at voxel "
                         f"index {first}); fix or mask them first")
    low, high = voxels.min(), voxels.max()
    if low == high:
        raise InputError(f"{role} is constant (every voxel is {low}); there is nothing to super-resolve")
    if max(abs(float(low)), abs(float(high))) > LARGEST_INTENSITY:
        raise InputError(f"{role} has intensities up to {max(abs(float(low)), abs(float(high))):.3g}, beyond what "
                         "float32 processing can carry without overflow; rescale the volume first")
    check_not_label_map(image, voxels, role)
    voxels = voxels.astype(np.float32)
    check_magnitude(voxels, role)
    return voxels


def check_not_label_map(image: sitk.Image, voxels: np.ndarray, role: str) -> None:
    """InputError for a label map (segmentation): NIfTI label intent, Slicer segmentation metadata, or an integer
    volume with at most LABEL_MAP_VALUES distinct values. Super-resolving labels as intensities gives nonsense."""
    keys = set(image.GetMetaDataKeys())
    labelled = (image.HasMetaDataKey("intent_code") and image.GetMetaData("intent_code").strip() == NIFTI_LABEL_INTENT
                or any(key.startswith("Segment0_") for key in keys))
    values = None
    if not labelled and image.GetPixelID() in INTEGER_PIXELS:
        values = np.unique(voxels)
        labelled = values.size <= LABEL_MAP_VALUES
    if labelled:
        found = "" if values is None else f" ({values.size} distinct integer values)"
        raise InputError(f"{role} is a label map{found}, not an MR image: labels can not be super-resolved as "
                         "intensities; give the grey-level volume")


def check_magnitude(voxels: np.ndarray, role: str) -> None:
    """InputError when more than 1% of the voxels are clearly negative: MR magnitude images are >= 0.

    Small negative values (interpolation or filtering ringing) are accepted.
    """
    positive = voxels[voxels > 0]
    reference = float(np.percentile(positive, 99.5)) if positive.size else float(np.abs(voxels).max())
    negative = float(np.mean(voxels < -NEGATIVE_LEVEL * reference))
    if negative > NEGATIVE_FRACTION:
        raise InputError(
            f"{role} has {100 * negative:.1f}% clearly negative voxels (minimum {float(voxels.min()):g}); "
            "Cohf-T works on MR magnitude images (>= 0): is this a CT, phase or difference image?"
        )


def as_volume(image: sitk.Image) -> sitk.Image:
    """A 2-D slice as a one-slice 3-D volume (same in-plane geometry); other images unchanged."""
    if isinstance(image, sitk.Image) and image.GetDimension() == 2:
        return sitk.JoinSeries(image)
    return image
