"""Guide randomisation of training (data/degradations.py): what each part does to the T1, and that the T2 is untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from CohfTSuperResLib.data.degradations import (
    GUIDE_PARTS,
    GuideRandomisation,
    _rigidly_moved_slice,
    _thick_slices_along,
)
from CohfTSuperResLib.data.patches import PatchSampler, SliceSet


def _head(slices: int = 12, size: int = 48, seed: int = 0) -> np.ndarray:
    """A smooth random 'head': an ellipsoid of structured tissue, zero outside, (slices, size, size) float32."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, n) for n in (slices, size, size)), indexing="ij")
    tissue = 0.6 + 0.3 * np.sin(7 * x + 3 * y) * np.cos(5 * y - 2 * z) + 0.05 * rng.standard_normal(x.shape)
    return np.where(x**2 + y**2 + 0.3 * z**2 < 0.7, tissue, 0.0).astype(np.float32)


def test_parts_can_be_chosen_and_turned_off() -> None:
    assert GuideRandomisation.only(["all"]).active == list(GUIDE_PARTS)
    assert GuideRandomisation.only(["none"]).active == []
    assert GuideRandomisation.only(["dropout", "misregistration"]).active == ["misregistration", "dropout"]
    with pytest.raises(ValueError, match="unknown guide randomisation"):
        GuideRandomisation.only(["blur"])
    stack = _head()
    off = GuideRandomisation.only([])
    np.testing.assert_array_equal(off.apply(stack, 5, (1.0, 1.0, 1.0), np.random.default_rng(0)), stack[5])


@pytest.mark.parametrize("shift, expected", [((0.0, 0.0, 2.0), (0, 0, 2)), ((0.0, -3.0, 0.0), (0, -3, 0)),
                                             ((1.0, 0.0, 0.0), (1, 0, 0))])
def test_a_whole_voxel_shift_moves_the_content_by_that_many_voxels(shift: tuple, expected: tuple) -> None:
    stack = _head()
    radius = 4
    slab = torch.from_numpy(stack[6 - radius:6 + radius + 1])[None, None]
    moved = _rigidly_moved_slice(slab, radius, (1.0, 1.0, 1.0), (np.eye(3), np.asarray(shift)))
    dz, dy, dx = expected
    source = np.roll(stack[6 - dz], (dy, dx), axis=(0, 1))
    inner = (slice(4, -4), slice(4, -4))  # away from the zero-filled edge
    np.testing.assert_allclose(moved[inner], source[inner], atol=1e-5)


def test_spacing_turns_millimetres_into_voxels() -> None:
    stack = _head()
    slab = torch.from_numpy(stack[2:11])[None, None]
    moved = _rigidly_moved_slice(slab, 4, (1.0, 2.0, 2.0), (np.eye(3), np.array([0.0, 0.0, 4.0])))  # 4 mm = 2 voxels
    np.testing.assert_allclose(moved[4:-4, 4:-4], np.roll(stack[6], 2, axis=1)[4:-4, 4:-4], atol=1e-5)


def test_a_rotation_moves_the_edges_and_keeps_the_centre() -> None:
    stack = _head(slices=20)
    slab = torch.from_numpy(stack)[None, None]
    angle = np.radians(3.0)
    turn = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    moved = _rigidly_moved_slice(slab, 10, (1.0, 1.0, 1.0), (turn, np.zeros(3)))
    change = np.abs(moved - stack[10])
    ring = np.ones(change.shape, bool)
    ring[8:-8, 8:-8] = False
    assert change[21:27, 21:27].mean() < 0.25 * change[ring & (stack[10] > 0)].mean()  # the centre stays ...
    assert change.max() > 0.05  # ... away from it the content moves


def test_thick_slices_average_and_keep_constant_images() -> None:
    constant = torch.full((1, 1, 9, 6, 6), 0.7)
    np.testing.assert_allclose(_thick_slices_along(constant, 3, 1, 0).numpy(), 0.7, atol=1e-6)
    ramp = torch.arange(12, dtype=torch.float32).view(1, 1, 1, 1, 12).expand(1, 1, 2, 3, 12).contiguous()
    thick = _thick_slices_along(ramp, 4, 0, 2)  # box averages of a ramp sit at their centres: the ramp comes back
    np.testing.assert_allclose(thick[0, 0, 0, 0, 2:10].numpy(), np.arange(2, 10), atol=1e-5)
    rough = torch.from_numpy(_head())[None, None]
    assert float((_thick_slices_along(rough, 4, 2, 1) - rough).abs().mean()) > 0.01  # detail is lost


