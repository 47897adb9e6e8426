"""The guide self-check: does this T1 help this T2? Measured on the input itself, before the run.

A zero-shot proxy of the T1's benefit: the LR T2 is reduced once more by 2 in-plane (the k-space truncation the
networks were trained on), super-resolved back x2 by the guide check's own x2 networks (a frozen pair registered
apart in models.json, role GUIDE_CHECK: THRESHOLD_DB was calibrated with these weights, and shipping better
super-resolution models must not move the check's decisions) with the T1 and without it (the T1 resampled
onto the LR T2's own grid, which is the proxy's output grid), and both results are compared with the LR T2, which is
known. The difference of their PSNRs (the proxy benefit, dB) says whether the T1 agrees with this T2 where it
matters: a misregistered, foreign or degraded T1 gives a negative benefit. It needs no registration model and no
assumption about contrast. It runs on at most CHECK_SLICES slices spread over the T2's tissue.

Where the T1 does not help, the check also estimates how far it seems to be off (``estimate_shift``: the
translation along each voxel axis of the T2 that best aligns the gradient magnitudes of the two volumes), for the
message.

``GuideVerdict.helps`` is the proxy benefit reaching THRESHOLD_DB; the policies of RunOptions.guide_check act on it
(engine.py): 'auto' runs the no-T1 model where the T1 does not help, 'warn' runs guided and warns, 'refuse' stops
with an InputError, 'off' skips the check.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from CohfTSuperResLib.data.patches import brain_slices
from CohfTSuperResLib.data.synthetic_volumes import lr_volume, trim_in_plane
from CohfTSuperResLib.evaluation.metrics import psnr
from CohfTSuperResLib.imageio.normalize import robust_scale
from CohfTSuperResLib.inference.allocator import reuse_freed_memory
from CohfTSuperResLib.inference.backends import load_runner
from CohfTSuperResLib.inference.devices import deterministic_kernels, resolve_device
from CohfTSuperResLib.inference.geometry import (
    Grid,
    image_stack,
    resample_to,
    strided_slices,
    to_slice_stack,
    translated,
)
from CohfTSuperResLib.inference.input_checks import InputCheck, check_inputs
from CohfTSuperResLib.inference.slice_run import in_plane_volume
from CohfTSuperResLib.options import RunOptions
from CohfTSuperResLib.weights.registry import GUIDE_CHECK

CHECK_SCALE = 2  # the proxy's factor: the x2 networks run on the LR T2 reduced by 2
CHECK_SLICES = 8  # at most this many slices, spread evenly over the slices with tissue
THRESHOLD_DB = 0.6  # the T1 is used where the proxy benefit reaches this (chosen: docs/benchmarks.md, "The guide check")
SHIFT_SEARCH_MM = np.arange(-5.0, 5.5, 1.0)  # the translations tried along each axis by estimate_shift
REPORTED_SHIFT_MM = 1.5  # a shift from this size on is named in the message
TISSUE_LEVEL = 0.1  # of the T2's robust scale


@dataclass(frozen=True)
class GuideVerdict:
    """What the guide check measured and decided.

    benefit_db: proxy PSNR with the T1 minus without it. helps: benefit_db >= threshold_db. slices: how many slices
    the proxy ran on. shift_mm: the T1's apparent offset along the T2's voxel axes i, j, k (mm), estimated where the
    T1 does not help (else None). seconds: the check's time. parts: (name, dB) of the proxies benefit_db sums, where
    it sums several (the through-plane check's).
    """

    benefit_db: float
    helps: bool
    threshold_db: float
    slices: int
    shift_mm: tuple[float, float, float] | None
    seconds: float
    parts: tuple[tuple[str, float], ...] = ()

    @property
    def shift_size_mm(self) -> float | None:
        return None if self.shift_mm is None else float(np.linalg.norm(self.shift_mm))

    def summary(self) -> str:
        """One line for the user: the measured benefit, the decision's ground and the apparent shift."""
        verdict = "helps" if self.helps else "does not help"
        parts = " + ".join(f"{name.replace('_', ' ')} {value:+.2f}" for name, value in self.parts)
        line = (f"guide check: the T1 {verdict} on this T2 (proxy benefit {self.benefit_db:+.2f} dB"
                f"{f' = {parts}' if parts else ''}, threshold {self.threshold_db:+.2f} dB, {self.slices} slice(s), "
                f"{self.seconds:.1f} s)")
        size = self.shift_size_mm
        if size is not None and size >= REPORTED_SHIFT_MM:
            line += f"; the T1 seems shifted by about {size:.0f} mm: register it to the T2"
        return line

    def record(self) -> str:
        """The check's numbers as one compact string, stored with the output."""
        shift = "" if self.shift_mm is None else " shift_mm=" + ",".join(f"{x:.1f}" for x in self.shift_mm)
        parts = "".join(f" {name}_db={value:.3f}" for name, value in self.parts)
        return (f"benefit_db={self.benefit_db:.3f}{parts} threshold_db={self.threshold_db:.2f} "
                f"helps={int(self.helps)} slices={self.slices}{shift}")


def check_guide(checked: InputCheck, options: RunOptions, threshold_db: float = THRESHOLD_DB) -> GuideVerdict:
    """The proxy benefit of the checked T1 for the checked T2, with the guide check's own x2 pair of the run's
    variant (weights.registry.GUIDE_CHECK; WeightsError where none ships)."""
    started = time.monotonic()
    axis = checked.slice_axis
    sample = _tissue_slices(checked)
    target = image_stack(sample, axis)
    reference = robust_scale(target)
    brain = brain_slices(target / reference)
    if brain.size == 0:
        brain = np.arange(target.shape[0])
    proxy = lr_volume(sample, CHECK_SCALE, axis)
    proxy_options = RunOptions(scale=CHECK_SCALE, variant=options.variant, device=options.device, slice_axis=axis,
                               guide_check="off")
    device = resolve_device(options.device)
    scores = {}
    with warnings.catch_warnings(), deterministic_kernels(device), reuse_freed_memory():
        warnings.simplefilter("ignore")  # the run's own input check has said what there is to say
        for name, guide in (("with", checked.t1), ("without", None)):
            runner = load_runner(proxy_options, guide is not None, role=GUIDE_CHECK)
            result = in_plane_volume(check_inputs(proxy, guide, CHECK_SCALE, axis), runner, proxy_options, device)
            scores[name] = psnr(image_stack(result, axis)[brain] / reference, target[brain] / reference, 1.0)
    benefit = scores["with"] - scores["without"]
    helps = benefit >= threshold_db
    shift = None if helps else tuple(estimate_shift(sample, checked.t1, axis))
    return GuideVerdict(float(benefit), bool(helps), threshold_db, int(target.shape[0]), shift,
                        time.monotonic() - started)


def _tissue_slices(checked: InputCheck) -> sitk.Image:
    """At most CHECK_SLICES slices of the T2, evenly spaced over those with tissue, trimmed in-plane to even sizes."""
    axis = checked.slice_axis
    tissue = (to_slice_stack(checked.t2_voxels, axis) > TISSUE_LEVEL * checked.t2_scale).any(axis=(1, 2))
    image = sitk.Cast(checked.t2, sitk.sitkFloat32)
    return trim_in_plane(strided_slices(image, axis, *evenly_spread(tissue, CHECK_SLICES)), CHECK_SCALE, axis)


def evenly_spread(tissue: np.ndarray, count: int) -> tuple[int, int, int]:
    """start, stop, step of at most `count` indices evenly spaced over the range where `tissue` (one flag per slice)
    is set, centred in it (over every slice where none is)."""
    found = np.flatnonzero(tissue)
    first, last = (int(found[0]), int(found[-1])) if found.size else (0, tissue.size - 1)
    step = max(1, math.ceil((last - first + 1) / count))
    return first + (last - first) % step // 2, last + 1, step


def estimate_shift(t2: sitk.Image, t1: sitk.Image, slice_axis: int) -> np.ndarray:
    """The translation (mm along the T2's voxel axes i, j, k) by which the T1 seems displaced from the T2: for each
    axis, the move of the T1 that best correlates its gradient magnitude with the T2's on the T2's grid (one axis
    at a time, SHIFT_SEARCH_MM, refined by a parabola through the best three)."""
    grid = Grid.of(t2)
    target = _gradient_magnitude(image_stack(t2, slice_axis))
    shift = np.zeros(3)
    for axis in range(3):
        scores = []
        for millimetres in SHIFT_SEARCH_MM:
            move = np.zeros(3)
            move[axis] = millimetres
            voxels = resample_to(translated(t1, tuple(move)), grid)
            moved = _gradient_magnitude(to_slice_stack(voxels, slice_axis))
            scores.append(_correlation(target, moved))
        best = int(np.argmax(scores))
        offset = 0.0
        if 0 < best < len(scores) - 1:
            left, centre, right = scores[best - 1 : best + 2]
            curvature = left - 2 * centre + right
            offset = 0.5 * (left - right) / curvature if curvature < 0 else 0.0
        step = float(SHIFT_SEARCH_MM[1] - SHIFT_SEARCH_MM[0])
        shift[axis] = -(SHIFT_SEARCH_MM[best] + offset * step)  # moving the T1 by -d undoes a displacement of d
    return shift


def _gradient_magnitude(stack: np.ndarray) -> np.ndarray:
    """In-plane gradient magnitude of each slice of a (N, H, W) stack."""
    gy, gx = np.gradient(stack.astype(np.float64), axis=(-2, -1))
    return np.hypot(gy, gx)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two equally shaped arrays (0 where either is constant)."""
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / norm if norm > 0 else 0.0
