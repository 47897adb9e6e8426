"""Cubic (Keys, a = -0.5) upsampling by an integer factor on the DFT grid.

Grid convention of the whole project (the MR reconstruction / DFT one): the LR
sample j sits at the HR sample s*j, so both share their first sample (origin)
and the HR grid has spacing / s. An HR sample at index x therefore reads the
LR signal at the fractional index x / s. This is the bicubic baseline and the
global skip of the network; it is one strided transposed convolution with a
fixed separable kernel, so it exports to ONNX and runs on any device.
Borders replicate the edge sample.

The through-plane mode uses the other grid of thin slices: those that tile each thick slice
(``upsample_slices_cubic``), thin slice j of thick slice k centred at k + (j - (n-1)/2) / n thick
slices, so the thin slices of one thick slice share its centre.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

KEYS_A = -0.5


def _keys_weight(t: torch.Tensor) -> torch.Tensor:
    """Keys cubic convolution kernel evaluated at offsets t (in LR samples)."""
    t = t.abs()
    a = KEYS_A
    near = (a + 2) * t**3 - (a + 3) * t**2 + 1
    far = a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a
    return torch.where(t <= 1, near, torch.where(t < 2, far, torch.zeros_like(t)))


def cubic_kernel_1d(scale: int) -> torch.Tensor:
    """Polyphase kernel h[t] = w(t / scale) for t = -(2s-1) .. 2s-1 (length 4s - 1)."""
    offsets = torch.arange(-(2 * scale - 1), 2 * scale, dtype=torch.float64) / scale
    return _keys_weight(offsets).to(torch.float32)


def upsample_cubic(image: torch.Tensor, scale: int) -> torch.Tensor:
    """Upsample (B, C, h, w) to (B, C, s*h, s*w) with LR sample j at HR sample s*j."""
    if scale == 1:
        return image
    batch, channels, height, width = image.shape
    kernel_1d = cubic_kernel_1d(scale).to(device=image.device, dtype=image.dtype)
    kernel = torch.outer(kernel_1d, kernel_1d).expand(channels, 1, -1, -1).contiguous()
    padded = F.pad(image, (2, 2, 2, 2), mode="replicate")
    full = F.conv_transpose2d(padded, kernel, stride=scale, groups=channels)
    start = 2 * scale + 2 * scale - 1
    return full[..., start : start + scale * height, start : start + scale * width]


def upsample_slices_cubic(image: torch.Tensor, factor: int) -> torch.Tensor:
    """Interpolate (B, C, h, w) thick slices along the rows to (B, C, n*h, w) thin slices tiling each thick slice.

    Thin row n*k + j reads the thick signal at k + (j - (n-1)/2) / n (Keys cubic over the thick rows k-2 .. k+2, the
    edge rows replicated): n fixed 5-tap filters, one per phase j, interleaved.
    """
    if factor == 1:
        return image
    batch, channels, height, width = image.shape
    phases = (torch.arange(factor, dtype=torch.float64) - (factor - 1) / 2.0) / factor
    taps = _keys_weight(phases[:, None] - torch.arange(-2, 3, dtype=torch.float64)[None, :])  # (n, 5)
    kernel = taps.to(device=image.device, dtype=image.dtype).view(factor, 1, 5, 1).repeat(channels, 1, 1, 1)
    padded = F.pad(image, (0, 0, 2, 2), mode="replicate")
    phased = F.conv2d(padded, kernel, groups=channels)  # channel c*n + j: phase j of channel c
    return phased.view(batch, channels, factor, height, width).transpose(2, 3).reshape(
        batch, channels, factor * height, width)
