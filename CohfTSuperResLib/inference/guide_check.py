"""The guide self-check: does this T1 help this T2? Measured on the input itself, before the run.

In-plane runs (``check_guide``): the output-consistency proxy, at the run's own scale and with its own networks. On
at most CHECK_SLICES slices spread over the LR T2's tissue, the run's guided network (with the T1) and the shipped
no-T1 network of the same variant and scale each super-resolve the slices; each result is reduced back onto the LR
grid by the degradation the networks were trained on (k-space truncation by the scale) and compared with the LR
slices it came from, which are known. A T1 that agrees with the T2 lets the guided network account for the LR T2
better than the no-T1 network can; a misregistered, foreign or flipped T1 puts edges where the T2 has none, and the
reduction carries part of them back to the LR scale. The difference of the two PSNRs (dB) is the proxy benefit; the
T1 helps where it reaches the threshold of its scale (THRESHOLDS_DB), above zero because the guided network accounts
for the LR better than the no-T1 one with most T1s, harmless ones included (chosen on the selection source:
docs/benchmarks.md, "The guide check at the output scale"). It needs no registration model and no assumption about
contrast.

The reduced-input proxy (``reduced_input_benefit``), the in-plane part of the through-plane check
(through_plane_guide_check.py): the T2 reduced once more by 2 in-plane, super-resolved back x2 by the guide check's
own x2 networks (a frozen pair registered apart in models.json, role GUIDE_CHECK, so that shipping better models
does not move that check's calibration) with the T1 and without it, both compared with the T2: the PSNR difference.

Where the T1 does not help, the check also estimates how far it seems to be off (``estimate_shift``: the
translation along each voxel axis of the T2 that best aligns the gradient magnitudes of the two volumes), for the
message.

``GuideVerdict.helps`` is the proxy benefit reaching the threshold; the policies of RunOptions.guide_check act on
it (engine.py): 'auto' runs the no-T1 model where the T1 does not help, 'warn' runs guided and warns, 'refuse'
stops with an InputError, 'off' skips the check.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from CohfTSuperResLib.data.degradations import degrade
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

CHECK_SLICES = 8  # at most this many slices, spread evenly over the slices with tissue
# The consistency proxy's slices are cropped in-plane to at most this many LR pixels a side, about their tissue's
# centre: it bounds the check's time on large inputs such as native 0.5 mm clinical T2s, and is larger than every
# input its thresholds were chosen and measured on (docs/benchmarks.md, "The guide check at the output scale").
CHECK_SIDE = 128
# Per scale, the T1 is used where the consistency benefit reaches this: on the selection source, the threshold (in
# steps of 0.1 dB) with the best mean of auto - no-T1 over its guide cases whose worst case is not below -0.1 dB, the
# highest of equals (docs/benchmarks.md, "The guide check at the output scale"). Shipping a model of a scale asks for
# it again: the check runs the shipped networks.
THRESHOLDS_DB = {2: 0.2, 3: 0.6, 4: 0.9}
# The shipped networks (sha256, first 12 digits: guided, no-T1) each threshold was chosen with; the tests fail where a
# shipped model of a scale changes and the threshold has not been chosen again (the same networks stored in float16
# were checked again: docs/benchmarks.md, "Shipped weights in float16").
CALIBRATED_WITH = {2: ("accf00172258", "310816273f9a"), 3: ("fb73909089ee", "c5d016865ef4"),
                   4: ("b306e910cab6", "363890512768")}
REDUCED_SCALE = 2  # the reduced-input proxy's factor: the x2 networks run on the T2 reduced by 2
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


def check_guide(checked: InputCheck, options: RunOptions, threshold_db: float | None = None) -> GuideVerdict:
    """The output-consistency benefit of the checked T1 for the checked LR T2 (module docstring): the run's guided
    network against the shipped no-T1 network of its variant and scale (WeightsError where either is missing),
    judged against threshold_db (THRESHOLDS_DB of the scale unless given)."""
    started = time.monotonic()
    threshold_db = THRESHOLDS_DB[checked.scale] if threshold_db is None else threshold_db
    axis, scale = checked.slice_axis, checked.scale
    sample = tissue_crop(_tissue_slices(checked), axis, TISSUE_LEVEL * checked.t2_scale, CHECK_SIDE)
    lr = image_stack(sample, axis)
    reference = robust_scale(lr)
    brain = _brain(lr / reference)
    device = resolve_device(options.device)
    run_options = dataclasses.replace(options, guide_check="off", self_ensemble=1, adapt_steps=0)
    scores = {}
    with warnings.catch_warnings(), deterministic_kernels(device), reuse_freed_memory():
        warnings.simplefilter("ignore")  # the run's own input check has said what there is to say
        inputs = check_inputs(sample, checked.t1, scale, axis)
        for use_t1 in (True, False):
            network_options = run_options if use_t1 else dataclasses.replace(run_options, model_path=None)
            runner = load_runner(network_options, use_t1)
            run_inputs = inputs if use_t1 else dataclasses.replace(inputs, t1=None, t1_scale=None, t1_coverage=None)
            result = in_plane_volume(run_inputs, runner, network_options, device)
            reduced = degrade(image_stack(result, axis), scale)
            scores[use_t1] = psnr(reduced[brain] / reference, lr[brain] / reference, 1.0)
    benefit = scores[True] - scores[False]
    helps = benefit >= threshold_db
    shift = None if helps else tuple(estimate_shift(sample, checked.t1, axis))
    return GuideVerdict(float(benefit), bool(helps), threshold_db, int(lr.shape[0]), shift,
                        time.monotonic() - started)


def reduced_input_benefit(checked: InputCheck, options: RunOptions) -> tuple[float, int]:
    """The reduced-input proxy benefit (dB) of the checked T1 for the checked T2 and the number of slices it ran on,
    with the guide check's own x2 pair of the run's variant (weights.registry.GUIDE_CHECK; WeightsError where none
    ships)."""
    axis = checked.slice_axis
    sample = trim_in_plane(_tissue_slices(checked), REDUCED_SCALE, axis)
    target = image_stack(sample, axis)
    reference = robust_scale(target)
    brain = _brain(target / reference)
    proxy = lr_volume(sample, REDUCED_SCALE, axis)
    proxy_options = RunOptions(scale=REDUCED_SCALE, variant=options.variant, device=options.device, slice_axis=axis,
                               guide_check="off")
    device = resolve_device(options.device)
    scores = {}
    with warnings.catch_warnings(), deterministic_kernels(device), reuse_freed_memory():
        warnings.simplefilter("ignore")  # the run's own input check has said what there is to say
        for name, guide in (("with", checked.t1), ("without", None)):
            runner = load_runner(proxy_options, guide is not None, role=GUIDE_CHECK)
            result = in_plane_volume(check_inputs(proxy, guide, REDUCED_SCALE, axis), runner, proxy_options, device)
            scores[name] = psnr(image_stack(result, axis)[brain] / reference, target[brain] / reference, 1.0)
    return scores["with"] - scores["without"], int(target.shape[0])


def apparent_shift(checked: InputCheck) -> tuple[float, float, float]:
    """``estimate_shift`` of the checked T1 against the check's slices of the checked T2 (mm along its voxel axes)."""
    return tuple(estimate_shift(_tissue_slices(checked), checked.t1, checked.slice_axis))


