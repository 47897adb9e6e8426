"""One Cohf-T block: short- and long-distance window attention, then inter-modality attention."""

from __future__ import annotations

import torch
from torch import nn

from CohfTSuperResLib.model.adain import PointwiseAdaIN
from CohfTSuperResLib.model.attention import BasicAttention
from CohfTSuperResLib.model.config import CohfTConfig
from CohfTSuperResLib.model.layers import ResidualMLP


class CohfTBlock(nn.Module):
    """P = Cohf-T(F_s, F_c): intra-modality attention on the T2 gradient features F_s
    (g x g windows, then dilated windows), each followed by a residual MLP; then,
    when the T1 guide is used, AdaIN-aligned T1 gradient features F_c give the keys
    and values of an inter-modality attention (patch p, stride s), and a last MLP.
    The inter-modality attention spans the whole slice (cross_position 'none', the paper's
    text) or aligned g x g token windows with a relative position bias ('local').
    """

    def __init__(self, config: CohfTConfig) -> None:
        super().__init__()
        dim, heads, window = config.dim, config.heads, config.window
        self.short_range = BasicAttention(dim, heads, config.intra_patch, "window", window,
                                          inter_head=config.inter_head)
        self.short_mlp = ResidualMLP(dim, config.mlp_ratio)
        self.long_range = BasicAttention(dim, heads, config.intra_patch, "dilated", window,
                                         inter_head=config.inter_head)
        self.long_mlp = ResidualMLP(dim, config.mlp_ratio)
        self.cross_modal: BasicAttention | None = None
        self.align: PointwiseAdaIN | None = None
        if config.use_t1:
            local = config.cross_position == "local"
            self.cross_modal = BasicAttention(
                dim, heads, config.inter_patch, "window" if local else "global", window,
                context_stride=config.scale, inter_head=config.inter_head, position=config.cross_position,
            )
            self.cross_mlp = ResidualMLP(dim, config.mlp_ratio)
            if config.adain:
                self.align = PointwiseAdaIN(dim, config.scale, config.adain_modulation)

    def forward(self, structure: torch.Tensor, t1_context: torch.Tensor | None = None) -> torch.Tensor:
        x = self.short_mlp(self.short_range(structure, structure))
        x = self.long_mlp(self.long_range(x, x))
        if self.cross_modal is not None:
            context = self.align(x, t1_context) if self.align is not None else t1_context
            x = self.cross_mlp(self.cross_modal(x, context))
        return x
