"""The guide self-check of the through-plane mode: does this T1 help restore this T2's thin slices?

Two zero-shot proxies, measured on the input, are summed:

- along the thick axis: each pair of neighbouring thick slices of the T2 is averaged into one slice twice as thick
  (``synthetic_volumes.thick_slice_volume``, box profile), the result is interpolated back onto the T2's own slice
  positions and restored by the through-plane networks with the T1 and without it (the T1 resampled onto the T2's
  grid), and both restorations are compared with the T2's thick slices, which are known: the PSNR difference. It
  runs on at most CHECK_PLANES planes of each family (the planes that contain the thick axis, across each in-plane
  axis), spread evenly over the tissue; the rows of the first and last proxy slice are not scored (their
  interpolation has a neighbour on one side only). It sees the T1's agreement at twice the slice thickness, so a
  shift of a millimetre or two along the thick axis barely moves it;
- in-plane: the reduced-input proxy of guide_check.py on the thick slices, which sees a shift across them at the
  fine in-plane scale, and a T1 whose slab content differs from the thick slices'.

The T1 counts as helping where the sum reaches THRESHOLD_DB. Some runs are not checked (``check_through_plane_guide``
returns None, ``unchecked_reason`` says why) and their T1 is declined: a T2 of fewer than MIN_THICK_SLICES thick
slices, which the proxies can not be measured on, and a run whose network runs at a factor of DECLINED_FACTORS, where
the shipped guided network gains too little from a registered T1 to be worth the risk of a misregistered one.
"""

from __future__ import annotations

import dataclasses
import time
import warnings

import numpy as np
import SimpleITK as sitk

from CohfTSuperResLib.data.synthetic_volumes import thick_slice_volume
from CohfTSuperResLib.evaluation.metrics import psnr
from CohfTSuperResLib.imageio.normalize import normalize
from CohfTSuperResLib.inference.backends import load_runner
from CohfTSuperResLib.inference.devices import resolve_device
from CohfTSuperResLib.inference.geometry import Grid, strided_slices, thin_slice_grid, to_slice_stack
from CohfTSuperResLib.inference.guide_check import (
    TISSUE_LEVEL,
    GuideVerdict,
    apparent_shift,
    evenly_spread,
    reduced_input_benefit,
)
from CohfTSuperResLib.inference.input_checks import InputCheck
from CohfTSuperResLib.inference.through_plane import (
    PLANE_FAMILIES,
    THICK_AXIS,
    interpolated_thin_slices,
    network_factor,
    restored_planes,
    thick_axis_last,
)
from CohfTSuperResLib.options import RunOptions

CHECK_FACTOR = 2  # pairs of thick slices merged into one
CHECK_PLANES = 16  # at most this many planes of each family
MIN_THICK_SLICES = 6  # the proxy needs at least this many thick slices (3 merged ones)
END_ROWS = CHECK_FACTOR  # thin rows of the first and of the last proxy slice, not scored
THRESHOLD_DB = 0.8  # the T1 is used where the summed proxy benefit reaches this (chosen: docs/benchmarks.md)
DECLINED_FACTORS = frozenset({3, 5})  # network factors whose T1 is declined unchecked (chosen: docs/benchmarks.md)


def unchecked_reason(checked: InputCheck) -> str | None:
    """Why the T1 of this through-plane run is declined without a check, or None where the check runs."""
    if checked.t2.GetSize()[checked.slice_axis] < MIN_THICK_SLICES:
        return (f"too few thick slices to check the T1 (at least {MIN_THICK_SLICES} are needed), so it can not be "
                "vouched for")
    factor = network_factor(checked.scale)
    if factor in DECLINED_FACTORS:
        return (f"the network that restores {factor} thin slices per thick slice gains too little from a registered "
                "T1 to risk a misregistered one, so the T1 is not used by default")
    return None


def check_through_plane_guide(checked: InputCheck, options: RunOptions) -> GuideVerdict | None:
    """The guide check of a through-plane run: ``measure_through_plane_guide``, or None where the run is not checked
    (``unchecked_reason``)."""
    return None if unchecked_reason(checked) is not None else measure_through_plane_guide(checked, options)


def measure_through_plane_guide(checked: InputCheck, options: RunOptions,
                                threshold_db: float = THRESHOLD_DB) -> GuideVerdict:
    """The summed proxy benefit of the checked T1 for the checked thick-slice T2 (of at least MIN_THICK_SLICES thick
    slices), with the run variant's shipped through-plane networks for CHECK_FACTOR and its x2 networks."""
    started = time.monotonic()
    order, _ = thick_axis_last(checked.slice_axis)
    t2 = sitk.PermuteAxes(sitk.Cast(checked.t2, sitk.sitkFloat32), order)
    proxy = thick_slice_volume(t2, CHECK_FACTOR, THICK_AXIS)
    grid = thin_slice_grid(Grid.of(proxy), CHECK_FACTOR, THICK_AXIS)
    thin = grid.image_from_array(interpolated_thin_slices(sitk.GetArrayFromImage(proxy), CHECK_FACTOR))
    truth = sitk.GetArrayFromImage(t2)[: grid.size[THICK_AXIS]]
    shipped = dataclasses.replace(options, model_path=None, backend="torch", precision="fp32")
    device = resolve_device(options.device)
    runners = {guide: load_runner(shipped, guide, factor=CHECK_FACTOR) for guide in (True, False)}
    restored: dict[bool, list[np.ndarray]] = {True: [], False: []}
    targets = []
    planes = 0
    for axis in PLANE_FAMILIES:
        tissue = (to_slice_stack(truth, axis) > TISSUE_LEVEL * checked.t2_scale).any(axis=(1, 2))
        start, stop, step = evenly_spread(tissue, CHECK_PLANES)
        sample = strided_slices(thin, axis, start, stop, step)
        planes += sample.GetSize()[axis]
        targets.append(_scored(to_slice_stack(truth, axis)[start:stop:step], checked.t2_scale))
        for guide, runner in runners.items():
            inputs = dataclasses.replace(checked, t1=checked.t1 if guide else None)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the run's own input check has said what there is to say
                voxels = restored_planes(inputs, sample, axis, runner, shipped, device, None, None)
            restored[guide].append(_scored(to_slice_stack(voxels, axis), checked.t2_scale))
    target = np.concatenate(targets, axis=1)
    along = (psnr(np.concatenate(restored[True], axis=1), target, 1.0)
             - psnr(np.concatenate(restored[False], axis=1), target, 1.0))
    in_plane, in_plane_slices = reduced_input_benefit(checked, options)
    benefit = along + in_plane
    helps = benefit >= threshold_db
    shift = None if helps else apparent_shift(checked)
    return GuideVerdict(float(benefit), bool(helps), threshold_db, planes + in_plane_slices, shift,
                        time.monotonic() - started, (("along_the_slices", float(along)), ("in_plane", float(in_plane))))


def _scored(stack: np.ndarray, t2_scale: float) -> np.ndarray:
    """The voxels scored of a (planes, thin rows, columns) stack, normalised: every row but END_ROWS at each end,
    as one (1, N) row."""
    return normalize(stack[:, END_ROWS:-END_ROWS], t2_scale).reshape(1, -1)