def test_dropout_empties_the_guide_and_intensity_keeps_its_order() -> None:
    stack = _head()
    dropped = GuideRandomisation(misregistration=0, resolution=0, intensity=0, dropout=1.0)
    assert not np.any(dropped.apply(stack, 5, (1.0, 1.0, 1.0), np.random.default_rng(1)))
    remap = GuideRandomisation(misregistration=0, resolution=0, intensity=1.0, dropout=0, max_noise=0.0)
    out = remap.apply(stack, 5, (1.0, 1.0, 1.0), np.random.default_rng(2))
    tissue = stack[5] > 0
    assert np.all(out[~tissue] == 0) and np.all(np.isfinite(out))
    assert not np.allclose(out[tissue], stack[5][tissue], atol=0.02)
    ranks = [np.argsort(np.argsort(x[tissue])) for x in (out, stack[5])]
    assert np.corrcoef(*ranks)[0, 1] > 0.9  # a monotone curve and a smooth field keep the order, almost


def test_sampler_randomises_only_the_guide() -> None:
    head = _head(size=64)
    data = SliceSet(2)
    data.add("head", head, head.copy(), (1.0, 1.0, 1.0))  # a T1 equal to the T2: an aligned guide is the HR patch
    guide = GuideRandomisation(misregistration=1.0, resolution=0, intensity=0, dropout=0)
    lr, hr, t1 = PatchSampler(data, 12, 6, seed=3, augment=False, guide=guide).batch(0)
    for k in range(lr.shape[0]):  # each (LR, HR) patch is where it was in the data: the T2 pair is untouched
        hr_patch, lr_patch = hr[k, 0].numpy(), lr[k, 0].numpy()
        where = [(n, y, x) for n in range(head.shape[0]) for y in range(0, 64 - 24 + 1, 2) for x in range(0, 64 - 24 + 1, 2)
                 if np.array_equal(data.hr[0][n, y:y + 24, x:x + 24], hr_patch)]
        assert where
        n, y, x = where[0]
        np.testing.assert_array_equal(data.lr[0][n, y // 2:y // 2 + 12, x // 2:x // 2 + 12], lr_patch)
    assert np.abs(t1.numpy() - hr.numpy()).mean() > 0.01  # while the guide moved
    _lr, hr_plain, t1_plain = PatchSampler(data, 12, 6, seed=3, augment=False).batch(0)
    np.testing.assert_array_equal(t1_plain.numpy(), hr_plain.numpy())


def test_parallel_slices_thicken_the_t1_along_the_named_axis_only() -> None:
    rows = np.sin(np.linspace(0, 40, 48))[:, None] * np.ones((1, 48))  # varies along rows only, period 7.5 voxels
    columns = rows.T.copy()  # varies along columns only
    only = GuideRandomisation(**{part: 0.0 for part in GUIDE_PARTS} | {"parallel_slices": 1.0})
    spacing = (1.0, 1.0, 1.0)
    for image, changed in ((rows, True), (columns, False)):
        stack = np.repeat(image[None].astype(np.float32), 9, axis=0)
        thick = only.apply(stack, 4, spacing, np.random.default_rng(3), slice_axis=1)
        untouched = only.apply(stack, 4, spacing, np.random.default_rng(3))  # no T2 slice axis: a no-op
        np.testing.assert_array_equal(untouched, stack[4])
        if changed:
            assert np.abs(thick - image).mean() > 0.1  # box averages of 2-5 voxels flatten the waves
        else:
            np.testing.assert_allclose(thick, image, atol=1e-5)


def test_in_plane_sampling_thickens_the_t1_across_its_slices() -> None:
    """In-plane the T2's slice axis is the stack's: parallel slices average each T1 slice with its neighbours."""
    head = _head(slices=16, size=40)
    along = head * (1 + 0.5 * np.sin(np.arange(16) * 1.3))[:, None, None].astype(np.float32)  # slice to slice
    only = GuideRandomisation(**{part: 0.0 for part in GUIDE_PARTS} | {"parallel_slices": 1.0})
    for volume, changed in ((along, True), (np.repeat(head[8:9], 16, axis=0), False)):
        data = SliceSet(2)
        data.add("head", volume, volume.copy(), (1.0, 1.0, 1.0))  # a T1 equal to the T2: untouched, it is the HR
        _lr, hr, t1 = PatchSampler(data, 12, 6, seed=3, augment=False, guide=only).batch(0)
        difference = float(np.abs(t1.numpy() - hr.numpy()).mean())
        assert difference > 0.02 if changed else difference < 1e-5
