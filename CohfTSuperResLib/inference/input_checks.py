"""The one check of the volumes a super-resolution gets, before any model is loaded (no torch needed).

The command line, the API (``inference.super_resolve``) and the 3D Slicer module all call
``check_inputs``; the Slicer module calls it in Slicer's own process, which never imports torch
(the network runs in a child process), so this module and what it imports are torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from CohfTSuperResLib.errors import InputError
from CohfTSuperResLib.inference.geometry import Grid, acquisition_axis, check_coverage, check_direction, check_slice_axis
from CohfTSuperResLib.imageio.normalize import robust_scale
from CohfTSuperResLib.inference.validation import as_volume, check_scale, volume_array

COVERAGE_WARNING = 0.999  # warn when less of the T2 than this lies inside the T1


@dataclass(frozen=True)
class InputCheck:
    """The outcome of ``check_inputs``: the volumes as the engine will use them, and what to tell the user.

    slice_axis: the acquisition axis used (given, or the thickest voxel axis). notes: one-line
    decisions taken for the caller (the axis picked). warnings: one-line concerns (partial T1
    coverage). t1_coverage: fraction of the T2 inside the T1 (None without T1).
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


def check_inputs(t2: sitk.Image, t1: sitk.Image | None, scale: int, slice_axis: int | None = None) -> InputCheck:
    """Every check of the volumes before any model is loaded; InputError with the reason when they can not be used.

    slice_axis None picks the acquisition axis: the thickest voxel axis (2 on ties), with a note when that is
    not axis 2. Checks: scale; 3-D scalar grey-level volumes (or one 2-D slice with a 2-D T1), finite,
    not constant, not a label map, not mostly negative, within float32's range; an orthonormal T2
    direction; a T1 that overlaps the T2 in physical space.
    """
    scale = check_scale(scale)
    if t1 is not None and t1 is t2:
        raise InputError("the T1 and the T2 are the same image; the guide is the registered HR T1")
    single_slice = isinstance(t2, sitk.Image) and t2.GetDimension() == 2
    if slice_axis is not None:
        slice_axis = check_slice_axis(slice_axis)
    if single_slice:
        if t1 is not None and (not isinstance(t1, sitk.Image) or t1.GetDimension() != 2):
            raise InputError("the T2 is a single 2-D slice, so the T1 must be the matching 2-D slice too")
        if slice_axis not in (None, 2):
            raise InputError("a single 2-D slice has no slice axis other than 2")
        t2, t1 = as_volume(t2), None if t1 is None else as_volume(t1)
    t2_voxels = volume_array(t2, "T2")
    check_direction(t2, "T2")
    notes = []
    if slice_axis is None:
        slice_axis = acquisition_axis(t2.GetSpacing())
        if slice_axis != 2:
            spacing = t2.GetSpacing()
            notes.append(f"the T2's thickest voxel axis is {slice_axis} ({spacing[slice_axis]:g} mm against "
                         f"{min(spacing):g} mm): super-resolving the slices across it (set the slice axis to override)")
    t2_scale = _robust_scale(t2_voxels, "T2")
    t1_scale = fraction = None
    warned = []
    if t1 is not None:
        t1_scale = _robust_scale(volume_array(t1, "T1"), "T1")
        fraction = check_coverage(t1, Grid.of(t2))
        if fraction < COVERAGE_WARNING:
            warned.append(f"the T1 covers only {100 * fraction:.1f}% of the T2; the network sees a zero T1 elsewhere")
    return InputCheck(t2, t1, scale, slice_axis, single_slice, t2_voxels, t2_scale, t1_scale, fraction,
                      tuple(notes), tuple(warned))


def _robust_scale(voxels: np.ndarray, role: str) -> float:
    try:
        return robust_scale(voxels)
    except ValueError as error:
        raise InputError(f"the {role} can not be normalised: {error}") from error
