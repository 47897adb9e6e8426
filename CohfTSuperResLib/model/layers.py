"""Small building blocks shared by the network: channel LayerNorm, q/kv embedding, residual MLP, convolution of a
concatenation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a (B, C, H, W) map, so any H x W works."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One fused kernel over the channel axis of the (B, H, W, C) view: contiguous for a channels-last map.
        normed = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        return normed.permute(0, 3, 1, 2)


def pointwise_embedding(channels: int, kernel: int = 1) -> nn.Sequential:
    """Conv (kernel x kernel, stride kernel) + LayerNorm + GELU: the q / kv embedding of Fig. 3(b)."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, kernel, stride=kernel),
        LayerNorm2d(channels),
        nn.GELU(),
    )


class ResidualMLP(nn.Module):
    """x + (LN - Conv1x1 - LN - GELU - Conv1x1)(x), the MLP of a Cohf-T block."""

    def __init__(self, channels: int, ratio: int = 2) -> None:
        super().__init__()
        hidden = channels * ratio
        self.body = nn.Sequential(
            LayerNorm2d(channels),
            nn.Conv2d(channels, hidden, 1),
            LayerNorm2d(hidden),
            nn.GELU(),
            nn.Conv2d(hidden, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ConcatConv(nn.Conv2d):
    """A convolution of the channel concatenation of its inputs: conv(X1 || X2 || ...)."""

    def forward(self, *parts: torch.Tensor) -> torch.Tensor:
        return super().forward(torch.cat(parts, dim=1))
