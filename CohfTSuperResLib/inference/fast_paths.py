"""CPU inference paths of the network's modules, swapped in at load time: the same parameters, the same values.

``model/`` holds the network as the paper describes it. On a CPU, torch's eager operators write and re-read large
intermediate maps that the arithmetic does not need; the subclasses here compute the same values with fewer passes
over memory where the input is a CPU float32 tensor of an inference run (``fused_ops.can_fuse``), and defer to the
reference everywhere else (training, autocast, export, GPUs):

- ``FastResidualDenseBlock``: no concatenations; by linearity conv i is the sum of one convolution per input it
  reads (its weight columns for that input), each adding its share to the running sum in the same oneDNN call;
- ``FastConcatConv``: a convolution of a concatenation as the sum of per-part convolutions, likewise;
- ``FastResidualMLP``: the last convolution and the residual addition in one call;
- ``FastPointwiseAdaIN``: for one sample with per-channel maps, mu1 goes into beta's bias and
  (sigma1 + gamma) / sigma2 into gamma's weights and bias (two passes over the HR map instead of five), and the
  channel statistics of a channels-last map are reduced over its contiguous (B, H*W, C) view;
- ``FastBasicAttention`` (fast_attention.py).

``accelerate(network)`` swaps the classes of a loaded network's modules in place; the torch runner does it.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from CohfTSuperResLib.inference.fast_attention import FastBasicAttention
from CohfTSuperResLib.inference.fused_ops import can_fuse, conv_add, conv_leaky, conv_of_concatenation
from CohfTSuperResLib.model.adain import STATS_EPS, PointwiseAdaIN, channel_stats
from CohfTSuperResLib.model.attention import BasicAttention
from CohfTSuperResLib.model.layers import ConcatConv, ResidualMLP
from CohfTSuperResLib.model.rrdb import RESIDUAL_SCALE, ResidualDenseBlock


class FastResidualDenseBlock(ResidualDenseBlock):
    """The dense block without concatenations where `can_fuse` (module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not can_fuse(x):
            return super().forward(x)
        slope = self.act.negative_slope
        widths = [self.convs[0].in_channels] + [conv.out_channels for conv in self.convs[:-1]]
        bounds = [0, *itertools.accumulate(widths)]

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
        # the last conv's weights carry the residual scale, and its first share adds x
        weights = shares(last, RESIDUAL_SCALE)
        return add_shares(conv_add(x, weights[0], last.bias * RESIDUAL_SCALE, x), features[1:], weights[1:])


class FastConcatConv(ConcatConv):
    """conv(X1 || X2 || ...) without the concatenated map where `can_fuse`."""

    def forward(self, *parts: torch.Tensor) -> torch.Tensor:
        return conv_of_concatenation(parts, self.weight, self.bias)


class FastResidualMLP(ResidualMLP):
    """The residual MLP with its last convolution and the residual addition in one call."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *inner, last = self.body
        hidden = x
        for layer in inner:
            hidden = layer(hidden)
        return conv_add(hidden, last.weight, last.bias, x)


class FastPointwiseAdaIN(PointwiseAdaIN):
    """AdaIN with the single-sample folding and channels-last statistics (module docstring)."""

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        if not (x2.shape[0] == 1 and self.to_gamma.out_channels == x2.shape[1] and can_fuse(x2)):
            return super().forward(x1, x2)
        mean1, std1 = channels_last_stats(x1)
        mean2, std2 = channels_last_stats(x2)
        fused = self.fused_features(x1, x2)
        gain = 1.0 / std2.flatten()
        gamma = F.conv2d(fused, self.to_gamma.weight * gain[:, None, None, None],
                         (self.to_gamma.bias + std1.flatten()) * gain, padding=1)
        beta = F.conv2d(fused, self.to_beta.weight, self.to_beta.bias + mean1.flatten(), padding=1)
        return torch.addcmul(beta, x2 - mean2, gamma)


def channels_last_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`model.adain.channel_stats`, reduced over the contiguous (B, H*W, C) view of a channels-last map."""
    if not x.is_contiguous(memory_format=torch.channels_last):
        return channel_stats(x)
    batch, channels = x.shape[:2]
    rows = x.permute(0, 2, 3, 1).reshape(batch, -1, channels)
    mean = rows.mean(dim=1, keepdim=True)
    var = (rows - mean).square().mean(dim=1)
    return mean.view(batch, channels, 1, 1), torch.sqrt(var.view(batch, channels, 1, 1) + STATS_EPS)


FAST_CLASSES: dict[type[nn.Module], type[nn.Module]] = {
    ResidualDenseBlock: FastResidualDenseBlock,
    ConcatConv: FastConcatConv,
    ResidualMLP: FastResidualMLP,
    PointwiseAdaIN: FastPointwiseAdaIN,
    BasicAttention: FastBasicAttention,
}


def accelerate(network: nn.Module) -> nn.Module:
    """Swap every module of the network whose class has a fast path for it, in place; returns the network."""
    for module in network.modules():
        fast = FAST_CLASSES.get(type(module))
        if fast is not None:
            module.__class__ = fast
    return network
