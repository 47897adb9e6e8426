"""Training slices and patches (data/patches.py): brain slices, aligned patches, augmentation, seeded sampling."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from CohfTSuperResLib.data.degradations import IntensityAugmentation, degrade
from CohfTSuperResLib.inference.geometry import image_stack
from CohfTSuperResLib.data.patches import PatchSampler, SliceSet, brain_slices, crop_patch
from CohfTSuperResLib.imageio.normalize import robust_scale

# ----------------------------------------------------------------------------- brain slices


def test_brain_slices_threshold() -> None:
    stack = np.zeros((4, 20, 20), dtype=np.float32)
    stack[1].flat[:16] = 0.5   # 4% tissue: not brain
    stack[2].flat[:20] = 0.5   # 5%: brain
    stack[3].flat[:200] = 0.05  # half the slice, but below the tissue level
    np.testing.assert_array_equal(brain_slices(stack), [2])


def test_brain_slices_on_a_real_volume(open_ms: Path) -> None:
    t2 = sitk.ReadImage(str(open_ms / "mni" / "patient07" / "t2.nii.gz"), sitk.sitkFloat32)
    stack = image_stack(t2, 2)
    brain = brain_slices(stack / robust_scale(stack))
    assert np.all(np.diff(brain) == 1)  # one contiguous block of axial slices
    assert 0 < brain[0] and brain[-1] < stack.shape[0] - 1  # the empty slices at both ends are dropped
    assert 100 < brain.size < stack.shape[0]
    assert 90 in brain


# ----------------------------------------------------------------------------- patches


AUGMENTATIONS = list(itertools.product((False, True), repeat=3))


def _dihedral(x: np.ndarray, flip_y: bool, flip_x: bool, transpose: bool) -> np.ndarray:
    if flip_y:
        x = x[::-1]
    if flip_x:
        x = x[:, ::-1]
    return x.T if transpose else x


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("augmentation", AUGMENTATIONS)
def test_crop_patch_keeps_the_grid_relation(scale: int, augmentation: tuple[bool, bool, bool]) -> None:
    """HR built so that HR sample s*j is LR sample j: every augmented patch keeps lr == hr[::s, ::s]."""
    rng = np.random.default_rng(scale)
    lr = rng.random((9, 11)).astype(np.float32)
    hr = rng.random((9 * scale, 11 * scale)).astype(np.float32)
    hr[::scale, ::scale] = lr
    t1 = -hr
    top, left, size = 2, 3, 5
    lr_patch, hr_patch, t1_patch = crop_patch(lr, hr, t1, scale, top, left, size, *augmentation)
    assert lr_patch.shape == (size, size) and hr_patch.shape == (scale * size,) * 2 == t1_patch.shape
    np.testing.assert_array_equal(hr_patch[::scale, ::scale], lr_patch)
    np.testing.assert_array_equal(t1_patch, -hr_patch)
    np.testing.assert_array_equal(lr_patch, _dihedral(lr[top:top + size, left:left + size], *augmentation))
    if not any(augmentation):
        np.testing.assert_array_equal(hr_patch, hr[scale * top:scale * (top + size), scale * left:scale * (left + size)])


def test_crop_patch_augmentations_are_distinct_and_guarded() -> None:
    rng = np.random.default_rng(0)
    lr, hr = rng.random((8, 8)), rng.random((16, 16))
    patches = {crop_patch(lr, hr, hr, 2, 1, 1, 4, *a)[1].tobytes() for a in AUGMENTATIONS}
    assert len(patches) == 8
    with pytest.raises(ValueError, match="top and left"):
        crop_patch(lr, hr, hr, 2, 0, 1, 4, True, False, False)


def _aligned_set(scale: int, count: int = 3, size: int = 20) -> SliceSet:
    """A SliceSet whose LR is the HR's every s-th sample (so alignment is checkable) and T1 = HR + 10."""
    rng = np.random.default_rng(1)
    data = SliceSet(scale)
    for volume in range(2):
        hr = rng.random((count + volume, scale * size, scale * size)).astype(np.float32)
        data.names.append(f"v{volume}")
        data.hr.append(hr)
        data.t1.append(hr + 10)
        data.lr.append(np.ascontiguousarray(hr[:, ::scale, ::scale]))
    return data


def test_patch_sampler_is_a_function_of_seed_rank_iteration() -> None:
    data = _aligned_set(2)
    first = PatchSampler(data, 6, 4, seed=3, rank=0).batch(17)
    again = PatchSampler(data, 6, 4, seed=3, rank=0).batch(17)
    for a, b in zip(first, again):
        assert torch_equal(a, b)
    assert [tuple(x.shape) for x in first] == [(4, 1, 6, 6), (4, 1, 12, 12), (4, 1, 12, 12)]
    for other in (PatchSampler(data, 6, 4, seed=3, rank=1).batch(17), PatchSampler(data, 6, 4, seed=4).batch(17),
                  PatchSampler(data, 6, 4, seed=3).batch(18)):
        assert not torch_equal(first[1], other[1])


