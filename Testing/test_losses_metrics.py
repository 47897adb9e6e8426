"""PSNR / SSIM metrics against independent references, and the Cohf-T training loss (Eq. 1-2)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from CohfTSuperResLib.data.degradations import crop_to_multiple, degrade
from CohfTSuperResLib.model.gradient import gradient_magnitude
from CohfTSuperResLib.training.losses import CohfTLoss
from CohfTSuperResLib.evaluation.metrics import psnr, ssim
from CohfTSuperResLib.imageio.normalize import normalize, robust_scale
from CohfTSuperResLib.model.upsample import upsample_cubic


def _skimage_ssim(pred: np.ndarray, target: np.ndarray, data_range: float) -> float:
    """Reference SSIM: Gaussian 11 x 11 (sigma 1.5, truncate 3.5), population covariance, float64."""
    return float(
        structural_similarity(
            pred.astype(np.float64),
            target.astype(np.float64),
            data_range=data_range,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
    )


@pytest.fixture(scope="module")
def t2(mni_slices: dict[str, np.ndarray]) -> np.ndarray:
    return normalize(mni_slices["t2"], robust_scale(mni_slices["t2"]))


def _bicubic_reconstruction(hr: np.ndarray, scale: int) -> np.ndarray:
    """Degrade by k-space truncation, then cubic-upsample back to the HR grid."""
    lr = torch.from_numpy(degrade(hr, scale))[None, None]
    return upsample_cubic(lr, scale)[0, 0].numpy()


# ----------------------------------------------------------------------------- metrics


@pytest.mark.parametrize("scale", (2, 3, 4))
def test_psnr_matches_numpy_formula(t2: np.ndarray, scale: int) -> None:
    hr = crop_to_multiple(t2, scale)
    pred = _bicubic_reconstruction(hr, scale)
    mse = np.mean((pred.astype(np.float64) - hr.astype(np.float64)) ** 2)
    for data_range in (1.0, float(hr.max() - hr.min())):
        expected = 10.0 * np.log10(data_range**2 / mse)
        assert psnr(pred, hr, data_range) == pytest.approx(expected, abs=1e-9)
        assert psnr(torch.from_numpy(pred), torch.from_numpy(hr), data_range) == pytest.approx(expected, abs=1e-9)
    assert psnr(hr, hr, 1.0) == math.inf


@pytest.mark.parametrize("scale", (2, 3, 4))
def test_ssim_matches_skimage_on_real_slices(t2: np.ndarray, scale: int) -> None:
    # pytorch_msssim filters with a 'valid' convolution; skimage filters the whole image with
    # reflected borders but then crops (win_size - 1) // 2 = 5 pixels per side before averaging.
    # Both therefore average the SSIM map over the same interior pixels with the same normalised
    # 11-tap Gaussian (sigma 1.5; skimage radius int(3.5 * 1.5 + 0.5) = 5), so they agree to
    # rounding: measured |difference| <= 4e-7 here (pytorch_msssim builds its window in float32).
    hr = crop_to_multiple(t2, scale)
    pred = _bicubic_reconstruction(hr, scale)
    for data_range in (1.0, 2.0):
        expected = _skimage_ssim(pred, hr, data_range)
        assert ssim(pred, hr, data_range) == pytest.approx(expected, abs=1e-5)
        assert ssim(torch.from_numpy(pred), torch.from_numpy(hr), data_range) == pytest.approx(expected, abs=1e-5)
    assert ssim(hr, hr, 1.0) == pytest.approx(1.0, abs=1e-12)


def test_ssim_matches_skimage_for_dissimilar_images(mni_slices: dict[str, np.ndarray]) -> None:
    t1 = normalize(mni_slices["t1"], robust_scale(mni_slices["t1"]))
    t2 = normalize(mni_slices["t2"], robust_scale(mni_slices["t2"]))
    expected = _skimage_ssim(t1, t2, 1.0)
    assert expected < 0.9
    assert ssim(t1, t2, 1.0) == pytest.approx(expected, abs=1e-5)


def test_metrics_on_stacks_average_slices() -> None:
    rng = np.random.default_rng(1)
    target = rng.random((3, 24, 20))
    pred = target + 0.05 * rng.standard_normal(target.shape)
    per_slice = [_skimage_ssim(pred[i], target[i], 1.0) for i in range(3)]
    assert ssim(pred, target, 1.0) == pytest.approx(np.mean(per_slice), abs=1e-5)
    assert ssim(torch.from_numpy(pred)[:, None], torch.from_numpy(target)[:, None], 1.0) == pytest.approx(
        np.mean(per_slice), abs=1e-5
    )
    assert psnr(pred, target, 1.0) == pytest.approx(10 * np.log10(1.0 / np.mean((pred - target) ** 2)))


def test_metrics_reject_bad_inputs() -> None:
    with pytest.raises(ValueError, match="at least 11"):
        ssim(np.zeros((10, 30)), np.zeros((10, 30)), 1.0)
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(np.zeros((12, 12)), np.zeros((12, 13)), 1.0)
    with pytest.raises(ValueError, match="data_range"):
        psnr(np.zeros((12, 12)), np.zeros((12, 12)), 0.0)


# ----------------------------------------------------------------------------- loss


def _smooth_images(batch: int = 2, size: tuple[int, int] = (32, 40), seed: int = 0) -> torch.Tensor:
    """Smooth random (B, 1, H, W) images in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 1, size[0] // 4, size[1] // 4, generator=generator)
    image = torch.nn.functional.interpolate(coarse, size=size, mode="bilinear", align_corners=False)
    return image.clamp(0, 1)


