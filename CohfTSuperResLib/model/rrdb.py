"""Residual-in-residual dense block (RRDB, ESRGAN [39] of the paper)."""

from __future__ import annotations

import torch
from torch import nn

RESIDUAL_SCALE = 0.2


class ResidualDenseBlock(nn.Module):
    """Densely connected 3x3 convolutions with LeakyReLU, scaled residual: conv i reads [x, f_1 .. f_i]."""

    def __init__(self, channels: int, growth: int, convs: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(channels + i * growth, growth if i < convs - 1 else channels, 3, padding=1)
            for i in range(convs)
        )
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for conv in self.convs[:-1]:
            features.append(self.act(conv(torch.cat(features, dim=1))))
        return x + RESIDUAL_SCALE * self.convs[-1](torch.cat(features, dim=1))


class RRDB(nn.Module):
    """A chain of residual dense blocks inside one more scaled residual."""

    def __init__(self, channels: int, rdbs: int, convs: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*(ResidualDenseBlock(channels, channels, convs) for _ in range(rdbs)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.add(x, self.body(x), alpha=RESIDUAL_SCALE)