def tissue_crop(image: sitk.Image, slice_axis: int, level: float, side: int) -> sitk.Image:
    """The image cropped in-plane (along the two axes other than slice_axis) to at most `side` voxels a side, each
    window centred on the extent of the voxels above `level` (on the image's centre where there are none); its
    geometry kept."""
    above = sitk.GetArrayViewFromImage(image) > level  # (k, j, i): voxel axis a is array axis 2 - a
    window = []
    for axis, size in enumerate(image.GetSize()):
        if axis == slice_axis or size <= side:
            window.append(slice(0, size))
            continue
        found = np.flatnonzero(above.any(axis=tuple(other for other in range(3) if other != 2 - axis)))
        centre = (found[0] + found[-1]) // 2 if found.size else size // 2
        start = int(min(max(centre - side // 2, 0), size - side))
        window.append(slice(start, start + side))
    return image[tuple(window)]


def _brain(stack: np.ndarray) -> np.ndarray:
    """The indices of the slices with brain of a normalised (N, H, W) stack (every slice where none has)."""
    brain = brain_slices(stack)
    return brain if brain.size else np.arange(stack.shape[0])


def _tissue_slices(checked: InputCheck) -> sitk.Image:
    """At most CHECK_SLICES slices of the T2, evenly spaced over those with tissue."""
    axis = checked.slice_axis
    tissue = (to_slice_stack(checked.t2_voxels, axis) > TISSUE_LEVEL * checked.t2_scale).any(axis=(1, 2))
    return strided_slices(sitk.Cast(checked.t2, sitk.sitkFloat32), axis, *evenly_spread(tissue, CHECK_SLICES))


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
