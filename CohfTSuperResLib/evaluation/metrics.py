"""Evaluation metrics of the project: PSNR and SSIM (paper Sec. 4.1).

Definitions (computed in float64):
- PSNR = 10 * log10(data_range^2 / MSE), MSE over all pixels; inf when equal.
- SSIM = mean of the SSIM map with an 11 x 11 Gaussian window (sigma 1.5),
  K = (0.01, 0.03), population (not sample) covariances, over the valid region
  (pixels at least 5 from the border), via ``pytorch_msssim``. This equals
  ``skimage.metrics.structural_similarity(pred, target, data_range=...,
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``, which
  filters with reflected borders but then averages only that same interior.

PSNR needs numpy alone (the 3D Slicer module's self-test uses it in Slicer's torch-free process). Inputs are
numpy arrays or torch tensors: a 2-D slice (H, W), a stack of
slices (N, H, W) or a batch (B, C, H, W); SSIM is averaged over the slices.
H and W must be at least 11. ``data_range`` is the intensity range (max - min
possible value), e.g. 1.0 for normalised images.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


def _as_array(image: Any) -> np.ndarray:
    """A float64 numpy copy of a numpy array or a torch tensor (on any device), without importing torch."""
    if type(image).__module__.startswith("torch"):
        image = image.detach().cpu().numpy()
    return np.asarray(image, dtype=np.float64)


def _pair(pred: Any, target: Any, data_range: float) -> tuple[np.ndarray, np.ndarray]:
    """Validated float64 (B, C, H, W) arrays of pred and target."""
    if not (math.isfinite(data_range) and data_range > 0):
        raise ValueError(f"data_range must be positive and finite, got {data_range}")
    arrays = []
    for image in (pred, target):
        array = _as_array(image)
        if array.ndim not in (2, 3, 4):
            raise ValueError(f"expected an image of shape (H, W), (N, H, W) or (B, C, H, W), got {array.shape}")
        arrays.append(array.reshape((-1, 1, *array.shape[-2:])) if array.ndim < 4 else array)
    if arrays[0].shape != arrays[1].shape:
        raise ValueError(f"pred and target differ in shape: {arrays[0].shape} vs {arrays[1].shape}")
    return arrays[0], arrays[1]


def psnr(pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor, data_range: float) -> float:
    """Peak signal-to-noise ratio in dB, 10*log10(data_range^2 / MSE); inf for identical inputs (numpy only)."""
    pred_a, target_a = _pair(pred, target, data_range)
    mse = float(np.mean((pred_a - target_a) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range * data_range / mse)


def ssim(pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor, data_range: float) -> float:
    """Mean structural similarity (Gaussian 11 x 11, sigma 1.5, valid region); images at least 11 x 11."""
    import torch  # imported here, with pytorch_msssim: PSNR alone must need neither (e.g. inside Slicer)
    from pytorch_msssim import ssim as _ssim

    pred_a, target_a = _pair(pred, target, data_range)
    if min(pred_a.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(
            f"SSIM needs images of at least {SSIM_WINDOW} x {SSIM_WINDOW} pixels, got {tuple(pred_a.shape[-2:])}"
        )
    pred_t, target_t = torch.from_numpy(pred_a), torch.from_numpy(target_a)
    value = _ssim(pred_t, target_t, data_range=data_range, size_average=True, win_size=SSIM_WINDOW,
                  win_sigma=SSIM_SIGMA)
    return float(value)
