"""Thick-slice simulation (data/degradations.py), the thick and thin grids (inference/geometry.py) and the cubic
B-spline baseline (data/synthetic_volumes.py) of through-plane super-resolution."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from CohfTSuperResLib.data.degradations import slice_profile_weights, thick_slices
from CohfTSuperResLib.data.synthetic_volumes import slice_interpolation, thick_slice_volume
from CohfTSuperResLib.errors import InputError
from CohfTSuperResLib.inference.geometry import Grid, thick_slice_grid, thin_slice_grid, thin_slices_per_thick_slice


def test_a_box_profile_without_gap_averages_the_slices_of_each_slab():
    stack = np.random.default_rng(0).random((13, 3, 4)).astype(np.float32)
    thick = thick_slices(stack, 4)
    assert thick.shape == (3, 3, 4)  # the 13th slice is trimmed
    for k in range(3):
        np.testing.assert_allclose(thick[k], stack[4 * k:4 * k + 4].mean(axis=0), rtol=1e-6)


def test_a_slice_gap_narrows_the_box_to_fractional_edge_weights():
    weights = slice_profile_weights(5, 5, "box", gap=0.2)  # 4 of the 5 thin slices' width
    np.testing.assert_allclose(weights[0], np.array([0.5, 1, 1, 1, 0.5]) / 4)


@pytest.mark.parametrize("profile", ["box", "gaussian"])
@pytest.mark.parametrize("gap", [0.0, 0.2])
def test_profiles_are_normalised_and_centred_on_their_slab(profile, gap):
    weights = slice_profile_weights(40, 4, profile, gap)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    centres = weights @ np.arange(40)
    np.testing.assert_allclose(centres[2:-2], 4 * np.arange(2, 8) + 1.5, atol=1e-9)  # away from the ends


def test_a_gaussian_profile_reaches_into_the_neighbouring_slabs_and_a_box_does_not():
    box, gaussian = slice_profile_weights(20, 4, "box"), slice_profile_weights(20, 4, "gaussian")
    assert box[2, 7] == 0 and box[2, 12] == 0
    assert gaussian[2, 7] > 0.01 and gaussian[2, 12] > 0.01


@pytest.mark.parametrize("bad", [{"profile": "triangle"}, {"gap": 1.0}, {"gap": -0.1}])
def test_bad_profiles_are_refused(bad):
    with pytest.raises(ValueError):
        slice_profile_weights(8, 2, **bad)


def _oblique_volume(length: int = 80) -> sitk.Image:
    values = np.zeros((6, 5, length), np.float32) + 0.5 * np.arange(length, dtype=np.float32)  # a ramp along x
    image = sitk.GetImageFromArray(values)
    image.SetSpacing((1.0, 0.9, 1.1))
    image.SetOrigin((-12.0, 7.0, 30.0))
    angle = np.deg2rad(20)
    image.SetDirection((np.cos(angle), -np.sin(angle), 0.0, np.sin(angle), np.cos(angle), 0.0, 0.0, 0.0, 1.0))
    return image


def test_the_thin_grid_of_a_thick_grid_is_the_thin_grid_again():
    thin = Grid.of(_oblique_volume(83))
    back = thin_slice_grid(thick_slice_grid(thin, 4, 0), 4, 0)
    assert back.size == (80, 5, 6) and back.spacing == thin.spacing and back.direction == thin.direction
    np.testing.assert_allclose(back.origin, thin.origin, atol=1e-9)


def test_thin_slices_tile_each_thick_slice_around_its_centre():
    thick = Grid((10, 4, 4), (3.3, 0.6, 0.6), (1.0, 2.0, 3.0), (0, 0, 1, 0, 1, 0, -1, 0, 0))  # sagittal-like
    thin = thin_slice_grid(thick, 5, 0)
    for k in (0, 4):
        centre = thick.index_to_point((k, 0, 0))
        points = [thin.index_to_point((5 * k + j, 0, 0)) for j in range(5)]
        np.testing.assert_allclose(np.mean(points, axis=0), centre, atol=1e-9)
        np.testing.assert_allclose(np.linalg.norm(points[1] - points[0]), 3.3 / 5)


def test_the_thick_volume_sits_at_the_centres_of_its_slabs_and_the_bspline_recovers_a_ramp():
    thin = _oblique_volume()
    thick = thick_slice_volume(thin, 4, 0)
    assert thick.GetSize() == (20, 5, 6) and thick.GetSpacing()[0] == 4.0
    ramp = sitk.GetArrayFromImage(thin)[0, 0]
    np.testing.assert_allclose(sitk.GetArrayFromImage(thick)[0, 0], ramp.reshape(20, 4).mean(axis=1), rtol=1e-6)
    restored = slice_interpolation(thick, 4, 0)
    grid, thin_grid = Grid.of(restored), Grid.of(thin)
    assert (grid.size, grid.spacing, grid.direction) == (thin_grid.size, thin_grid.spacing, thin_grid.direction)
    np.testing.assert_allclose(grid.origin, thin_grid.origin, atol=1e-9)
    error = np.abs(sitk.GetArrayFromImage(restored)[0, 0] - ramp)
    assert error[20:-20].max() < 5e-3  # a cubic B-spline reproduces a linear ramp away from the ends
    assert error.max() < 1.5  # the ends take the nearest slice's value (mirror boundary), never run away


def test_the_number_of_thin_slices_rounds_half_up_and_refuses_thin_input():
    assert thin_slices_per_thick_slice(4.0, 1.0) == 4
    assert thin_slices_per_thick_slice(3.3, 0.6) == 6  # 5.5 rounds up
    assert thin_slices_per_thick_slice(3.0, 1.0) == 3
    with pytest.raises(InputError, match="not thick"):
        thin_slices_per_thick_slice(1.2, 1.0)
