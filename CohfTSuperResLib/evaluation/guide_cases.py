"""Held-out evaluation of the T1 guide across sources: registered, moved, foreign and absent guides, per subject.

Protocol (``evaluate_subject``), on one HR T2 / T1 pair of a subject never used for training or selection:

1. the HR T2 is read as float32, trimmed in-plane to a multiple of the scale, and every ``every``-th
   slice along the acquisition axis (2) is kept (an image with that slice spacing: the network works
   slice by slice, so each kept slice gets exactly the result of a full run);
2. LR by the paper's k-space truncation of each slice (``synthetic_volumes.lr_volume``);
3. each guide case goes through the public ``super_resolve`` with the guided model, the no-T1 model
   without a guide, and bicubic upsampling is the baseline;
4. intensities / the HR T2's robust scale, PSNR pooled over the brain slices, SSIM their mean
   (``evaluate.score``).

Guide cases (``guide_cases``): the T1 as distributed; the same T1 moved 1 mm along x and y (1.4 mm)
and 3 mm along x (a physical translation: only the origin changes, no interpolation); another
subject's T1 (``foreign_guide``: moved so that its tissue's centre of mass meets this T2's).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from CohfTSuperResLib.evaluation.evaluate import baselines, score
from CohfTSuperResLib.inference.engine import super_resolve
from CohfTSuperResLib.imageio.normalize import robust_scale
from CohfTSuperResLib.data.pairs import (REPORTING_SUBJECTS, SELECTION_SOURCE, PairSpec, clinical_specs,
                                         in_plane_reduced, t1_on_t2_grid, t1_to_t2_transform)
from CohfTSuperResLib.inference.geometry import acquisition_axis, image_stack, translated
from CohfTSuperResLib.data.patches import brain_slices
from CohfTSuperResLib.data.synthetic_volumes import lr_volume, trim_in_plane
from CohfTSuperResLib.imageio.volumes import read_volume

AXIS = 2
REGISTERED = "registered"
NO_T1 = "no-T1 model"
BICUBIC = "bicubic"
# the subject whose T1 serves as the foreign guide of each reporting subject (and of the selection source)
FOREIGN_SOURCE = {"open_ms/mni/patient26": "open_ms/mni/patient07",
                  "brats_gli/BraTS-GLI-00000-000": "open_ms/mni/patient26",
                  "templates/mni152_fsl": "open_ms/mni/patient07"}


@dataclass(frozen=True)
class Subject:
    """A pair of ../shared/data by its name there (e.g. 'open_ms/mni/patient26')."""

    name: str
    folder: Path

    def read(self, modality: str) -> sitk.Image:
        return read_volume(self.folder / f"{modality}.nii.gz", float32=True)


def reporting_subjects(data: Path) -> list[Subject]:
    """The held-out reporting subjects present under the data folder."""
    return [Subject(name, data / name) for name in REPORTING_SUBJECTS if (data / name / "t2.nii.gz").is_file()]


@dataclass(frozen=True)
class ClinicalStudy(Subject):
    """An open_ms clinical study (``data/pairs.clinical_specs``) read as a pair: its 2-D T2 reduced in-plane to the
    training's 1 mm pixels (the truth, slices 3.3-4 mm apart, skull included) and its T1 (3 mm slices) put on that grid
    through the two transforms to the study's FLAIR: a real acquisition with a real, imperfect guide."""

    spec: PairSpec

    def read(self, modality: str) -> sitk.Image:
        if modality not in ("t1", "t2"):
            raise ValueError(f"a clinical study is read as 't1' or 't2', not {modality!r}")
        spec = self.spec
        t2 = read_volume(spec.t2, float32=True)
        t2 = in_plane_reduced(t2, acquisition_axis(t2.GetSpacing()), spec.in_plane_mm)
        if modality == "t2":
            return t2
        return t1_on_t2_grid(read_volume(spec.t1, float32=True), t2, t1_to_t2_transform(spec))


def clinical_studies(data: Path) -> list[ClinicalStudy]:
    """The open_ms clinical studies present under the data folder (which models trained on them: the model card)."""
    return [ClinicalStudy(spec.subject, spec.t2.parent, spec) for spec in clinical_specs(data)]


def foreign_study(study: Subject, studies: list[Subject]) -> Subject | None:
    """The first study of another patient (the name's part before '_study'), as the foreign guide's source."""
    patient = study.name.rsplit("_study", 1)[0]
    return next((other for other in studies if other.name.rsplit("_study", 1)[0] != patient), None)


SOURCES = ("reporting", "selection", "clinical")


