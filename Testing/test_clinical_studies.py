"""The open_ms clinical studies as an evaluation source (evaluation/guide_cases.ClinicalStudy): the 2-D T2 reduced
in-plane to the training's pixels is the truth, the session's T1 is put on it through the transforms to the FLAIR."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from CohfTSuperResLib.data.pairs import CLINICAL_STUDIES
from CohfTSuperResLib.evaluation.guide_cases import (
    ClinicalStudy,
    clinical_studies,
    evaluation_subjects,
    foreign_study,
    foreign_t1,
)

SHIFT_MM = (2.0, -1.0, 0.0)  # where the T1 sits relative to the T2 in the reference (FLAIR) space


def _pattern(size: tuple[int, int, int], spacing: tuple[float, float, float], origin: tuple[float, float, float],
             ) -> sitk.Image:
    """A function of physical position only (smooth, so that resampling and k-space reduction keep it)."""
    k, j, i = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in reversed(size)), indexing="ij")
    x, y, z = (origin[a] + spacing[a] * index for a, index in enumerate((i, j, k)))
    image = sitk.GetImageFromArray((10.0 + np.cos(2 * np.pi * x / 24.0) + 0.5 * np.sin(2 * np.pi * y / 16.0)
                                    + 0.01 * z).astype(np.float32))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    return image


def _study(root: Path, name: str) -> None:
    """T2 of 0.5 mm pixels and 3.3 mm slices over a 48 x 48 mm field of view; a T1 of 1 mm pixels and 3 mm slices
    whose content is the T2's moved by SHIFT_MM; transforms to a FLAIR that say exactly that."""
    folder = root / CLINICAL_STUDIES / name
    folder.mkdir(parents=True)
    sitk.WriteImage(_pattern((96, 96, 8), (0.5, 0.5, 3.3), (0.0, 0.0, 0.0)), str(folder / "t2w.nii.gz"))
    t1 = _pattern((60, 60, 10), (1.0, 1.0, 3.0), (-6.0, -6.0, -1.0))
    t1.SetOrigin(tuple(o + s for o, s in zip(t1.GetOrigin(), SHIFT_MM)))  # the same anatomy, SHIFT_MM further on
    sitk.WriteImage(t1, str(folder / "t1w.nii.gz"))
    sitk.WriteTransform(sitk.TranslationTransform(3, (0.0, 0.0, 0.0)), str(folder / "t2w_to_flair.tfm"))
    sitk.WriteTransform(sitk.TranslationTransform(3, SHIFT_MM), str(folder / "t1w_to_flair.tfm"))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    for name in ("patient01_study1", "patient01_study2", "patient03_study2"):
        _study(root, name)
    return root


def test_the_truth_is_the_t2_at_1mm_and_the_t1_lies_on_it_registered(data: Path) -> None:
    studies = clinical_studies(data)
    assert [study.name for study in studies] == [f"{CLINICAL_STUDIES}/patient01_study1",
                                                 f"{CLINICAL_STUDIES}/patient01_study2",
                                                 f"{CLINICAL_STUDIES}/patient03_study2"]
    assert all(isinstance(study, ClinicalStudy) for study in studies)
    t2, t1 = studies[0].read("t2"), studies[0].read("t1")
    assert t2.GetSize() == t1.GetSize() == (48, 48, 8)
    assert t2.GetSpacing() == t1.GetSpacing() == pytest.approx((1.0, 1.0, 3.3))
    expected = sitk.GetArrayFromImage(_pattern((48, 48, 8), (1.0, 1.0, 3.3), (0.0, 0.0, 0.0)))
    np.testing.assert_allclose(sitk.GetArrayFromImage(t2), expected, atol=2e-3)
    inside = np.s_[1:-1, 2:-2, 2:-2]  # the T1 covers the T2 but for its border slices
    np.testing.assert_allclose(sitk.GetArrayFromImage(t1)[inside], expected[inside], atol=0.05)
    with pytest.raises(ValueError, match="read as 't1' or 't2', not 'flair'"):
        studies[0].read("flair")


def test_the_foreign_guide_comes_from_another_patient(data: Path) -> None:
    studies = clinical_studies(data)
    assert foreign_study(studies[0], studies).name.endswith("patient03_study2")
    assert foreign_study(studies[2], studies).name.endswith("patient01_study1")
    assert foreign_study(studies[0], studies[:2]) is None


def test_evaluation_sources_and_their_foreign_guides(data: Path) -> None:
    clinical = evaluation_subjects("clinical", data)
    assert [study.name for study in clinical] == [study.name for study in clinical_studies(data)]
    assert evaluation_subjects("reporting", data) == [] and evaluation_subjects("selection", data) == []
    with pytest.raises(ValueError, match="unknown evaluation source 'mine'"):
        evaluation_subjects("mine", data)
    foreign = foreign_t1(clinical[0], clinical, data)  # patient03's T1, on its own study's grid
    assert foreign.GetSize() == (48, 48, 8)
    assert foreign_t1(clinical[0], clinical[:2], data) is None  # no other patient
