"""Point-wise adaptive instance normalisation (Sec. 3.2.3, Fig. 5, Eqs. 6-7)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from CohfTSuperResLib.model.layers import ConcatConv

STATS_EPS = 1e-5


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel mean and standard deviation over H x W, shaped (B, C, 1, 1)."""
    var, mean = torch.var_mean(x, dim=(-2, -1), keepdim=True, unbiased=False)
    return mean, torch.sqrt(var + STATS_EPS)


class PointwiseAdaIN(nn.Module):
    """Align T1 features X2 (B, d, s*h, s*w) to the distribution of T2 features X1 (B, d, h, w).

    O = (X2 - mu2) / sigma2 * (sigma1 + gamma) + mu1 + beta, with per-pixel gamma
    and beta predicted from X2 and X1 lifted to X2's size (conv to d*s^2 channels
    then pixel shuffle). gamma and beta start at zero, i.e. at plain AdaIN.

    modulation='pixel' is the paper's text: one gamma and one beta map shared by every
    channel. Such a beta shifts all channels of a pixel equally, which the channel
    LayerNorm of the attention that follows removes exactly (its gradient is zero).
    modulation='channel' predicts a gamma and a beta per pixel and per channel, so both count.
    """

    def __init__(self, dim: int, scale: int, modulation: str = "channel") -> None:
        super().__init__()
        if modulation not in ("pixel", "channel"):
            raise ValueError(f"unknown AdaIN modulation {modulation!r}; use 'pixel' or 'channel'")
        maps = dim if modulation == "channel" else 1
        self.scale = scale
        self.lift = nn.Conv2d(dim, dim * scale * scale, 3, padding=1)
        self.fuse = ConcatConv(2 * dim, dim, 3, padding=1)
        self.to_gamma = nn.Conv2d(dim, maps, 3, padding=1)
        self.to_beta = nn.Conv2d(dim, maps, 3, padding=1)
        for head in (self.to_gamma, self.to_beta):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def fused_features(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """The features gamma and beta are predicted from: conv(X2 || X1 lifted to X2's size)."""
        return self.fuse(x2, F.pixel_shuffle(self.lift(x1), self.scale))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        mean1, std1 = channel_stats(x1)
        mean2, std2 = channel_stats(x2)
        fused = self.fused_features(x1, x2)
        gamma, beta = self.to_gamma(fused), self.to_beta(fused)
        return (x2 - mean2) / std2 * (std1 + gamma) + mean1 + beta
