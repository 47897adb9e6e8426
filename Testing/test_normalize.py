"""Robust intensity normalisation (imageio/normalize.py) on a real T2 slice and edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from CohfTSuperResLib.imageio.normalize import MIN_POSITIVE_VOXELS, denormalize, normalize, robust_scale


def test_scale_is_percentile_of_positive_voxels(mni_slices: dict[str, np.ndarray]) -> None:
    t2 = mni_slices["t2"]
    positive = t2[t2 > 0].astype(np.float64)
    assert positive.size >= MIN_POSITIVE_VOXELS and positive.size < t2.size  # real slice has background
    expected = np.percentile(positive, 99.5)
    assert robust_scale(t2) == pytest.approx(expected, rel=1e-12)
    assert robust_scale(torch.from_numpy(t2)) == pytest.approx(expected, rel=1e-12)
    # The percentile ignores background: it differs from that of all voxels.
    assert expected > np.percentile(t2, 99.5)


def test_non_finite_voxels_are_ignored(mni_slices: dict[str, np.ndarray]) -> None:
    t2 = mni_slices["t2"].copy()
    expected = robust_scale(t2)
    t2[0, :5] = [np.nan, np.inf, -np.inf, np.nan, np.inf]
    assert robust_scale(t2) == pytest.approx(expected, rel=1e-12)


def test_a_volume_without_enough_signal_raises_and_says_why() -> None:
    with pytest.raises(ValueError, match="because it is all zero"):
        robust_scale(np.zeros((32, 32), dtype=np.float32))
    with pytest.raises(ValueError, match="because it has no finite voxels"):
        robust_scale(np.full((4, 4), np.nan))
    sparse = np.zeros((32, 32), dtype=np.float32)
    sparse[3, 4] = 1000.0  # one bright voxel: the percentile of |x| over all voxels is 0
    with pytest.raises(ValueError, match="because only 1 of its 1024 voxels are not zero"):
        robust_scale(sparse)
    with pytest.raises(ValueError, match="positive and finite"):
        normalize(np.ones((4, 4)), 0.0)


def test_fallback_to_absolute_values_with_few_positive_voxels() -> None:
    image = -np.arange(1, 401, dtype=np.float64).reshape(20, 20)
    image[0, :3] = 5.0  # 3 positive voxels: fewer than MIN_POSITIVE_VOXELS
    assert robust_scale(image) == pytest.approx(np.percentile(np.abs(image), 99.5))


def test_round_trip_and_background(mni_slices: dict[str, np.ndarray]) -> None:
    t2 = mni_slices["t2"]
    scale = robust_scale(t2)
    normalised = normalize(t2, scale)
    assert normalised.dtype == np.float32 and normalised.shape == t2.shape
    assert np.all(normalised[t2 == 0] == 0)
    assert np.mean(normalised[t2 > 0] <= 1.0) >= 0.99  # 99.5th percentile maps to 1
    np.testing.assert_allclose(denormalize(normalised, scale), t2, rtol=1e-6, atol=1e-6 * scale)
    as_tensor = normalize(torch.from_numpy(t2), scale)
    assert isinstance(as_tensor, torch.Tensor) and as_tensor.dtype == torch.float32
    np.testing.assert_allclose(as_tensor.numpy(), normalised, rtol=1e-6)
    np.testing.assert_allclose(denormalize(as_tensor, scale).numpy(), t2, rtol=1e-6, atol=1e-6 * scale)
