"""Voxel grids of the super-resolution: the output grid, slabs of it, T1 resampling and T1 coverage.

DFT grid convention (see model/upsample.py / data/degradations.py): the LR sample j of an
in-plane axis sits at the HR sample s*j. The output grid therefore keeps the
LR origin and direction, divides the in-plane spacing by s and multiplies the
in-plane size by s; the slice axis (the acquisition axis, voxel axis 2 by
default) is left untouched.

Axis naming: SimpleITK's voxel axis a (0 = i, 1 = j, 2 = k) is numpy axis
2 - a of `sitk.GetArrayFromImage`. A "slice stack" is the array with the slice
axis moved first: (slices, rows, columns).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import SimpleITK as sitk

from CohfTSuperResLib.errors import InputError


@dataclass(frozen=True)
class Grid:
    """Geometry of a 3-D voxel grid in SimpleITK order (size and spacing per voxel axis i, j, k)."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image) -> Grid:
        """The grid an image lives on."""
        return cls(
            tuple(image.GetSize()), tuple(image.GetSpacing()), tuple(image.GetOrigin()), tuple(image.GetDirection())
        )

    def index_to_point(self, index: tuple[float, float, float]) -> np.ndarray:
        """Physical point of a (continuous) voxel index."""
        matrix = np.asarray(self.direction, dtype=np.float64).reshape(3, 3)
        return np.asarray(self.origin) + matrix @ (np.asarray(index, dtype=np.float64) * np.asarray(self.spacing))

    def image_from_array(self, array: np.ndarray) -> sitk.Image:
        """SimpleITK image on this grid from a numpy array of shape size[::-1]."""
        if tuple(array.shape) != tuple(reversed(self.size)):
            raise ValueError(f"array of shape {array.shape} does not fit grid of size {self.size}")
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image


ORTHONORMAL_TOLERANCE = 1e-4
SPACING_TIE = 1e-3  # relative: spacings closer than this count as equal


def acquisition_axis(spacing: tuple[float, ...]) -> int:
    """The voxel axis of the acquisition (the slice axis) from the voxel spacing.

    In-plane pixels are square in almost every MR acquisition, so the slice axis is the one whose spacing differs
    from the two others (a 2 x 2 x 1 mm volume, an LR made from 1 mm data, is sliced along its 1 mm axis); when all
    three differ, the thickest axis; when all three are equal, axis 2.
    """
    def same(a: float, b: float) -> bool:
        return abs(a - b) <= SPACING_TIE * max(a, b)

    for axis in (2, 1, 0):
        others = [spacing[k] for k in range(3) if k != axis]
        if same(*others) and not same(spacing[axis], others[0]):
            return axis
    if all(same(spacing[k], spacing[2]) for k in range(2)):
        return 2
    return int(np.argmax(spacing))


def check_direction(image: sitk.Image, role: str) -> None:
    """InputError when an image's direction matrix is not orthonormal (a shear or scaling hidden in it): its grid
    can not be written to NIfTI or NRRD as it is, and the output would land elsewhere."""
    matrix = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    deviation = float(np.abs(matrix.T @ matrix - np.eye(3)).max())
    if deviation > ORTHONORMAL_TOLERANCE:
        raise InputError(
            f"the {role}'s direction matrix is not orthonormal (it holds a shear or scaling; "
            f"deviation {deviation:.2g}): its output grid could not be stored faithfully; "
            "resample it onto an orthonormal grid first"
        )


def output_grid(lr: Grid, scale: int, slice_axis: int = 2) -> Grid:
    """Super-resolved grid: same origin and direction, in-plane size x scale and spacing / scale."""
    size = tuple(n if axis == slice_axis else n * scale for axis, n in enumerate(lr.size))
    spacing = tuple(d if axis == slice_axis else d / scale for axis, d in enumerate(lr.spacing))
    return replace(lr, size=size, spacing=spacing)


