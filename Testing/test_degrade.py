"""LR synthesis by k-space truncation (data/degradations.py), checked on a real T2 slice against numpy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from CohfTSuperResLib.data.degradations import crop_to_multiple, degrade, kspace_crop, zero_fill_upsample
from CohfTSuperResLib.imageio.normalize import normalize, robust_scale

SCALES = (2, 3, 4)


@pytest.fixture(scope="module")
def t2(mni_slices: dict[str, np.ndarray]) -> np.ndarray:
    """Real T2 slice normalised to about [0, 1]."""
    return normalize(mni_slices["t2"], robust_scale(mni_slices["t2"]))


def _band_limited_reference(hr: np.ndarray, scale: int) -> np.ndarray:
    """|IFFT(mask * FFT(hr))| with mask = central (H/s) x (W/s) block of the fftshift-ed spectrum (numpy only)."""
    height, width = hr.shape
    low_h, low_w = height // scale, width // scale
    top, left = height // 2 - low_h // 2, width // 2 - low_w // 2
    mask = np.zeros((height, width), dtype=bool)
    mask[top : top + low_h, left : left + low_w] = True
    spectrum = np.fft.fftshift(np.fft.fft2(hr.astype(np.float64)))
    return np.abs(np.fft.ifft2(np.fft.ifftshift(np.where(mask, spectrum, 0))))


@pytest.mark.parametrize("scale", SCALES)
def test_output_shape_on_real_slice(t2: np.ndarray, scale: int) -> None:
    hr = crop_to_multiple(t2, scale)
    assert hr.shape[0] % scale == 0 and hr.shape[1] % scale == 0
    assert t2.shape[0] - hr.shape[0] < scale and t2.shape[1] - hr.shape[1] < scale
    lr = degrade(hr, scale)
    assert isinstance(lr, np.ndarray) and lr.dtype == np.float32
    assert lr.shape == (hr.shape[0] // scale, hr.shape[1] // scale)
    assert np.all(lr >= 0)


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("shape", [(48, 60), (45, 63)])
def test_constant_image_stays_constant(scale: int, shape: tuple[int, int]) -> None:
    hr = crop_to_multiple(np.full(shape, 7.25, dtype=np.float32), scale)
    np.testing.assert_allclose(degrade(hr, scale), 7.25, rtol=1e-5)
    np.testing.assert_allclose(zero_fill_upsample(degrade(hr, scale), scale), 7.25, rtol=1e-5)


@pytest.mark.parametrize("scale", SCALES)
def test_zero_fill_of_kspace_crop_is_band_limited_image(t2: np.ndarray, scale: int) -> None:
    hr = crop_to_multiple(t2, scale)
    reconstruction = zero_fill_upsample(kspace_crop(hr, scale), scale)
    reference = _band_limited_reference(hr, scale)
    assert reconstruction.shape == hr.shape
    assert np.max(np.abs(reconstruction - reference)) <= 1e-4 * reference.max()


@pytest.mark.parametrize("scale", SCALES)
def test_grid_convention_lr_sample_j_at_hr_sample_sj(t2: np.ndarray, scale: int) -> None:
    """The zero-filled image, read at HR samples s*j, gives back the LR samples j (shared origin)."""
    lr = degrade(crop_to_multiple(t2, scale), scale)
    upsampled = zero_fill_upsample(lr, scale)
    np.testing.assert_allclose(upsampled[::scale, ::scale], lr, atol=1e-5 * lr.max())


@pytest.mark.parametrize("scale", SCALES)
def test_brain_mean_intensity_preserved(t2: np.ndarray, scale: int) -> None:
    hr = crop_to_multiple(t2, scale)
    lr = degrade(hr, scale)
    # Whole-image level is exact before the magnitude (DC term kept, scaled by h*w/(H*W)).
    assert abs(complex(kspace_crop(hr, scale).mean()) - float(hr.astype(np.float64).mean())) < 1e-5
    # After the magnitude, the brain (mask eroded past the partial-volume rim) keeps its mean within 1 %.
    brain = ndimage.binary_erosion(hr > 0, iterations=3)[::scale, ::scale]
    assert brain.sum() > 500
    ratio = lr[brain].mean() / hr[::scale, ::scale][brain].mean()
    assert abs(ratio - 1.0) < 0.01


@pytest.mark.parametrize("func", [degrade, kspace_crop])
def test_non_divisible_size_raises(func) -> None:
    with pytest.raises(ValueError, match="not divisible.*crop_to_multiple"):
        func(np.zeros((50, 49), dtype=np.float32), 2)
    with pytest.raises(ValueError, match="not divisible"):
        func(torch.zeros(2, 1, 49, 48), 2)


def test_invalid_scale_raises() -> None:
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="positive integer"):
            degrade(np.zeros((8, 8), dtype=np.float32), bad)
    with pytest.raises(ValueError, match="smaller than the scale"):
        crop_to_multiple(np.zeros((3, 8)), 4)


@pytest.mark.parametrize("scale", SCALES)
def test_numpy_and_torch_agree_with_batch_dims(t2: np.ndarray, scale: int) -> None:
    hr = crop_to_multiple(t2, scale)
    from_numpy = degrade(hr, scale)
    batch = torch.from_numpy(np.stack([hr, 2.0 * hr]))[:, None]  # (2, 1, H, W)
    from_torch = degrade(batch, scale)
    assert isinstance(from_torch, torch.Tensor) and from_torch.dtype == torch.float32
    assert from_torch.shape == (2, 1) + from_numpy.shape
    np.testing.assert_allclose(from_torch[0, 0].numpy(), from_numpy, rtol=0, atol=1e-6)
    np.testing.assert_allclose(from_torch[1, 0].numpy(), 2.0 * from_numpy, rtol=0, atol=2e-6)
    filled = zero_fill_upsample(from_torch, scale)
    assert isinstance(filled, torch.Tensor) and filled.shape == batch.shape
    np.testing.assert_allclose(filled[0, 0].numpy(), zero_fill_upsample(from_numpy, scale), atol=1e-6)


def test_float64_and_integer_inputs() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 1000, size=(32, 24)).astype(np.uint16)
    out_int = degrade(image, 2)
    out_f64 = degrade(image.astype(np.float64), 2)
    assert out_int.dtype == np.float32 and out_f64.dtype == np.float64
    np.testing.assert_allclose(out_int, out_f64, rtol=1e-5, atol=1e-3)
