"""The basic attention module of Sec. 3.2.1 / Fig. 3(b), with inter-head correlation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import LayerNorm2d, pointwise_embedding
from .partition import group_tokens, pad_to_multiple, ungroup_tokens


class BasicAttention(nn.Module):
    """Enhance X1 with context from X2: O = X1 + Conv3x3(Fold(u)).

    X1 (B, d, h, w) gives the queries; X2 (B, d, rho*h, rho*w) gives keys and
    values after a rho x rho, stride-rho embedding that registers it on X1's
    grid (rho = 1 for self-attention). Both are layer-normalised and embedded
    (conv + LN + GELU), cut into p x p patches (tokens of d*p^2 values), grouped
    (`window`, `dilated` or `global`, see partition.py), projected by linear
    layers into M heads of d' = d*p^2/M, and attended per head with softmax
    correlations (Eq. 3). The inter-head correlation A (N x M x M, Eq. 4) then
    mixes the heads token by token: u = (I + A) v_hat (Eq. 5).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        patch: int,
        grouping: str,
        window: int,
        context_stride: int = 1,
        inter_head: bool = True,
    ) -> None:
        super().__init__()
        token_width = dim * patch * patch
        self.heads = heads
        self.patch = patch
        self.grouping = grouping
        self.window = window
        self.inter_head = inter_head
        self.norm_query = LayerNorm2d(dim)
        self.norm_context = LayerNorm2d(dim)
        self.embed_query = pointwise_embedding(dim)
        self.embed_context = pointwise_embedding(dim, context_stride)
        self.to_q = nn.Linear(token_width, token_width)
        self.to_k = nn.Linear(token_width, token_width)
        self.to_v = nn.Linear(token_width, token_width)
        self.post = nn.Conv2d(dim, dim, 3, padding=1)

    def _pad_multiple(self) -> int:
        return self.patch * (1 if self.grouping == "global" else self.window)

    def _split_heads(self, tokens: torch.Tensor) -> torch.Tensor:
        groups, count, width = tokens.shape
        return tokens.view(groups, count, self.heads, width // self.heads).transpose(1, 2)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x1.shape
        query_map = pad_to_multiple(self.embed_query(self.norm_query(x1)), self._pad_multiple())
        context_map = pad_to_multiple(self.embed_context(self.norm_context(x2)), self._pad_multiple())
        padded_h, padded_w = query_map.shape[-2:]
        token_h, token_w = padded_h // self.patch, padded_w // self.patch

        query_tokens = group_tokens(F.pixel_unshuffle(query_map, self.patch), self.grouping, self.window)
        context_tokens = group_tokens(F.pixel_unshuffle(context_map, self.patch), self.grouping, self.window)
        q = self._split_heads(self.to_q(query_tokens))
        k = self._split_heads(self.to_k(context_tokens))
        v = self._split_heads(self.to_v(context_tokens))

        v_hat = F.scaled_dot_product_attention(q, k, v).transpose(1, 2)  # (G, N, M, d')
        if self.inter_head:
            correlation = torch.softmax(v_hat @ v_hat.transpose(-1, -2), dim=-1)  # (G, N, M, M)
            mixed = v_hat + correlation @ v_hat
        else:
            mixed = v_hat
        mixed = mixed.reshape(mixed.shape[0], mixed.shape[1], -1)

        token_map = ungroup_tokens(mixed, self.grouping, self.window, batch, token_h, token_w)
        folded = F.pixel_shuffle(token_map, self.patch)[..., :height, :width]
        return x1 + self.post(folded)
