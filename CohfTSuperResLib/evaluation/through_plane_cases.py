"""Held-out evaluation of the through-plane mode, per subject: thick slices simulated from 1 mm data, restored.

Protocol (``evaluate_through_plane``), on one HR T2 / T1 pair of a subject never used for training or selection:

1. the HR T2 (1 mm) is averaged into axial slices of n mm (``synthetic_volumes.thick_slice_volume``: box
   profile without gap unless told; the slice count trimmed to a multiple of n);
2. the thick volume goes through the public ``super_resolve(mode='through-plane')`` with the no-T1 model and with
   the guided model and each guide (below), the guide check off; the cubic B-spline interpolation along
   the slice axis (``synthetic_volumes.slice_interpolation``) is the baseline;
3. each result is scored against the HR T2 on the coronal reformat (the through-plane direction), over the coronal
   slices with brain: intensities / the HR T2's robust scale, PSNR pooled, SSIM their mean (``evaluate.score``).

Guide cases (``guide_cases.guide_cases`` with THROUGH_PLANE_MOVES): the T1 as distributed; moved 1 mm along x and
y; moved 2 mm along the slice axis (z), which the thin slices are most sensitive to; another subject's T1.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from CohfTSuperResLib.data.pairs import same_grid
from CohfTSuperResLib.data.patches import brain_slices
from CohfTSuperResLib.data.synthetic_volumes import slice_interpolation, thick_slice_volume
from CohfTSuperResLib.evaluation.evaluate import score
from CohfTSuperResLib.evaluation.guide_cases import Subject
from CohfTSuperResLib.imageio.normalize import robust_scale
from CohfTSuperResLib.inference.engine import super_resolve
from CohfTSuperResLib.inference.geometry import image_stack

THICK_AXIS = 2  # axial thick slices
CORONAL = 1
BSPLINE = "cubic B-spline"
NO_T1 = "no-T1 model"


THROUGH_PLANE_MOVES = {"moved 1 mm in x and y": (1.0, 1.0, 0.0), "moved 2 mm in z": (0.0, 0.0, 2.0)}


class CoronalScorer:
    """The thick-slice input of a subject and the scoring of any restoration of it against its 1 mm truth.

    thick: the subject's 1 mm T2 averaged into axial slices of `factor` mm (``thick_slice_volume``); ``score(name,
    image)`` scores a volume on the thin-slice grid (or any grid that covers it: it is resampled onto the truth's
    grid, linearly, where the two differ) on the coronal reformat over the coronal slices with brain."""

    def __init__(self, subject: Subject, factor: int, profile: str = "box", gap: float = 0.0,
                 log: Callable[[str], None] | None = None) -> None:
        self.label = f"{subject.name} {factor} mm"
        self.log = log or (lambda _message: None)
        hr = subject.read("t2")
        self.thick = thick_slice_volume(hr, factor, THICK_AXIS, profile, gap)
        kept = factor * self.thick.GetSize()[THICK_AXIS]
        self.truth = sitk.RegionOfInterest(hr, [*hr.GetSize()[:2], kept], [0, 0, 0])
        truth_stack = image_stack(self.truth, CORONAL)
        self.reference = robust_scale(truth_stack)
        self.brain = brain_slices(truth_stack / self.reference)
        self.target = truth_stack[self.brain] / self.reference

    def score(self, name: str, image: sitk.Image) -> dict[str, float]:
        if not same_grid(image, self.truth):
            image = sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), self.truth, sitk.Transform(), sitk.sitkLinear,
                                  0.0, sitk.sitkFloat32)
        result = score(np.asarray(image_stack(image, CORONAL)[self.brain], dtype=np.float32) / self.reference,
                       self.target)
        self.log(f"{self.label} {name}: {result['psnr']:.3f} dB")
        return result


def evaluate_through_plane(subject: Subject, factor: int, guides: dict[str, sitk.Image], model: Path | None,
                           no_t1_model: Path | None, profile: str = "box", gap: float = 0.0,
                           log: Callable[[str], None] | None = None, adapt_steps: int = 0,
                           self_ensemble: int = 1) -> dict[str, dict[str, float]]:
    """{case: {psnr, psnr_slice_mean, ssim}} of the B-spline baseline, the no-T1 model and the guided model with each
    guide, on thick slices of `factor` mm made from the subject's 1 mm T2; each network adapted to the thick T2 for
    `adapt_steps` steps first (inference/subject_adaptation.py; 0: as shipped) and run as a self-ensemble of
    `self_ensemble` copies (inference/self_ensemble.py; 1: off)."""
    case = CoronalScorer(subject, factor, profile, gap, log)
    results = {BSPLINE: case.score(BSPLINE, slice_interpolation(case.thick, factor, THICK_AXIS))}
    runs: dict[str, tuple[sitk.Image | None, Path | None]] = {NO_T1: (None, no_t1_model)}
    runs.update({name: (guide, model) for name, guide in guides.items()})
    for name, (guide, weights) in runs.items():
        thin = super_resolve(case.thick, guide, mode="through-plane", model_path=weights, device="cpu",
                             slice_axis=THICK_AXIS, slice_spacing=1.0, guide_check="off", adapt_steps=adapt_steps,
                             self_ensemble=self_ensemble)
        results[name] = case.score(name, thin)
    return results
