"""Evaluation metrics of the project: PSNR and SSIM (paper Sec. 4.1).

Definitions (computed in float64):
- PSNR = 10 * log10(data_range^2 / MSE), MSE over all pixels; inf when equal.
- SSIM = mean of the SSIM map with an 11 x 11 Gaussian window (sigma 1.5),
  K = (0.01, 0.03), population (not sample) covariances, over the valid region
  (pixels at least 5 from the border), via ``pytorch_msssim``. This equals
  ``skimage.metrics.structural_similarity(pred, target, data_range=...,
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``, which
  filters with reflected borders but then averages only that same interior.

Inputs are numpy arrays or torch tensors: a 2-D slice (H, W), a stack of
slices (N, H, W) or a batch (B, C, H, W); SSIM is averaged over the slices.
H and W must be at least 11. ``data_range`` is the intensity range (max - min
possible value), e.g. 1.0 for normalised images.
"""

from __future__ import annotations

import math

import numpy as np
import torch

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


def _as_batch(array: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Float64 (B, C, H, W) tensor from a 2-D, 3-D (stack) or 4-D numpy array or tensor."""
    tensor = torch.as_tensor(array.detach() if isinstance(array, torch.Tensor) else np.asarray(array))
    tensor = tensor.to(device="cpu", dtype=torch.float64)
    if tensor.dim() == 2:
        return tensor[None, None]
    if tensor.dim() == 3:
        return tensor[:, None]
    if tensor.dim() == 4:
        return tensor
    raise ValueError(f"expected an image of shape (H, W), (N, H, W) or (B, C, H, W), got {tuple(tensor.shape)}")


def _pair(pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor, data_range: float) -> tuple:
    """Validated float64 batches of pred and target."""
    if not (math.isfinite(data_range) and data_range > 0):
        raise ValueError(f"data_range must be positive and finite, got {data_range}")
    pred_t, target_t = _as_batch(pred), _as_batch(target)
    if pred_t.shape != target_t.shape:
        raise ValueError(f"pred and target differ in shape: {tuple(pred_t.shape)} vs {tuple(target_t.shape)}")
    return pred_t, target_t


def psnr(pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor, data_range: float) -> float:
    """Peak signal-to-noise ratio in dB, 10*log10(data_range^2 / MSE); inf for identical inputs."""
    pred_t, target_t = _pair(pred, target, data_range)
    mse = float(torch.mean((pred_t - target_t) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range * data_range / mse)


def ssim(pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor, data_range: float) -> float:
    """Mean structural similarity (Gaussian 11 x 11, sigma 1.5, valid region); images at least 11 x 11."""
    from pytorch_msssim import ssim as _ssim  # imported here: PSNR alone must not need it (e.g. inside Slicer)

    pred_t, target_t = _pair(pred, target, data_range)
    if min(pred_t.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(
            f"SSIM needs images of at least {SSIM_WINDOW} x {SSIM_WINDOW} pixels, got {tuple(pred_t.shape[-2:])}"
        )
    value = _ssim(pred_t, target_t, data_range=data_range, size_average=True, win_size=SSIM_WINDOW, win_sigma=SSIM_SIGMA)
    return float(value)
