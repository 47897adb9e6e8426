"""LR volumes made from HR ones, and the bicubic baseline, on the DFT grid (for SimpleITK volumes).

One implementation for everything that needs a known truth: ``cohft-sr evaluate``, the demo, the
benchmarks and the 3D Slicer self-test. ``lr_volume`` applies the paper's k-space protocol slice by
slice along the slice axis; the LR volume keeps the HR origin and direction, multiplies the in-plane
spacing by the scale and divides the in-plane size by it, so the SR output grid of the LR volume is
the HR grid. ``bicubic_volume`` is the Keys cubic upsampling (``upsample.upsample_cubic``) on that grid.

Through the slices: ``thick_slice_volume`` averages thin slices into thick ones under a slice profile
(``degradations.thick_slices``) on the thick grid (``geometry.thick_slice_grid``), whose through-plane output grid
(``geometry.thin_slice_grid``) is the thin grid again; ``slice_interpolation`` gives the cubic B-spline (and
linear) baselines on it.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch

from CohfTSuperResLib.data.degradations import degrade, thick_slices, trimmed_length
from CohfTSuperResLib.inference.geometry import (Grid, from_slice_stack, image_stack, output_grid,
                                                 thick_slice_grid, thin_slice_grid)
from CohfTSuperResLib.model.upsample import upsample_cubic


def trim_in_plane(image: sitk.Image, scale: int, slice_axis: int = 2) -> sitk.Image:
    """The image with its in-plane axes cut at the end to a multiple of scale (geometry kept)."""
    size = list(image.GetSize())
    keep = [n if axis == slice_axis else trimmed_length(n, scale) for axis, n in enumerate(size)]
    if keep == size:
        return image
    return sitk.RegionOfInterest(image, keep, [0, 0, 0])


def lr_volume(hr: sitk.Image, scale: int, slice_axis: int = 2) -> sitk.Image:
    """float32 LR volume of an HR volume by k-space truncation of each slice, on the DFT LR grid.

    The in-plane size of hr must be a multiple of scale (see ``trim_in_plane``).
    """
    stack = image_stack(hr, slice_axis)
    image = sitk.GetImageFromArray(np.ascontiguousarray(from_slice_stack(degrade(stack, scale), slice_axis)))
    image.SetOrigin(hr.GetOrigin())
    image.SetDirection(hr.GetDirection())
    image.SetSpacing(tuple(d if axis == slice_axis else d * scale for axis, d in enumerate(hr.GetSpacing())))
    return image


def bicubic_stack(lr_stack: np.ndarray, scale: int) -> np.ndarray:
    """Keys cubic upsampling on the DFT grid of an (N, h, w) stack: (N, s*h, s*w) float32."""
    tensor = torch.from_numpy(np.ascontiguousarray(lr_stack, dtype=np.float32))[:, None]
    with torch.no_grad():
        return upsample_cubic(tensor, scale)[:, 0].numpy()


def bicubic_volume(lr: sitk.Image, scale: int, slice_axis: int = 2) -> sitk.Image:
    """The bicubic baseline of an LR volume on its SR output grid."""
    stack = image_stack(lr, slice_axis)
    upsampled = np.ascontiguousarray(from_slice_stack(bicubic_stack(stack, scale), slice_axis))
    return output_grid(Grid.of(lr), scale, slice_axis).image_from_array(upsampled)


def thick_slice_volume(thin: sitk.Image, factor: int, slice_axis: int, profile: str = "box",
                       gap: float = 0.0) -> sitk.Image:
    """float32 thick-slice volume of a thin-slice one: every `factor` slices along slice_axis averaged under the
    slice profile, on ``thick_slice_grid`` (the slice count trimmed to a multiple of factor)."""
    stack = thick_slices(image_stack(thin, slice_axis), factor, profile, gap)
    return thick_slice_grid(Grid.of(thin), factor, slice_axis).image_from_array(
        np.ascontiguousarray(from_slice_stack(stack, slice_axis)))


def slice_interpolation(thick: sitk.Image, factor: int, slice_axis: int,
                        interpolator: int = sitk.sitkBSpline) -> sitk.Image:
    """A thick-slice volume interpolated along its slice axis onto the through-plane output grid: the cubic
    B-spline baseline by default (sitk.sitkLinear for linear). The end half-slices, outside the first and last
    slice centres, follow the interpolator's mirror boundary, and beyond it the nearest slice's value."""
    grid = thin_slice_grid(Grid.of(thick), factor, slice_axis)
    reference = grid.image_from_array(np.zeros(tuple(reversed(grid.size)), dtype=np.float32))
    return sitk.Resample(sitk.Cast(thick, sitk.sitkFloat32), reference, sitk.Transform(), interpolator, 0.0,
                         sitk.sitkFloat32, True)
