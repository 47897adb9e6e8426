"""LR volumes and the bicubic baseline on the DFT grid (data/synthetic_volumes.py), shared by evaluate, the demo and Slicer."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch

from CohfTSuperResLib.data.degradations import degrade
from CohfTSuperResLib.inference.geometry import Grid, output_grid
from CohfTSuperResLib.inference.geometry import image_stack
from CohfTSuperResLib.data.synthetic_volumes import bicubic_volume, lr_volume, trim_in_plane
from CohfTSuperResLib.model.upsample import upsample_cubic


def test_synthesised_lr_is_the_kspace_degradation_on_the_dft_grid() -> None:
    rng = np.random.default_rng(0)
    hr = sitk.GetImageFromArray(rng.random((3, 13, 20)).astype(np.float32))  # size (20, 13, 3)
    hr.SetSpacing((0.5, 0.7, 3.0))
    hr.SetOrigin((1.0, -2.0, 5.0))
    hr.SetDirection((0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0))
    for axis, scale in ((2, 2), (0, 3)):
        trimmed = trim_in_plane(hr, scale, axis)
        assert trimmed.GetOrigin() == hr.GetOrigin()
        assert all(n % scale == 0 for a, n in enumerate(trimmed.GetSize()) if a != axis)
        assert trimmed.GetSize()[axis] == hr.GetSize()[axis]
        lr = lr_volume(trimmed, scale, axis)
        assert lr.GetOrigin() == hr.GetOrigin() and lr.GetDirection() == hr.GetDirection()
        assert lr.GetSpacing() == tuple(d if a == axis else d * scale for a, d in enumerate(hr.GetSpacing()))
        np.testing.assert_allclose(image_stack(lr, axis), degrade(image_stack(trimmed, axis), scale), atol=1e-6)


def test_bicubic_volume_is_the_cubic_upsampling_on_the_output_grid() -> None:
    rng = np.random.default_rng(1)
    lr = sitk.GetImageFromArray(rng.random((4, 6, 5)).astype(np.float32))
    lr.SetSpacing((2.0, 1.0, 3.0))
    lr.SetOrigin((4.0, 5.0, 6.0))
    up = bicubic_volume(lr, 2, slice_axis=1)
    assert Grid.of(up) == output_grid(Grid.of(lr), 2, 1)
    stack = image_stack(lr, 1)
    expected = upsample_cubic(torch.from_numpy(np.ascontiguousarray(stack))[:, None], 2)[:, 0].numpy()
    np.testing.assert_allclose(image_stack(up, 1), expected, atol=1e-6)
