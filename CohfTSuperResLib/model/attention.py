"""The basic attention module of Sec. 3.2.1 / Fig. 3(b), with inter-head correlation."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from CohfTSuperResLib.model.layers import LayerNorm2d, pointwise_embedding
from CohfTSuperResLib.model.partition import group_head_tokens, pad_to_multiple, ungroup_tokens

LOCALITY_SLOPES = (2.0, 1.0, 0.5, 0.25)  # initial logit penalty per token of distance, head by head (cycled)


def relative_offsets(window: int) -> torch.Tensor:
    """(g*g, g*g) index into a (2g-1)^2 table of the (dy, dx) offset between every two tokens of a g x g window."""
    rows, cols = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()
    dy = rows[:, None] - rows[None, :] + window - 1
    dx = cols[:, None] - cols[None, :] + window - 1
    return dy * (2 * window - 1) + dx


def locality_prior(window: int, heads: int) -> torch.Tensor:
    """(heads, (2g-1)^2) bias table: -slope * distance, with a slope per head from LOCALITY_SLOPES."""
    offsets = torch.arange(-(window - 1), window, dtype=torch.float32)
    distance = torch.sqrt(offsets[:, None] ** 2 + offsets[None, :] ** 2).flatten()
    slopes = torch.tensor([LOCALITY_SLOPES[h % len(LOCALITY_SLOPES)] for h in range(heads)])
    return -slopes[:, None] * distance[None, :]


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

    position='local' (window grouping only) adds a learned relative position bias
    to the correlations (one (2g-1)^2 table per head, as in Swin), initialised to
    `locality_prior`, so that a query starts by looking at the token at its own place.
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
        position: str = "none",
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
        self.relative_bias: nn.Parameter | None = None
        if position == "local":
            if grouping != "window":
                raise ValueError("a relative position bias needs window grouping")
            self.relative_bias = nn.Parameter(locality_prior(window, heads))
            self.register_buffer("relative_index", relative_offsets(window), persistent=False)
        elif position != "none":
            raise ValueError(f"unknown attention position {position!r}; use 'none' or 'local'")

    def _pad_multiple(self) -> int:
        return self.patch * (1 if self.grouping == "global" else self.window)

    def _position_bias(self) -> torch.Tensor | None:
        """(heads, N, N) additive bias of the correlations, or None."""
        if self.relative_bias is None:
            return None
        return self.relative_bias[:, self.relative_index]

    def _embedded_maps(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The query and context maps after layer normalisation and embedding, padded to the token grouping."""
        query_map = pad_to_multiple(self.embed_query(self.norm_query(x1)), self._pad_multiple())
        context_map = pad_to_multiple(self.embed_context(self.norm_context(x2)), self._pad_multiple())
        return query_map, context_map

    def _to_tokens(self, feature_map: torch.Tensor) -> torch.Tensor:
        """p x p patches as channels (space-to-depth); nothing to do for p = 1."""
        return F.pixel_unshuffle(feature_map, self.patch) if self.patch > 1 else feature_map

    def _heads(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, int]:
        """q, k, v (groups, heads, tokens, d') and the token grid's height and width.

        The linear layers act on every token of the map before the tokens are grouped: the same values, since
        grouping only reorders tokens.
        """
        query_map, context_map = self._embedded_maps(x1, x2)
        query_tokens, context_tokens = self._to_tokens(query_map), self._to_tokens(context_map)
        q, k, v = (group_head_tokens(per_token(tokens, layer.weight, layer.bias),
                                     self.grouping, self.window, self.heads)
                   for tokens, layer in ((query_tokens, self.to_q), (context_tokens, self.to_k),
                                         (context_tokens, self.to_v)))
        return q, k, v, query_map.shape[-2] // self.patch, query_map.shape[-1] // self.patch

    def _logits(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """The correlation logits of Eq. 3, q k^T / sqrt(d'), plus the position bias: (groups, heads, N, N)."""
        logits = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
        bias = self._position_bias()
        return logits if bias is None else logits + bias.to(logits.dtype)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Eq. 3, head by head: the softmax of the correlations times v, as (groups, tokens, heads, d')."""
        return (torch.softmax(self._logits(q, k), dim=-1) @ v).transpose(1, 2)

    def _mix_heads(self, v_hat: torch.Tensor) -> torch.Tensor:
        """Eqs. 4-5, token by token: u = (I + A) v_hat with A = softmax(v_hat v_hat^T) over the heads."""
        correlation = torch.softmax(v_hat @ v_hat.transpose(-1, -2), dim=-1)
        return v_hat + correlation @ v_hat

    def _fold(self, u: torch.Tensor, batch: int, token_h: int, token_w: int, height: int, width: int) -> torch.Tensor:
        """The (groups, tokens, heads, d') tokens back to a (B, d, height, width) map (Fold of Fig. 3b)."""
        tokens = u.reshape(u.shape[0], u.shape[1], -1)
        token_map = ungroup_tokens(tokens.contiguous(), self.grouping, self.window, batch, token_h, token_w)
        folded = F.pixel_shuffle(token_map, self.patch) if self.patch > 1 else token_map
        return folded[..., :height, :width]

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x1.shape
        q, k, v, token_h, token_w = self._heads(x1, x2)
        v_hat = self._attend(q, k, v)
        u = self._mix_heads(v_hat) if self.inter_head else v_hat
        return x1 + self.post(self._fold(u, batch, token_h, token_w, height, width))

    @torch.no_grad()
    def attention_weights(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """The correlation maps s of Eq. 3 (with the position bias), (groups, heads, N, N): for diagnostics."""
        q, k, _v, _h, _w = self._heads(x1, x2)
        return torch.softmax(self._logits(q.float(), k.float()), dim=-1)


def per_token(feature_map: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """A linear layer applied to the channel vector of every position of a (B, C, H, W) map."""
    return F.linear(feature_map.permute(0, 2, 3, 1), weight, bias).permute(0, 3, 1, 2)
