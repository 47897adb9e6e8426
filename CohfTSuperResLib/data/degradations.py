"""Synthesis of low-resolution (LR) MR slices from high-resolution (HR) ones by k-space truncation.

This is the LR synthesis the paper follows (Sec. 4.1, after MTrans): take the
2-D FFT of an HR slice of size (H, W), keep only the central (H/s) x (W/s)
block of k-space, inverse-FFT it and take the magnitude. The result is scaled
by (h*w)/(H*W) so that the intensity level is preserved: a constant image
stays exactly that constant.

Grid convention (the MR reconstruction / DFT one, shared with ``upsample.py``):
the LR voxel j sits at the HR voxel s*j. Hence an LR volume made from an HR one
keeps the HR origin and has its in-plane spacing multiplied by s, and a
super-resolved output keeps the LR origin with its in-plane spacing divided by
s. (``zero_fill_upsample`` obeys the same convention: its sample s*j equals
the LR sample j.)

All functions work on torch tensors of shape (..., H, W) (any leading batch
dimensions) and also accept numpy arrays, returning the same type. The
k-space block is centred with the fftshift convention: after ``fftshift`` the
zero frequency sits at index N//2, and the kept block starts at N//2 - n//2.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def _check_scale(scale: int) -> int:
    """Return scale as an int, raising ValueError unless it is a positive integer."""
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"scale factor must be a positive integer, got {scale!r}")
    return int(scale)


def _to_tensor(array: np.ndarray | torch.Tensor) -> torch.Tensor:
    """View a numpy array or tensor as a floating (or complex) torch tensor with at least 2 dims."""
    tensor = torch.from_numpy(np.ascontiguousarray(array)) if isinstance(array, np.ndarray) else array
    if tensor.dim() < 2:
        raise ValueError(f"expected an image of shape (..., H, W), got shape {tuple(tensor.shape)}")
    if not (tensor.is_floating_point() or tensor.is_complex()):
        tensor = tensor.to(torch.float32)
    elif tensor.dtype in (torch.float16, torch.bfloat16):
        tensor = tensor.to(torch.float32)
    return tensor


def _like_input(result: torch.Tensor, original: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Return result as a numpy array when the original input was one."""
    if isinstance(original, np.ndarray):
        return result.detach().cpu().numpy()
    return result


def _block_start(full: int, part: int) -> int:
    """Index where the centred block of length part starts in a fftshift-ed axis of length full."""
    return full // 2 - part // 2


def crop_to_multiple(array: ArrayT, scale: int) -> ArrayT:
    """Trim trailing rows/columns of the last two axes so both are divisible by scale."""
    scale = _check_scale(scale)
    if array.ndim < 2:
        raise ValueError(f"expected an image of shape (..., H, W), got shape {tuple(array.shape)}")
    height, width = array.shape[-2:]
    keep_h, keep_w = height - height % scale, width - width % scale
    if keep_h == 0 or keep_w == 0:
        raise ValueError(f"image of size {height} x {width} is smaller than the scale factor {scale}")
    return array[..., :keep_h, :keep_w]


def kspace_crop(hr: ArrayT, scale: int) -> ArrayT:
    """Complex LR image (..., H/s, W/s): the central k-space block of hr, inverse-FFT-ed, level-preserving.

    Raises ValueError when H or W is not divisible by scale (see ``crop_to_multiple``).
    """
    scale = _check_scale(scale)
    image = _to_tensor(hr)
    height, width = image.shape[-2:]
    if height % scale or width % scale:
        raise ValueError(
            f"image size {height} x {width} is not divisible by the scale factor {scale}; "
            f"trim it first with crop_to_multiple(image, {scale})"
        )
    low_h, low_w = height // scale, width // scale
    spectrum = torch.fft.fftshift(torch.fft.fft2(image), dim=(-2, -1))
    top, left = _block_start(height, low_h), _block_start(width, low_w)
    block = spectrum[..., top : top + low_h, left : left + low_w]
    low = torch.fft.ifft2(torch.fft.ifftshift(block, dim=(-2, -1)))
    return _like_input(low * ((low_h * low_w) / (height * width)), hr)


def degrade(hr: ArrayT, scale: int) -> ArrayT:
    """The paper's LR synthesis: magnitude of ``kspace_crop(hr, scale)``, shape (..., H/s, W/s), real."""
    low = kspace_crop(_to_tensor(hr), scale)
    return _like_input(low.abs(), hr)


def zero_fill_upsample(lr: ArrayT, scale: int) -> ArrayT:
    """Zero-filled k-space interpolation baseline: (..., h, w) -> magnitude image (..., s*h, s*w).

    The FFT of lr (real or complex) is placed, centred, in an all-zero (s*h, s*w)
    spectrum, inverse-FFT-ed and its magnitude taken; the intensity level is kept.
    """
    scale = _check_scale(scale)
    image = _to_tensor(lr)
    low_h, low_w = image.shape[-2:]
    height, width = scale * low_h, scale * low_w
    block = torch.fft.fftshift(torch.fft.fft2(image), dim=(-2, -1))
    spectrum = block.new_zeros(block.shape[:-2] + (height, width))
    top, left = _block_start(height, low_h), _block_start(width, low_w)
    spectrum[..., top : top + low_h, left : left + low_w] = block
    high = torch.fft.ifft2(torch.fft.ifftshift(spectrum, dim=(-2, -1)))
    return _like_input((high * ((height * width) / (low_h * low_w))).abs(), lr)
