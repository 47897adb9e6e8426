"""Output grid (DFT convention), slabs, slice stacks, T1 resampling in physical space and coverage."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from CohfTSuperResLib.errors import InputError
from CohfTSuperResLib.inference.geometry import (
    Grid, check_coverage, coverage, from_slice_stack, output_grid, resample_to, slab, to_slice_stack,
)
from CohfTSuperResLib.options import check_slice_axis

OBLIQUE = tuple(sitk.VersorTransform((0.3, -0.2, 0.9), 0.4).GetMatrix())


def _grid(direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)) -> Grid:
    return Grid((10, 12, 5), (0.5, 0.6, 3.0), (-4.0, 2.0, 7.0), tuple(float(x) for x in direction))


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_output_grid_keeps_origin_direction_and_slice_axis(axis):
    lr = _grid(OBLIQUE)
    out = output_grid(lr, 3, axis)
    assert out.origin == lr.origin and out.direction == lr.direction
    for a in range(3):
        factor = 1 if a == axis else 3
        assert out.size[a] == lr.size[a] * factor
        assert out.spacing[a] == pytest.approx(lr.spacing[a] / factor)
    # DFT grid: LR sample j sits at HR sample s*j
    lr_index = (2, 3, 1)
    hr_index = tuple(n if a == axis else 3 * n for a, n in enumerate(lr_index))
    np.testing.assert_allclose(out.index_to_point(hr_index), lr.index_to_point(lr_index), atol=1e-9)


def test_index_to_point_matches_simpleitk():
    grid = _grid(OBLIQUE)
    image = grid.image_from_array(np.zeros(tuple(reversed(grid.size)), np.float32))
    np.testing.assert_allclose(grid.index_to_point((3, 4, 2)), image.TransformIndexToPhysicalPoint((3, 4, 2)))


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slab_starts_at_the_slice(axis):
    grid = _grid(OBLIQUE)
    part = slab(grid, 2, 4, axis)
    index = [0, 0, 0]
    index[axis] = 2
    np.testing.assert_allclose(part.origin, grid.index_to_point(tuple(index)))
    assert part.size[axis] == 2 and all(part.size[a] == grid.size[a] for a in range(3) if a != axis)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slice_stack_round_trip(axis):
    array = np.arange(5 * 12 * 10).reshape(5, 12, 10)
    stack = to_slice_stack(array, axis)
    assert stack.shape[0] == array.shape[2 - axis]
    np.testing.assert_array_equal(from_slice_stack(stack, axis), array)


def test_check_slice_axis_rejects_others():
    for bad in (3, -1, 1.0, True, "2"):
        with pytest.raises(InputError, match="slice_axis"):
            check_slice_axis(bad)


def test_resampling_follows_physical_space_for_an_oblique_guide():
    """A linear function of the physical position, stored on an oblique grid, is read back exactly inside."""
    gradient, offset = np.array([0.3, -0.2, 0.5]), 2.0
    source = Grid((40, 40, 40), (1.0, 1.2, 0.9), (-20.0, -25.0, -15.0), OBLIQUE)
    points = np.stack(np.meshgrid(*(np.arange(n) for n in source.size), indexing="ij"), -1).reshape(-1, 3)
    physical = np.asarray(source.origin) + (np.asarray(OBLIQUE).reshape(3, 3) @ (points * source.spacing).T).T
    values = (physical @ gradient + offset).reshape(source.size).transpose(2, 1, 0).astype(np.float32)
    guide = source.image_from_array(values)
    target = output_grid(Grid((8, 8, 4), (2.0, 2.0, 3.0), (-8.0, -8.0, -6.0), (1, 0, 0, 0, 1, 0, 0, 0, 1)), 2)
    resampled = resample_to(guide, target)
    index = np.stack(np.meshgrid(*(np.arange(n) for n in target.size), indexing="ij"), -1).reshape(-1, 3)
    expected = np.array([target.index_to_point(tuple(i)) @ gradient + offset for i in index])
    np.testing.assert_allclose(resampled.transpose(2, 1, 0).reshape(-1), expected, atol=1e-3)


def test_coverage_partial_and_none():
    lr = Grid((10, 10, 4), (2.0, 2.0, 3.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    guide = sitk.Image([10, 20, 12], sitk.sitkFloat32)
    guide.SetOrigin((9.0, -1.0, -1.0))  # covers x >= 9: LR columns 5..9
    assert coverage(guide, lr) == pytest.approx(0.5)
    guide.SetOrigin((500.0, 0.0, 0.0))
    with pytest.raises(InputError, match="does not overlap"):
        check_coverage(guide, lr)