@pytest.mark.parametrize("alpha, lam", [(0.95, 0.5), (0.8, 2.0)])
def test_loss_of_identical_inputs_is_closed_form(alpha: float, lam: float) -> None:
    hr = _smooth_images()
    loss = CohfTLoss(alpha=alpha, lam=lam)
    value = loss(hr.clone(), gradient_magnitude(hr), hr)
    # MSE = 0 and SSIM = 1 for both terms: L = -(1 - alpha) + lam * (-(1 - alpha)).
    assert float(value) == pytest.approx(-(1 - alpha) * (1 + lam), abs=1e-6)


def test_default_weights_match_paper() -> None:
    loss = CohfTLoss()
    assert (loss.alpha, loss.lam, loss.data_range) == (0.95, 0.5, 1.0)
    hr = _smooth_images()
    assert float(loss(hr, gradient_magnitude(hr), hr)) == pytest.approx(-0.075, abs=1e-6)


def test_loss_decreases_toward_target() -> None:
    hr = _smooth_images(seed=1)
    hr_grad = gradient_magnitude(hr)
    noise = 0.2 * torch.randn(hr.shape, generator=torch.Generator().manual_seed(2))
    loss = CohfTLoss()
    values = [float(loss(hr + t * noise, hr_grad + t * noise.abs(), hr)) for t in (1.0, 0.5, 0.25, 0.1, 0.0)]
    assert all(later < earlier for earlier, later in zip(values, values[1:])), values


def test_backward_gives_finite_gradients() -> None:
    hr = _smooth_images(seed=3)
    sr = (hr + 0.1 * torch.randn(hr.shape, generator=torch.Generator().manual_seed(4))).requires_grad_(True)
    sr_grad = torch.rand(hr.shape, generator=torch.Generator().manual_seed(5)).requires_grad_(True)
    CohfTLoss()(sr, sr_grad, hr).backward()
    for tensor in (sr, sr_grad):
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all() and tensor.grad.abs().sum() > 0


def test_parts_add_up_with_documented_weights() -> None:
    hr = _smooth_images(seed=6)
    sr = (hr + 0.05 * torch.randn(hr.shape, generator=torch.Generator().manual_seed(7))).clamp(0, 1)
    sr_grad = gradient_magnitude(sr)
    loss = CohfTLoss(alpha=0.9, lam=0.3)
    parts = loss.components(sr, sr_grad, hr)
    hr_grad = gradient_magnitude(hr)
    assert float(parts["mse_image"]) == pytest.approx(float(torch.mean((sr - hr) ** 2)), rel=1e-6)
    assert float(parts["mse_grad"]) == pytest.approx(float(torch.mean((sr_grad - hr_grad) ** 2)), rel=1e-6)
    # Loss SSIM uses the metric's definition (cross-checked there against skimage).
    assert float(parts["ssim_image"]) == pytest.approx(ssim(sr[:, 0].double(), hr[:, 0].double(), 1.0), abs=1e-5)
    assert float(parts["ssim_grad"]) == pytest.approx(ssim(sr_grad[:, 0].double(), hr_grad[:, 0].double(), 1.0), abs=1e-5)
    assert float(parts["loss_image"]) == pytest.approx(0.9 * float(parts["mse_image"]) - 0.1 * float(parts["ssim_image"]))
    assert float(parts["loss_grad"]) == pytest.approx(0.9 * float(parts["mse_grad"]) - 0.1 * float(parts["ssim_grad"]))
    expected_total = float(parts["loss_image"]) + 0.3 * float(parts["loss_grad"])
    assert float(parts["total"]) == pytest.approx(expected_total, rel=1e-6)
    assert float(loss(sr, sr_grad, hr)) == pytest.approx(expected_total, rel=1e-6)


def test_loss_rejects_small_or_mismatched_inputs() -> None:
    loss = CohfTLoss()
    small = torch.rand(1, 1, 10, 32)
    with pytest.raises(ValueError, match="at least 11"):
        loss(small, small, small)
    hr = torch.rand(1, 1, 16, 16)
    with pytest.raises(ValueError, match="same"):
        loss(hr, torch.rand(1, 1, 16, 15), hr)
    with pytest.raises(ValueError, match="alpha"):
        CohfTLoss(alpha=1.5)
