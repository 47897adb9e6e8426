"""Gradient-magnitude operator of the paper (Sec. 3.1): R = sqrt(gx^2 + gy^2 + eps).

The partial derivatives are forward differences along the two in-plane axes;
the last row/column repeats the edge (replicate padding), so the map has the
size of its input and a constant image has gradient sqrt(eps) everywhere.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

GRADIENT_EPS = 1e-6


def gradient_magnitude(image: torch.Tensor, eps: float = GRADIENT_EPS) -> torch.Tensor:
    """Return sqrt(dx^2 + dy^2 + eps) of a (B, C, H, W) tensor, same shape, differentiable."""
    if image.dim() != 4:
        raise ValueError(f"gradient_magnitude expects a (B, C, H, W) tensor, got shape {tuple(image.shape)}")
    padded = F.pad(image, (0, 1, 0, 1), mode="replicate")
    dx = padded[..., :-1, 1:] - padded[..., :-1, :-1]
    dy = padded[..., 1:, :-1] - padded[..., :-1, :-1]
    return torch.sqrt(dx * dx + dy * dy + eps)