def thick_slice_grid(thin: Grid, factor: int, slice_axis: int) -> Grid:
    """The grid of a thick-slice volume made from thin slices: every `factor` thin slices (the length trimmed to
    a multiple) become one slice of `factor` times the spacing, centred on their middle."""
    size = tuple(n // factor if axis == slice_axis else n for axis, n in enumerate(thin.size))
    spacing = tuple(d * factor if axis == slice_axis else d for axis, d in enumerate(thin.spacing))
    shift = [0.0, 0.0, 0.0]
    shift[slice_axis] = (factor - 1) / 2.0
    return Grid(size, spacing, tuple(thin.index_to_point(tuple(shift))), thin.direction)


def thin_slice_grid(thick: Grid, factor: int, slice_axis: int) -> Grid:
    """The through-plane output grid: `factor` thin slices tiling each thick slice's extent, centred at
    c_k + (j - (factor - 1) / 2) * spacing / factor; the in-plane grid, the extent and the direction unchanged."""
    size = tuple(n * factor if axis == slice_axis else n for axis, n in enumerate(thick.size))
    spacing = tuple(d / factor if axis == slice_axis else d for axis, d in enumerate(thick.spacing))
    shift = [0.0, 0.0, 0.0]
    shift[slice_axis] = -(factor - 1) / (2.0 * factor)
    return Grid(size, spacing, tuple(thick.index_to_point(tuple(shift))), thick.direction)


def thin_slices_per_thick_slice(thick_mm: float, thin_mm: float) -> int:
    """How many thin slices of about `thin_mm` tile a thick slice of `thick_mm` (rounded half up); InputError when
    under 2 (the volume is not thick-sliced for that spacing)."""
    factor = int(math.floor(thick_mm / thin_mm + 0.5))
    if factor < 2:
        raise InputError(f"slices of {thick_mm:g} mm are not thick for a {thin_mm:g} mm target: through-plane "
                         f"super-resolution needs a slice spacing at least 1.5 times the target spacing")
    return factor


def slab(grid: Grid, start: int, stop: int, slice_axis: int) -> Grid:
    """The sub-grid of slices start .. stop-1 along the slice axis."""
    index = [0.0, 0.0, 0.0]
    index[slice_axis] = float(start)
    size = list(grid.size)
    size[slice_axis] = stop - start
    return replace(grid, size=tuple(size), origin=tuple(float(x) for x in grid.index_to_point(tuple(index))))


def to_slice_stack(array: np.ndarray, slice_axis: int) -> np.ndarray:
    """View of a SimpleITK-ordered array as (slices, rows, columns) along voxel axis slice_axis."""
    return np.moveaxis(array, 2 - slice_axis, 0)


def image_stack(image: sitk.Image, slice_axis: int) -> np.ndarray:
    """A float32 copy of an image's voxels as a (slices, rows, columns) stack along voxel axis slice_axis."""
    return np.ascontiguousarray(to_slice_stack(sitk.GetArrayFromImage(image), slice_axis), dtype=np.float32)


def from_slice_stack(stack: np.ndarray, slice_axis: int) -> np.ndarray:
    """Inverse of `to_slice_stack`: back to SimpleITK's (k, j, i) array order (a view)."""
    return np.moveaxis(stack, 0, 2 - slice_axis)


def translated(image: sitk.Image, millimetres: tuple[float, float, float]) -> sitk.Image:
    """The image moved by (x, y, z) millimetres along its voxel axes i, j, k (origin changed, voxels kept)."""
    moved = sitk.Image(image)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    moved.SetOrigin(tuple(np.asarray(image.GetOrigin()) + direction @ np.asarray(millimetres, dtype=float)))
    return moved


def strided_slices(image: sitk.Image, slice_axis: int, start: int, stop: int, step: int) -> sitk.Image:
    """Slices start, start + step, ... < stop of the image along its slice axis, as an image whose slice spacing is
    step times the image's (its geometry stays exact: each kept slice is where it was)."""
    index = [slice(None)] * 3
    index[slice_axis] = slice(start, stop, step)
    return image[tuple(index)]


def resample_to(image: sitk.Image, grid: Grid, interpolator: int = sitk.sitkLinear) -> np.ndarray:
    """float32 array of `image` sampled at the voxels of `grid` in physical space; 0 outside its extent."""
    resampler = sitk.ResampleImageFilter()
    resampler.SetSize([int(n) for n in grid.size])
    resampler.SetOutputSpacing(grid.spacing)
    resampler.SetOutputOrigin(grid.origin)
    resampler.SetOutputDirection(grid.direction)
    resampler.SetInterpolator(interpolator)
    resampler.SetDefaultPixelValue(0.0)
    resampler.SetOutputPixelType(sitk.sitkFloat32)
    return sitk.GetArrayFromImage(resampler.Execute(image))


def coverage(guide: sitk.Image, lr: Grid) -> float:
    """Fraction of the LR grid's voxels that fall inside the guide's extent.

    The LR samples are every s-th sample of the output grid (DFT convention),
    so this is also the output grid's coverage, sampled s-fold coarser in-plane.
    """
    inside = sitk.Image(guide.GetSize(), sitk.sitkUInt8) + 1
    inside.CopyInformation(guide)
    return float(resample_to(inside, lr, sitk.sitkNearestNeighbor).mean())


def check_coverage(guide: sitk.Image, lr: Grid) -> float:
    """Coverage of the LR grid by the guide; InputError when they do not overlap at all."""
    fraction = coverage(guide, lr)
    if fraction == 0.0:
        raise InputError(
            "the T1 does not overlap the T2 in physical space (0% of the T2 lies inside the T1); "
            "register the T1 to the T2 first, or check both images' origin and direction"
        )
    return fraction
