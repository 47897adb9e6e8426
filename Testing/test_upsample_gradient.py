"""Cubic upsampling on the DFT grid and the gradient-magnitude operator."""

import numpy as np
import pytest
import torch

from CohfTSuperResLib.model.gradient import GRADIENT_EPS, gradient_magnitude
from CohfTSuperResLib.model.upsample import upsample_cubic


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_upsample_keeps_lr_samples_constants_and_ramps(scale):
    lr = torch.rand(2, 1, 7, 9)
    hr = upsample_cubic(lr, scale)
    assert hr.shape == (2, 1, 7 * scale, 9 * scale)
    torch.testing.assert_close(hr[..., ::scale, ::scale], lr)  # LR sample j sits at HR sample s*j
    constant = torch.full((1, 1, 5, 6), 3.5)
    torch.testing.assert_close(upsample_cubic(constant, scale), torch.full((1, 1, 5 * scale, 6 * scale), 3.5))
    ramp = torch.arange(12.0).view(1, 1, 1, 12).expand(1, 1, 6, 12)
    hr_ramp = upsample_cubic(ramp, scale)[0, 0, 2]
    interior = slice(2 * scale, 10 * scale)
    expected = torch.arange(12 * scale, dtype=torch.float32)[interior] / scale
    torch.testing.assert_close(hr_ramp[interior], expected)


def test_upsample_matches_scipy_style_reference_at_half_sample():
    # Independent reference: Keys (a=-0.5) weights at offset 1/2 are (-1, 9, 9, -1) / 16.
    lr = torch.tensor([[[[0.0, 1.0, 4.0, 9.0, 16.0, 25.0]]]]).expand(1, 1, 3, 6)
    hr = upsample_cubic(lr, 2)[0, 0, 1]
    row = lr[0, 0, 0].numpy()
    expected = (-row[1] + 9 * row[2] + 9 * row[3] - row[4]) / 16
    assert hr[5].item() == pytest.approx(expected, abs=1e-5)


def test_gradient_magnitude_of_constant_ramp_and_real_slice(mni_slices):
    constant = torch.full((1, 1, 8, 8), 2.0)
    torch.testing.assert_close(gradient_magnitude(constant), torch.full_like(constant, GRADIENT_EPS**0.5))
    ramp = torch.arange(10.0).view(1, 1, 1, 10).expand(1, 1, 4, 10) * 3.0
    grad = gradient_magnitude(ramp)
    torch.testing.assert_close(grad[..., :-1], torch.full_like(grad[..., :-1], (9.0 + GRADIENT_EPS) ** 0.5))
    image = mni_slices["t2"]
    reference_dx = np.diff(image, axis=1, append=image[:, -1:])
    reference_dy = np.diff(image, axis=0, append=image[-1:, :])
    reference = np.sqrt(reference_dx**2 + reference_dy**2 + GRADIENT_EPS)
    ours = gradient_magnitude(torch.from_numpy(image)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-4)


def test_gradient_magnitude_is_differentiable_and_checks_rank():
    image = torch.rand(1, 1, 6, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(gradient_magnitude, (image,))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        gradient_magnitude(torch.rand(6, 6))
