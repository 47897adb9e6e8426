"""Residual-in-residual dense block (RRDB, ESRGAN [39] of the paper)."""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from CohfTSuperResLib.model.fused import can_fuse, conv_add, conv_leaky

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
        self.input_widths = [channels] + [growth] * (convs - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward_fused(x) if can_fuse(x) else self._forward_concatenating(x)

    def _forward_concatenating(self, x: torch.Tensor) -> torch.Tensor:
        """The block as written: each conv reads the concatenation of x and the features so far."""
        features = [x]
        for conv in self.convs[:-1]:
            features.append(self.act(conv(torch.cat(features, dim=1))))
        return x + RESIDUAL_SCALE * self.convs[-1](torch.cat(features, dim=1))

    def _forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        """The same sums without concatenations, for CPU inference (model/fused.py).

        By linearity conv i is the sum of one convolution per input it reads (its weight columns for
        that input); each such convolution adds its share to the running sum in the same oneDNN call.
        The last conv's weights carry the residual scale, and its first share adds x.
        """
        slope = self.act.negative_slope
        bounds = [0, *itertools.accumulate(self.input_widths)]

        def shares(conv: nn.Conv2d, scale: float = 1.0) -> list[torch.Tensor]:
            weight = conv.weight * scale if scale != 1.0 else conv.weight
            return [weight[:, bounds[j] : bounds[j + 1]] for j in range(bounds.index(conv.in_channels))]

        def add_shares(total: torch.Tensor, features: list[torch.Tensor], weights: list[torch.Tensor]) -> torch.Tensor:
            for feature, weight in zip(features, weights, strict=True):
                total = conv_add(feature, weight, None, total)
            return total

        *inner, last = self.convs
        features = [x]
        for conv in inner:
            weights = shares(conv)
            if len(features) == 1:
                features.append(conv_leaky(x, weights[0], conv.bias, slope))
            else:
                total = F.conv2d(x, weights[0], conv.bias, padding=1)
                features.append(F.leaky_relu(add_shares(total, features[1:], weights[1:]), slope))
        weights = shares(last, RESIDUAL_SCALE)
        return add_shares(conv_add(x, weights[0], last.bias * RESIDUAL_SCALE, x), features[1:], weights[1:])


class RRDB(nn.Module):
    """A chain of residual dense blocks inside one more scaled residual."""

    def __init__(self, channels: int, rdbs: int, convs: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*(ResidualDenseBlock(channels, channels, convs) for _ in range(rdbs)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.add(x, self.body(x), alpha=RESIDUAL_SCALE)
