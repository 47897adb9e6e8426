"""Through-plane super-resolution: thin slices along the thick axis of a thick-slice T2, guided by a 3-D T1.

The clinical T2 is often acquired in 2-D with fine in-plane pixels and thick slices. Here the in-plane grid is
kept and each thick slice becomes n thin slices that tile its extent (geometry.thin_slice_grid: thin slice j of
thick slice k centred at c_k + (j - (n-1)/2) * spacing / n), n from the checked inputs (input_checks.
through_plane_factor):

1. the volume is viewed with its thick axis as voxel axis 2 (a permutation of axes: the same physical grid);
2. the normalised thick slices are interpolated onto the thin grid along that axis (model/upsample.py
   upsample_slices_cubic: Keys cubic, the grid the network was trained on);
3. the through-plane network (scale 1; the shipped network trained for the factor it runs at, else the one of every
   factor: ``network_factor``, weights.registry.find_model) restores the planes that contain the thick
   axis, of both families: the planes across voxel axis 0 and those across voxel axis 1, each run as the in-plane
   slices are (slice_run.SliceRun: content box, batches, tiles; the T1 resampled onto the thin grid); the two
   restorations are averaged;
4. the thin slices are made consistent with the thick slices under the run's slice profile (slice_consistency.py;
   unless options.slice_profile is 'off');
5. back to the input's axis order and T2 units.

Two thin slices per thick slice (n = 2) are made finer first: the steps above run for 4 thin slices, and each two
neighbouring ones are averaged into one thin slice of the 2 asked for (``supersampling``): the one network, which is
not told n, restores n = 2 too sharply, and a thin slice is the average of the finer ones it covers (the choice and
its alternatives measured: docs/benchmarks.md, "Other slice thicknesses").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import SimpleITK as sitk
import torch

from CohfTSuperResLib.inference.backends import Runner
from CohfTSuperResLib.inference.geometry import Grid, thin_slice_grid
from CohfTSuperResLib.inference.input_checks import InputCheck
from CohfTSuperResLib.inference.slice_consistency import consistent_thin_slices
from CohfTSuperResLib.inference.slice_run import SliceRun
from CohfTSuperResLib.model.upsample import upsample_slices_cubic
from CohfTSuperResLib.options import THROUGH_PLANE_SCALE, RunOptions

THICK_AXIS = 2  # the voxel axis the thick axis is moved to
PLANE_FAMILIES = (0, 1)  # the voxel axes the two families of planes are cut across
SUPERSAMPLED_BELOW = 3  # factors below this are restored at twice the factor and averaged in pairs


def supersampling(factor: int) -> int:
    """How many finer thin slices are restored and averaged into each thin slice at `factor` (module docstring)."""
    return 2 if factor < SUPERSAMPLED_BELOW else 1


def network_factor(factor: int) -> int:
    """The factor the through-plane network runs at for `factor` thin slices per thick slice (``supersampling``)."""
    return supersampling(factor) * factor


def thick_axis_last(thick_axis: int) -> tuple[list[int], list[int]]:
    """The axis order that moves `thick_axis` to voxel axis 2 (the others keep their order), and its inverse."""
    order = [axis for axis in range(3) if axis != thick_axis] + [thick_axis]
    return order, [order.index(axis) for axis in range(3)]


def interpolated_thin_slices(voxels: np.ndarray, factor: int) -> np.ndarray:
    """(K, J, I) voxels of thick slices along numpy axis 0 (voxel axis 2) -> (factor*K, J, I) thin slices, float32."""
    slices, rows, cols = voxels.shape
    thick = torch.from_numpy(np.ascontiguousarray(voxels, dtype=np.float32)).view(1, 1, slices, rows * cols)
    return upsample_slices_cubic(thick, factor).view(factor * slices, rows, cols).numpy()


def family_sizes(checked: InputCheck) -> list[int]:
    """The planes of each family a through-plane run restores (its progress counts their sum)."""
    order, _ = thick_axis_last(checked.slice_axis)
    return [checked.t2.GetSize()[order[axis]] for axis in PLANE_FAMILIES]


def through_plane_volume(checked: InputCheck, runner: Runner, options: RunOptions, device: torch.device,
                         progress: Callable[[int, int], None] | None,
                         cancel: Callable[[], bool] | None) -> sitk.Image:
    """The thin-slice T2 (float32, T2 units) of a checked thick-slice volume, on the thin grid of its own axes."""
    order, inverse = thick_axis_last(checked.slice_axis)
    t2 = sitk.PermuteAxes(checked.t2, order)
    finer = supersampling(checked.scale)
    thin_grid = thin_slice_grid(Grid.of(t2), network_factor(checked.scale), THICK_AXIS)
    thick = np.transpose(checked.t2_voxels, [2 - axis for axis in reversed(order)])
    voxels = interpolated_thin_slices(thick, network_factor(checked.scale))
    thin = thin_grid.image_from_array(voxels)
    counts = family_sizes(checked)
    report = progress or (lambda done, total: None)
    restored = np.zeros_like(voxels)
    for family, axis in enumerate(PLANE_FAMILIES):
        before = sum(counts[:family])

        def family_progress(done: int, _total: int, before: int = before) -> None:
            report(before + done, sum(counts))

        restored += restored_planes(checked, thin, axis, runner, options, device, family_progress, cancel) / len(
            PLANE_FAMILIES)
    averaged = restored.reshape(restored.shape[0] // finer, finer, *restored.shape[1:]).mean(axis=1)
    if options.slice_profile != "off":
        averaged = consistent_thin_slices(averaged, thick, options.slice_profile, options.slice_gap)
    output_grid = thin_slice_grid(Grid.of(t2), checked.scale, THICK_AXIS)
    return sitk.PermuteAxes(output_grid.image_from_array(np.ascontiguousarray(averaged, dtype=np.float32)), inverse)


def restored_planes(checked: InputCheck, thin: sitk.Image, axis: int, runner: Runner, options: RunOptions,
                    device: torch.device, progress: Callable[[int, int], None] | None,
                    cancel: Callable[[], bool] | None) -> np.ndarray:
    """The through-plane network's restoration (T2 units, SimpleITK order) of every plane across voxel `axis` of
    `thin` (thick slices interpolated onto thin ones along voxel axis 2, T2 units), with the checked T1 if any."""
    planes = dataclasses.replace(checked, t2=thin, t2_voxels=sitk.GetArrayViewFromImage(thin),
                                 scale=THROUGH_PLANE_SCALE, slice_axis=axis, single_slice=False)
    return SliceRun(runner, planes, Grid.of(thin), options, device, progress, cancel).volume()