def test_patch_sampler_batches_are_aligned() -> None:
    for scale in (2, 3):
        sampler = PatchSampler(_aligned_set(scale), 5, 8, seed=0)
        for iteration in range(5):
            lr, hr, t1 = sampler.batch(iteration)
            np.testing.assert_array_equal(hr[..., ::scale, ::scale].numpy(), lr.numpy())
            np.testing.assert_allclose(t1.numpy(), hr.numpy() + 10, atol=1e-5)


def test_patch_sampler_rejects_small_slices() -> None:
    with pytest.raises(ValueError, match="smaller than the patch"):
        PatchSampler(_aligned_set(2, size=6), 6, 2)
    with pytest.raises(ValueError, match="no training slices"):
        PatchSampler(SliceSet(2), 6, 2)


def torch_equal(a, b) -> bool:
    return a.shape == b.shape and bool((a == b).all())


def test_patches_are_whole_slices_when_the_slices_are_smaller() -> None:
    data = _aligned_set(2, size=20)
    sampler = PatchSampler(data, 64, 3, seed=0)
    assert sampler.patch_shape == (19, 19)
    rect = SliceSet(3)
    hr = np.random.default_rng(0).random((2, 3 * 12, 3 * 17)).astype(np.float32)
    rect.names, rect.hr, rect.t1, rect.lr = ["r"], [hr], [hr + 10], [np.ascontiguousarray(hr[:, ::3, ::3])]
    sampler = PatchSampler(rect, 64, 4, seed=1)
    assert sampler.patch_shape == (11, 16)
    for iteration in range(6):  # no transpose of a rectangle; the grid relation holds for the flips
        lr, hr_patch, t1 = sampler.batch(iteration)
        assert tuple(lr.shape) == (4, 1, 11, 16) and tuple(hr_patch.shape) == (4, 1, 33, 48)
        np.testing.assert_array_equal(hr_patch[..., ::3, ::3].numpy(), lr.numpy())


def test_crop_patch_rectangular_and_no_transpose() -> None:
    rng = np.random.default_rng(2)
    lr, hr = rng.random((9, 12)), rng.random((18, 24))
    lr_patch, hr_patch, _ = crop_patch(lr, hr, hr, 2, 1, 2, (5, 7), True, True, False)
    assert lr_patch.shape == (5, 7) and hr_patch.shape == (10, 14)
    with pytest.raises(ValueError, match="square"):
        crop_patch(lr, hr, hr, 2, 1, 1, (5, 7), False, False, True)


def test_degrade_adds_kspace_noise() -> None:
    rng = np.random.default_rng(0)
    hr = rng.random((2, 40, 36)).astype(np.float32) + 1.0
    noisy = degrade(hr, 2, 0.05, np.random.default_rng(1))
    difference = noisy - degrade(hr, 2)
    assert 0.03 < float(difference.std()) < 0.07  # magnitude of signal + complex noise: about the noise std


def test_intensity_augmentation_keeps_lr_and_hr_consistent() -> None:
    rng = np.random.default_rng(3)
    hr = (rng.random((48, 40)) + 0.5).astype(np.float32)
    t1 = (rng.random((48, 40)) + 0.5).astype(np.float32)
    off = IntensityAugmentation(chance=0.0)
    lr, hr_out, t1_out = off.apply(hr, t1, 2, np.random.default_rng(0))
    np.testing.assert_array_equal(hr_out, hr)
    np.testing.assert_array_equal(t1_out, t1)
    np.testing.assert_allclose(lr, degrade(hr, 2), atol=1e-6)
    quiet = IntensityAugmentation(chance=1.0, noise_max=0.0)
    lr, hr_out, t1_out = quiet.apply(hr, t1, 2, np.random.default_rng(0))
    assert np.abs(hr_out - hr).mean() > 0.01 and np.abs(t1_out - t1).mean() > 0.01
    assert np.abs((hr_out - hr) - (t1_out - t1)).mean() > 0.01  # T2 and T1 are changed independently
    np.testing.assert_allclose(lr, degrade(hr_out, 2), atol=1e-6)  # the LR is made from the augmented HR
    again = quiet.apply(hr, t1, 2, np.random.default_rng(0))
    np.testing.assert_array_equal(again[1], hr_out)


def test_sampler_with_intensity_augmentation_is_seeded_and_aligned_to_its_hr() -> None:
    data = _aligned_set(2)
    sampler = PatchSampler(data, 8, 4, seed=5, intensity=IntensityAugmentation(chance=1.0, noise_max=0.0))
    first, again = sampler.batch(3), sampler.batch(3)
    for a, b in zip(first, again):
        assert torch_equal(a, b)
    lr, hr, _t1 = first
    plain = PatchSampler(data, 8, 4, seed=5).batch(3)
    assert not torch_equal(hr, plain[1])  # augmented
