"""The full Cohf-T network (Fig. 2): input gate, main SR stream, domain-prior stream, output gate."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from CohfTSuperResLib.model.cohft_block import CohfTBlock
from CohfTSuperResLib.model.config import CohfTConfig
from CohfTSuperResLib.model.gradient import gradient_magnitude
from CohfTSuperResLib.model.layers import ConcatConv
from CohfTSuperResLib.model.rrdb import RRDB
from CohfTSuperResLib.model.upsample import upsample_cubic


def _conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, padding=1)


class _InputBranch(nn.Sequential):
    """Input gate branch: 3x3 conv from the input channels to d, then one RRDB."""

    def __init__(self, config: CohfTConfig, channels: int = 1) -> None:
        super().__init__(_conv3x3(channels, config.dim), RRDB(config.dim, config.rdbs_per_rrdb, config.convs_per_rdb))


class _Stage(nn.Module):
    """One stage: E = RRDBs(F); F_bar = C(E); F_s = C(P || F_bar); P' = Cohf-T(F_s, F_c);
    F' = E + sigmoid(C(F_bar)) * P' (single-channel selection map)."""

    def __init__(self, config: CohfTConfig) -> None:
        super().__init__()
        dim = config.dim
        self.trunk = nn.Sequential(
            *(RRDB(dim, config.rdbs_per_rrdb, config.convs_per_rdb) for _ in range(config.rrdbs_per_stage))
        )
        self.structure = _conv3x3(dim, dim)
        self.merge = ConcatConv(2 * dim, dim, 3, padding=1)
        self.select = _conv3x3(dim, 1)
        self.block = CohfTBlock(config)

    def forward(
        self, features: torch.Tensor, prior: torch.Tensor, t1_context: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        extracted = self.trunk(features)
        structure = self.structure(extracted)
        prior = self.block(self.merge(prior, structure), t1_context)
        features = torch.addcmul(extracted, torch.sigmoid(self.select(structure)), prior)  # E + sigmoid(.) * P'
        return features, prior


class _Upsampler(nn.Sequential):
    """Output gate branch: 3x3 conv to d*s^2, pixel shuffle, GELU."""

    def __init__(self, dim: int, scale: int) -> None:
        super().__init__(_conv3x3(dim, dim * scale * scale), nn.PixelShuffle(scale), nn.GELU())


class CohfTNet(nn.Module):
    """Cohf-T: LR T2 (B, 1, h, w) and HR T1 (B, 1, s*h, s*w) -> HR T2 and its HR gradient map.

    The intensity output adds the learned detail to a cubic upsampling of the
    input on the DFT grid (see upsample.py); the gradient output is predicted
    from the domain-prior stream. With `use_t1=False` the network has no T1
    branch at all and `forward` takes the LR T2 alone. With `guide_input` the HR T1
    and its gradient, folded to LR size by space-to-depth (s*s channels each, HR
    sample (s*i + dy, s*j + dx) in channel dy*s + dx at LR sample (i, j)), enter
    the main stream's input gate beside the LR T2.
    """

    def __init__(self, config: CohfTConfig) -> None:
        super().__init__()
        self.config = config
        self.guide_input = config.use_t1 and config.guide_input
        guide_channels = 2 * config.scale**2 if self.guide_input else 0
        self.image_gate = _InputBranch(config, 1 + guide_channels)
        self.structure_gate = _InputBranch(config)
        self.t1_gate = _InputBranch(config) if config.use_t1 else None
        self.stages = nn.ModuleList(_Stage(config) for _ in range(config.stages))
        self.image_up = _Upsampler(config.dim, config.scale)
        self.prior_up = _Upsampler(config.dim, config.scale)
        self.to_gradient = _conv3x3(config.dim, 1)
        self.to_image = ConcatConv(2 * config.dim, 1, 3, padding=1)

    @property
    def scale(self) -> int:
        return self.config.scale

    def forward(self, lr_t2: torch.Tensor, hr_t1: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (HR T2, HR gradient map), both (B, 1, s*h, s*w)."""
        image, prior_hr = self._image_and_prior(lr_t2, hr_t1)
        return image, self.to_gradient(prior_hr)

    def super_resolve_image(self, lr_t2: torch.Tensor, hr_t1: torch.Tensor | None = None) -> torch.Tensor:
        """The HR T2 (B, 1, s*h, s*w) alone: what inference needs (the gradient head is not run)."""
        return self._image_and_prior(lr_t2, hr_t1)[0]

    def _image_and_prior(self, lr_t2: torch.Tensor, hr_t1: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """HR T2 and the upsampled domain-prior features the gradient head reads."""
        if not torch.compiler.is_compiling():
            self.check_inputs(lr_t2, hr_t1)
        image_input, t1_context = lr_t2, None
        if self.t1_gate is not None:
            t1_gradient = gradient_magnitude(hr_t1)
            t1_context = self.t1_gate(t1_gradient)
            if self.guide_input:
                folded = [F.pixel_unshuffle(x, self.scale) for x in (hr_t1, t1_gradient)]
                image_input = torch.cat([lr_t2, *folded], dim=1)
        features = self.image_gate(image_input)
        prior = self.structure_gate(gradient_magnitude(lr_t2))
        for stage in self.stages:
            features, prior = stage(features, prior, t1_context)
        prior_hr = self.prior_up(prior)
        image = self.to_image(self.image_up(features), prior_hr)
        return image + upsample_cubic(lr_t2, self.scale), prior_hr

    def check_inputs(self, lr_t2: torch.Tensor, hr_t1: torch.Tensor | None) -> None:
        """Raise ValueError naming the problem when the inputs do not fit this network."""
        if not isinstance(lr_t2, torch.Tensor) or lr_t2.dim() != 4 or lr_t2.shape[1] != 1:
            shape = tuple(lr_t2.shape) if isinstance(lr_t2, torch.Tensor) else type(lr_t2).__name__
            raise ValueError(f"LR T2 must be a (batch, 1, height, width) tensor, got {shape}")
        if not lr_t2.is_floating_point():
            raise ValueError(f"LR T2 must be floating point, got {lr_t2.dtype}")
        if not torch.isfinite(lr_t2).all():
            raise ValueError("LR T2 contains NaN or Inf values")
        if self.t1_gate is None:
            if hr_t1 is not None:
                raise ValueError("this network was built without the T1 guide (use_t1=False); do not pass a T1")
            return
        if hr_t1 is None:
            raise ValueError("this network needs the registered HR T1 guide; none was given")
        batch, _, height, width = lr_t2.shape
        expected = (batch, 1, self.scale * height, self.scale * width)
        if tuple(hr_t1.shape) != expected:
            raise ValueError(
                f"HR T1 must have shape {expected} (LR T2 {tuple(lr_t2.shape)} at scale {self.scale}), "
                f"got {tuple(hr_t1.shape)}"
            )
        if not torch.isfinite(hr_t1).all():
            raise ValueError("HR T1 contains NaN or Inf values")
