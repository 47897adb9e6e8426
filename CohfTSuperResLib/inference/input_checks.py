"""The one check of the volumes a super-resolution gets, before any model is loaded (no torch needed): each
problem fails with a specific InputError.

The command line, the API (``inference.super_resolve``) and the 3D Slicer module all call
``check_inputs``; the Slicer module calls it in Slicer's own process, which never imports torch
(the network runs in a child process), so this module and what it imports are torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from CohfTSuperResLib.errors import InputError
from CohfTSuperResLib.inference.geometry import (
    Grid,
    acquisition_axis,
    check_coverage,
    check_direction,
    thin_slices_per_thick_slice,
)
from CohfTSuperResLib.imageio.normalize import robust_scale
from CohfTSuperResLib.options import (
    MODES,
    THROUGH_PLANE_FACTORS,
    check_choice,
    check_scale,
    check_slice_axis,
    check_slice_spacing,
)

COVERAGE_WARNING = 0.999  # warn when less of the T2 than this lies inside the T1
COMPLEX_PIXELS = {sitk.sitkComplexFloat32, sitk.sitkComplexFloat64}
INTEGER_PIXELS = {sitk.sitkUInt8, sitk.sitkInt8, sitk.sitkUInt16, sitk.sitkInt16, sitk.sitkUInt32, sitk.sitkInt32,
                  sitk.sitkUInt64, sitk.sitkInt64}
NEGATIVE_LEVEL = 0.01  # a voxel below -NEGATIVE_LEVEL x the robust scale counts as clearly negative
NEGATIVE_FRACTION = 0.01  # ... and more than this fraction of such voxels is not an MR magnitude image
LABEL_MAP_VALUES = 32  # a volume with at most this many distinct values is a label map or a mask, not an image
LABEL_SAMPLE = 1 << 20  # voxels looked at first (evenly strided) before all are counted
LARGEST_INTENSITY = 1e30  # larger magnitudes would overflow float32 on the way through the network
NIFTI_LABEL_INTENT = "1002"  # NIFTI_INTENT_LABEL


@dataclass(frozen=True)
class InputCheck:
    """The outcome of ``check_inputs``: the volumes as the engine will use them, and what to tell the user.

    slice_axis: the acquisition axis used (given, or geometry.acquisition_axis); through-plane, the thick axis.
    scale: the upsampling factor: in-plane, the scale; through-plane, the thin slices per thick slice.
    notes: one-line decisions taken for the caller (the axis picked, the thin spacing). warnings: one-line
    concerns (partial T1 coverage). t1_coverage: fraction of the T2 inside the T1 (None without T1).
    """

    t2: sitk.Image
    t1: sitk.Image | None
    scale: int
    slice_axis: int
    single_slice: bool
    t2_voxels: np.ndarray
    t2_scale: float
    t1_scale: float | None
    t1_coverage: float | None
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    mode: str = "in-plane"


def check_inputs(t2: sitk.Image, t1: sitk.Image | None, scale: int, slice_axis: int | None = None,
                 mode: str = "in-plane", slice_spacing: float | None = None) -> InputCheck:
    """Every check of the volumes before any model is loaded; InputError with the reason when they can not be used.

    slice_axis None picks the acquisition axis from the spacing (geometry.acquisition_axis: the axis whose spacing
    differs from the two others, the thickest when all differ), with a note when that is not axis 2.
    Checks: scale; 3-D scalar grey-level volumes (or one 2-D slice with a 2-D T1), finite,
    not constant, not a label map, not mostly negative, within float32's range; an orthonormal T2
    direction; a T1 that overlaps the T2 in physical space.
    mode 'through-plane' (`scale` unused): a 3-D T2 whose thick axis (slice_axis, or the acquisition axis) has at
    least 2 thin slices of `slice_spacing` per slice (``through_plane_factor``).
    """
    check_choice(mode, MODES, "mode")
    scale = check_scale(scale)
    if t1 is not None and t1 is t2:
        raise InputError("the T1 and the T2 are the same image; the guide is the registered HR T1")
    single_slice = isinstance(t2, sitk.Image) and t2.GetDimension() == 2
    if single_slice and mode == "through-plane":
        raise InputError("a single 2-D slice has no slices to restore between: through-plane super-resolution needs "
                         "the 3-D thick-slice T2")
    if slice_axis is not None:
        slice_axis = check_slice_axis(slice_axis)
    if single_slice:
        if t1 is not None and (not isinstance(t1, sitk.Image) or t1.GetDimension() != 2):
            raise InputError("the T2 is a single 2-D slice, so the T1 must be the matching 2-D slice too")
        if slice_axis not in (None, 2):
            raise InputError("a single 2-D slice has no slice axis other than 2")
        t2, t1 = as_volume(t2), None if t1 is None else as_volume(t1)
    elif isinstance(t1, sitk.Image) and t1.GetDimension() == 2 and isinstance(t2, sitk.Image) \
            and t2.GetDimension() == 3:
        raise InputError("the T2 is a 3-D volume, so the T1 must be the registered 3-D T1 volume, not a 2-D slice")
    t2_voxels = volume_array(t2, "T2")
    check_direction(t2, "T2")
    notes = []
    if mode == "through-plane":
        slice_axis = acquisition_axis(t2.GetSpacing()) if slice_axis is None else slice_axis
        scale, note = through_plane_factor(t2.GetSpacing(), slice_axis, check_slice_spacing(slice_spacing))
        notes.append(note)
    elif slice_axis is None:
        slice_axis = acquisition_axis(t2.GetSpacing())
        if slice_axis != 2:
            spacing = t2.GetSpacing()
            notes.append(f"the T2's slice axis is voxel axis {slice_axis} ({spacing[slice_axis]:g} mm, the other axes "
                         f"{', '.join(f'{d:g}' for k, d in enumerate(spacing) if k != slice_axis)} mm): "
                         "super-resolving the slices across it (set the slice axis to override)")
    t2_scale = _robust_scale(t2_voxels, "T2")
    t1_scale = fraction = None
    warned = []
    if t1 is not None:
        t1_scale = _robust_scale(volume_array(t1, "T1"), "T1")
        fraction = check_coverage(t1, Grid.of(t2))
        if fraction < COVERAGE_WARNING:
            warned.append(f"the T1 covers only {100 * fraction:.1f}% of the T2; the network sees a zero T1 elsewhere")
    return InputCheck(t2, t1, scale, slice_axis, single_slice, t2_voxels, t2_scale, t1_scale, fraction,
                      tuple(notes), tuple(warned), mode)


def through_plane_factor(spacing: tuple[float, ...], thick_axis: int, slice_spacing: float | None) -> tuple[int, str]:
    """The thin slices per thick slice of a through-plane run, and the note that says so.

    From `slice_spacing` (rounded so the count is whole; InputError outside THROUGH_PLANE_FACTORS, which the models
    were trained for), or by default from the finest in-plane spacing, limited to the largest trained factor.
    """
    thick = spacing[thick_axis]
    in_plane = min(d for axis, d in enumerate(spacing) if axis != thick_axis)
    largest = THROUGH_PLANE_FACTORS[-1]
    if slice_spacing is not None:
        factor = thin_slices_per_thick_slice(thick, slice_spacing)
        if factor > largest:
            raise InputError(f"{factor} thin slices of {slice_spacing:g} mm per {thick:g} mm slice: the through-plane "
                             f"models restore at most {largest}; ask for a slice spacing of at least "
                             f"{thick / (largest + 0.5):.2f} mm")
        chosen = f"{slice_spacing:g} mm asked"
    else:
        factor = thin_slices_per_thick_slice(thick, in_plane)
        chosen = f"the in-plane spacing {in_plane:g} mm"
        if factor > largest:
            factor, chosen = largest, "the most the models were trained for; set the slice spacing to choose"
    return factor, (f"through-plane along voxel axis {thick_axis} ({thick:g} mm slices): {factor} thin slices of "
                    f"{thick / factor:g} mm per slice ({chosen})")


def _robust_scale(voxels: np.ndarray, role: str) -> float:
    try:
        return robust_scale(voxels)
    except ValueError as error:
        raise InputError(f"the {role} can not be normalised: {error}") from error


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
    """InputError for a label map (segmentation) or a mask: NIfTI label intent, Slicer segmentation metadata, or a
    volume with at most LABEL_MAP_VALUES distinct values, all whole numbers (integer voxels, or labels stored as
    floats). Super-resolving labels as intensities gives nonsense."""
    keys = set(image.GetMetaDataKeys())
    labelled = (image.HasMetaDataKey("intent_code") and image.GetMetaData("intent_code").strip() == NIFTI_LABEL_INTENT
                or any(key.startswith("Segment0_") for key in keys))
    values = None
    if not labelled:  # labels and masks stored as floats too: whole numbers, few of them
        sample = voxels.ravel()[:: max(1, voxels.size // LABEL_SAMPLE)]  # an image shows it has many values here
        if np.unique(sample).size <= LABEL_MAP_VALUES:
            values = np.unique(voxels)
            labelled = values.size <= LABEL_MAP_VALUES and (image.GetPixelID() in INTEGER_PIXELS
                                                            or bool(np.all(values == np.round(values))))
    if labelled:
        kind = " integer" if image.GetPixelID() in INTEGER_PIXELS else ""
        found = "" if values is None else f" ({values.size} distinct{kind} values)"
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
