"""bench/guide_agreement.py: the model-free measure of how well a T1's fine structure agrees with its T2's."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
try:
    from guide_agreement import band_magnitude, block_statistics, correlation
finally:
    sys.path.pop(0)


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    """A textured 48^3 'T1' and a 'T2' of the same anatomy in inverted contrast (a linear map of the T1)."""
    rng = np.random.default_rng(0)
    t1 = ndimage.gaussian_filter(rng.random((48, 48, 48)), 1.2) > 0.5
    t1 = ndimage.gaussian_filter(t1.astype(np.float64), 0.6)
    return t1, 2.0 - 1.5 * t1


def test_the_same_anatomy_in_another_contrast_agrees_fully(pair):
    t1, t2 = pair
    assert correlation(band_magnitude(t1), band_magnitude(t2)) == pytest.approx(1.0, abs=1e-9)


def test_a_moved_t1_agrees_less(pair):
    t1, t2 = pair
    moved = np.roll(t1, (1, 1), axis=(1, 2))
    assert correlation(band_magnitude(moved), band_magnitude(t2)) < 0.8


def test_blocks_find_a_local_shift_and_none_where_there_is_none(pair):
    t1, t2 = pair
    brain = np.ones(t1.shape, dtype=bool)
    aligned_median, aligned_gain, blocks = block_statistics(band_magnitude(t1), band_magnitude(t2), brain, 16, 2)
    moved_median, moved_gain, _ = block_statistics(band_magnitude(np.roll(t1, 1, axis=2)), band_magnitude(t2),
                                                   brain, 16, 2)
    assert blocks == 8  # blocks of 16 voxels at a margin of 2: two starts per axis
    assert aligned_median == pytest.approx(1.0) and aligned_gain == pytest.approx(0.0, abs=1e-12)
    # the best shift puts each block back (up to the filters' edge handling near the volume's faces)
    assert moved_median < 0.8 and moved_gain == pytest.approx(1.0 - moved_median, abs=0.02)
