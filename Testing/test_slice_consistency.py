"""Consistency of restored thin slices with the thick slices (inference/slice_consistency.py), and its place in the
through-plane run: the projection holds each thick slice to its thin slices' profile mean, changes nothing it need
not, never moves a restoration away from a truth that the thick slices were made from, and is the run's last step."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import SimpleITK as sitk

from CohfTSuperResLib.data.degradations import slice_profile_weights, thick_slices
from CohfTSuperResLib.data.synthetic_volumes import thick_slice_volume
from CohfTSuperResLib.inference.engine import super_resolve
from CohfTSuperResLib.inference.slice_consistency import consistent_thin_slices
from CohfTSuperResLib.options import THROUGH_PLANE_SCALE

from inference_helpers import save_tiny

PROFILES = [("box", 0.0), ("box", 0.2), ("gaussian", 0.0), ("gaussian", 0.2)]


def _profile_means(thin: np.ndarray, factor: int, profile: str, gap: float) -> np.ndarray:
    weights = slice_profile_weights(thin.shape[0], factor, profile, gap)
    return (weights @ thin.reshape(thin.shape[0], -1).astype(np.float64)).reshape(-1, *thin.shape[1:])


@pytest.mark.parametrize("profile, gap", PROFILES)
@pytest.mark.parametrize("factor", [2, 4, 5])
def test_the_thin_slices_average_back_to_the_thick_slices(profile, gap, factor):
    rng = np.random.default_rng(factor)
    thick = rng.uniform(0, 100, (7, 5, 6)).astype(np.float32)
    thin = rng.uniform(0, 100, (7 * factor, 5, 6)).astype(np.float32)
    before = thin.copy()
    result = consistent_thin_slices(thin, thick, profile, gap)
    np.testing.assert_allclose(_profile_means(result, factor, profile, gap), thick, rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(thin, before)  # a new array; the network's result is kept
    thick[2] = 0.0
    assert (consistent_thin_slices(thin, thick, profile, gap)[2 * factor:3 * factor] == 0).all()  # background
    assert result.dtype == np.float32


@pytest.mark.parametrize("profile, gap", PROFILES)
def test_thin_slices_that_are_consistent_already_are_left_alone(profile, gap):
    truth = np.random.default_rng(1).uniform(0, 100, (24, 4, 3)).astype(np.float32)
    thick = thick_slices(truth, 4, profile, gap)
    np.testing.assert_allclose(consistent_thin_slices(truth, thick, profile, gap), truth, atol=1e-3)


@pytest.mark.parametrize("profile, gap", PROFILES)
def test_the_projection_never_moves_a_restoration_away_from_the_truth(profile, gap):
    """The truth is among the stacks that meet the thick slices, and the projection onto them is orthogonal: any
    restoration ends no farther from the truth, and detail the thick slices can not see is not touched."""
    rng = np.random.default_rng(2)
    truth = rng.uniform(0, 100, (20, 6, 6)).astype(np.float32)
    thick = thick_slices(truth, 4, profile, gap)
    for _ in range(5):
        restoration = truth + rng.normal(0, 10, truth.shape).astype(np.float32)
        corrected = consistent_thin_slices(restoration, thick, profile, gap)
        assert np.linalg.norm(corrected - truth) < np.linalg.norm(restoration - truth)
    invisible = np.zeros_like(truth)
    invisible[0::4], invisible[1::4] = 5.0, -5.0  # zero mean in every box of 4 slices
    if (profile, gap) == ("box", 0.0):
        np.testing.assert_allclose(consistent_thin_slices(truth + invisible, thick, profile, gap), truth + invisible,
                                   atol=1e-3)


def test_thin_slices_that_do_not_tile_the_thick_ones_are_refused():
    with pytest.raises(ValueError, match="do not tile"):
        consistent_thin_slices(np.zeros((10, 4, 4), np.float32), np.zeros((3, 4, 4), np.float32), "box", 0.0)
    with pytest.raises(ValueError, match="do not tile"):
        consistent_thin_slices(np.zeros((12, 4, 4), np.float32), np.zeros((3, 4, 5), np.float32), "box", 0.0)


def _head(size=(20, 22, 24), seed=0) -> sitk.Image:
    k, j, i = np.meshgrid(*(np.linspace(-1, 1, n) for n in reversed(size)), indexing="ij")
    head = (i**2 + j**2 + k**2 < 0.8) * (100 + 30 * np.sin(5 * i) * np.cos(4 * k) + seed)
    image = sitk.GetImageFromArray(head.astype(np.float32))
    image.SetOrigin((-10.0, 5.0, 2.0))
    return image


@pytest.mark.parametrize("thick_axis", [0, 2])
def test_the_through_plane_run_ends_consistent_with_its_thick_slices_under_the_chosen_profile(tmp_path, thick_axis):
    """Box: every thick slice is its thin slices' mean. Gaussian: held where its reach stays inside the head (a thick
    slice of 0, the background, has thin slices of 0, whatever the wide profile's tails say). By default: off."""
    model = save_tiny(tmp_path, THROUGH_PLANE_SCALE, False)
    thick = thick_slice_volume(_head(), 4, thick_axis)
    voxels = np.moveaxis(sitk.GetArrayFromImage(thick), 2 - thick_axis, 0)
    runs, residual = {}, {}
    for profile, gap in (("off", 0.2), ("box", 0.0), ("gaussian", 0.2)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = super_resolve(thick, None, mode="through-plane", model_path=model, device="cpu",
                                   guide_check="off", slice_axis=thick_axis, slice_profile=profile, slice_gap=gap)
        runs[profile] = np.moveaxis(sitk.GetArrayFromImage(result), 2 - thick_axis, 0)
        means = _profile_means(runs[profile], 4, "box" if profile == "off" else profile, gap if profile != "off" else 0)
        residual[profile] = np.abs(means - voxels)
        if profile != "off":
            assert (runs[profile][np.repeat(voxels == 0, 4, axis=0)] == 0).all()  # the background is 0
            assert f"consistent with the thick slices ({profile}" in result.GetMetaData("cohft_model")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        default = super_resolve(thick, None, mode="through-plane", model_path=model, device="cpu", guide_check="off",
                                slice_axis=thick_axis)
    np.testing.assert_array_equal(np.moveaxis(sitk.GetArrayFromImage(default), 2 - thick_axis, 0), runs["off"])
    assert residual["off"].max() > 1.0 and residual["box"].max() < 1e-2
    np.testing.assert_allclose(consistent_thin_slices(runs["off"], voxels, "box", 0.0), runs["box"], atol=1e-3)
    inside = (voxels != 0) & np.roll(voxels != 0, 1, axis=0) & np.roll(voxels != 0, -1, axis=0)
    assert residual["gaussian"][inside].mean() < 0.1 * residual["off"][inside].mean()
