"""The through-plane scoring of evaluation/through_plane_cases.py (`CoronalScorer`): the thick input of a subject and
the scoring of any restoration of it, on its own grid or another one (an external tool's output)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from CohfTSuperResLib.data.synthetic_volumes import slice_interpolation
from CohfTSuperResLib.evaluation.guide_cases import Subject
from CohfTSuperResLib.evaluation.through_plane_cases import THICK_AXIS, CoronalScorer

FACTOR = 4


@pytest.fixture(scope="module")
def subject(tmp_path_factory: pytest.TempPathFactory) -> Subject:
    """A 1 mm 'head': an ellipsoid of smooth random texture, 48 x 44 x 42 voxels (42 slices: trimmed to 40)."""
    rng = np.random.default_rng(3)
    z, y, x = np.mgrid[:42, :44, :48]
    inside = ((x - 24) / 20) ** 2 + ((y - 22) / 18) ** 2 + ((z - 21) / 19) ** 2 < 1
    texture = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(
        sitk.GetImageFromArray(rng.random((42, 44, 48)).astype(np.float32)), 1.5))
    image = sitk.GetImageFromArray((inside * (200 + 2000 * texture)).astype(np.float32))
    image.SetOrigin((-10.0, 5.0, 30.0))
    folder = tmp_path_factory.mktemp("subject")
    sitk.WriteImage(image, str(folder / "t2.nii.gz"))
    return Subject("synthetic", folder)


def test_the_thick_input_and_the_truth_cover_the_same_slices(subject: Subject) -> None:
    case = CoronalScorer(subject, FACTOR)
    assert case.thick.GetSize()[THICK_AXIS] == 10 and case.truth.GetSize()[THICK_AXIS] == 40
    assert case.thick.GetSpacing()[THICK_AXIS] == pytest.approx(FACTOR)
    assert len(case.brain) > 10


def test_the_truth_scores_perfect_on_its_grid_and_on_a_finer_one_that_holds_its_samples(subject: Subject) -> None:
    case = CoronalScorer(subject, FACTOR)
    assert case.score("truth", case.truth)["ssim"] == pytest.approx(1.0)
    finer = sitk.Resample(case.truth, [*case.truth.GetSize()[:2], 79], sitk.Transform(), sitk.sitkLinear,
                          case.truth.GetOrigin(), (1.0, 1.0, 0.5), case.truth.GetDirection(), 0.0, sitk.sitkFloat32)
    assert case.score("truth on 0.5 mm slices", finer)["psnr"] > 60.0


def test_an_output_is_scored_where_it_lies_in_space(subject: Subject) -> None:
    """The B-spline falls short of the truth; the same array one slice off in space scores lower still."""
    case = CoronalScorer(subject, FACTOR)
    bspline = slice_interpolation(case.thick, FACTOR, THICK_AXIS)
    moved = sitk.Image(bspline)
    moved.SetOrigin(tuple(np.add(bspline.GetOrigin(), (0.0, 0.0, 1.0))))
    in_place, shifted = case.score("B-spline", bspline), case.score("moved", moved)
    assert 15.0 < in_place["psnr"] < 60.0
    assert shifted["psnr"] < in_place["psnr"] - 0.5