def evaluation_subjects(source: str, data: Path) -> list[Subject]:
    """The subjects of one evaluation source (SOURCES): the held-out reporting subjects, the selection source, or the
    open_ms clinical studies; those present under the data folder."""
    if source == "reporting":
        return reporting_subjects(data)
    if source == "clinical":
        return clinical_studies(data)
    if source == "selection":
        return [Subject(SELECTION_SOURCE, data / SELECTION_SOURCE)] if (data / SELECTION_SOURCE).is_dir() else []
    raise ValueError(f"unknown evaluation source {source!r}; use one of {', '.join(SOURCES)}")


def foreign_t1(subject: Subject, subjects: list[Subject], data: Path) -> sitk.Image | None:
    """Another subject's T1 as the foreign guide of subject: FOREIGN_SOURCE's, or another patient's for a clinical
    study (None where there is none)."""
    if isinstance(subject, ClinicalStudy):
        other = foreign_study(subject, subjects)
    else:
        name = FOREIGN_SOURCE.get(subject.name)
        other = Subject(name, data / name) if name else None
    return other.read("t1") if other is not None else None


def tissue_centre(image: sitk.Image) -> np.ndarray:
    """Physical centre of mass of the voxels above 10 % of the image's robust scale."""
    array = sitk.GetArrayViewFromImage(image)
    index = np.argwhere(array > 0.1 * robust_scale(array)).mean(axis=0)[::-1]  # (i, j, k)
    return np.asarray(image.TransformContinuousIndexToPhysicalPoint(tuple(float(x) for x in index)))


def foreign_guide(other_t1: sitk.Image, t2: sitk.Image) -> sitk.Image:
    """Another subject's T1 translated so its tissue's centre of mass meets the T2's: plausible, wrong anatomy."""
    moved = sitk.Image(other_t1)
    offset = tissue_centre(t2) - tissue_centre(other_t1)
    moved.SetOrigin(tuple(np.asarray(other_t1.GetOrigin()) + offset))
    return moved


MOVED_1MM = "moved 1 mm in x and y"  # the moved guide of the guards and of checkpoint selection
IN_PLANE_MOVES = {MOVED_1MM: (1.0, 1.0, 0.0), "moved 3 mm in x": (3.0, 0.0, 0.0)}


def guide_cases(t1: sitk.Image, t2: sitk.Image, foreign_t1: sitk.Image | None,
                moves: dict[str, tuple[float, float, float]] = IN_PLANE_MOVES) -> dict[str, sitk.Image]:
    """The guides every subject is evaluated with (module docstring): the T1, the T1 moved by each of `moves` (mm),
    and another subject's T1 where one is given."""
    cases = {REGISTERED: t1, **{name: translated(t1, shift) for name, shift in moves.items()}}
    if foreign_t1 is not None:
        cases["another subject's T1"] = foreign_guide(foreign_t1, t2)
    return cases


def evaluate_subject(subject: Subject, scale: int, guides: dict[str, sitk.Image], model: Path | None,
                     no_t1_model: Path | None, every: int = 1, log: Callable[[str], None] | None = None,
                     self_ensemble: int = 1) -> dict[str, dict[str, float]]:
    """{case: {psnr, psnr_slice_mean, ssim}} of bicubic, the no-T1 model and the guided model with each guide, every
    network run a self-ensemble of `self_ensemble` copies (inference/self_ensemble.py; 1: off)."""
    log = log or (lambda _message: None)
    hr = trim_in_plane(subject.read("t2"), scale, AXIS)[:, :, ::every]
    hr_stack = image_stack(hr, AXIS)
    reference = robust_scale(hr_stack)
    brain = brain_slices(hr_stack / reference)
    target = hr_stack[brain] / reference
    lr = lr_volume(hr, scale, AXIS)
    results = {BICUBIC: baselines(image_stack(lr, AXIS)[brain], scale)["bicubic"] / reference}
    runs: dict[str, tuple[sitk.Image | None, Path | None]] = {NO_T1: (None, no_t1_model)}
    runs.update({name: (guide, model) for name, guide in guides.items()})
    for name, (guide, weights) in runs.items():
        sr = super_resolve(lr, guide, scale, model_path=weights, device="cpu", slice_axis=AXIS, guide_check="off",
                           self_ensemble=self_ensemble)
        results[name] = image_stack(sr, AXIS)[brain] / reference
        log(f"{subject.name} x{scale} {name}: {score(results[name], target)['psnr']:.3f} dB")
    return {name: score(stack, target) for name, stack in results.items()}
