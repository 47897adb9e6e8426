"""The basic attention module of Sec. 3.2.1 / Fig. 3(b), with inter-head correlation."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from CohfTSuperResLib.model.fused import conv_add, cpu_float_inference
from CohfTSuperResLib.model.layers import LayerNorm2d, pointwise_embedding
from CohfTSuperResLib.model.partition import group_head_tokens, pad_to_multiple, ungroup_tokens

LOCALITY_SLOPES = (2.0, 1.0, 0.5, 0.25)  # initial logit penalty per token of distance, head by head (cycled)
EXP_SAFE_BOUND = 60.0  # exp(+-60) neither overflows nor underflows float32, even summed over thousands of tokens
CHUNK_BYTES = 2 << 20  # groups attended at once on the CPU fast path: their q, k, v and correlations in ~2 MiB


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

    def _heads(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, int]:
        """q (scaled by 1 / sqrt(d')), k, v (groups, heads, tokens, d') and the token grid's height and width.

        The linear layers act on every token of the map before the tokens are grouped (the same
        values: grouping only reorders tokens), so each of q, k and v is gathered into its groups
        and heads by one copy. The correlations' 1 / sqrt(d') is folded into the query projection:
        a pass over N / d' times fewer values than scaling the correlations (22.2 -> 13.6 ms for
        the intra-modality correlations of a clinical x2 slice, 2 cores).
        """
        query_map = pad_to_multiple(self.embed_query(self.norm_query(x1)), self._pad_multiple())
        context_map = pad_to_multiple(self.embed_context(self.norm_context(x2)), self._pad_multiple())
        padded_h, padded_w = query_map.shape[-2:]
        scale = 1.0 / math.sqrt(self.to_q.out_features // self.heads)
        q_map = _per_token(self._to_tokens(query_map), self.to_q.weight * scale, self.to_q.bias * scale)
        # k and v in one pass over the context tokens (the two linear layers side by side)
        kv_map = _per_token(self._to_tokens(context_map), torch.cat([self.to_k.weight, self.to_v.weight]),
                            torch.cat([self.to_k.bias, self.to_v.bias]))
        q, k, v = (group_head_tokens(part, self.grouping, self.window, self.heads)
                   for part in (q_map, *kv_map.chunk(2, dim=1)))
        return q, k, v, padded_h // self.patch, padded_w // self.patch

    def _to_tokens(self, feature_map: torch.Tensor) -> torch.Tensor:
        """p x p patches as channels (space-to-depth); nothing to do for p = 1."""
        return F.pixel_unshuffle(feature_map, self.patch) if self.patch > 1 else feature_map

    def _logits(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """The correlation logits of Eq. 3 with the position bias, (groups, heads, N, N) (q arrives scaled, _heads).

        Written out rather than through scaled_dot_product_attention: with heads of 4 values and
        windows of 36 tokens the fused kernel is no faster on the CPU (32.0 against 30.9 ms,
        bench/cpu_choices.py), and the written-out maps are also what `attention_weights` shows.
        """
        logits = q @ k.transpose(-1, -2)
        bias = self._position_bias()
        if bias is not None:
            logits += bias.to(logits.dtype)
        return logits

    def _logit_bound(
        self, q: torch.Tensor, k: torch.Tensor, from_weights: tuple[float, float] | None
    ) -> float | None:
        """An upper bound of every |correlation logit| (Cauchy-Schwarz, plus the largest position bias) on the
        CPU inference path, else None (no host synchronisation in training or on a GPU).

        From the weights alone (`from_weights`, `_weight_bounds`) where that bound is safe, else from the largest
        query and key norms.
        """
        if not cpu_float_inference(q):
            return None
        if from_weights is not None and exp_is_safe(from_weights[0]):
            return from_weights[0]
        bound = float(torch.linalg.vector_norm(q, dim=-1).amax() * torch.linalg.vector_norm(k, dim=-1).amax())
        return bound + self._largest_bias()

    def _largest_bias(self) -> float:
        return 0.0 if self.relative_bias is None else float(self.relative_bias.abs().amax())

    def _weight_bounds(self) -> tuple[float, float] | None:
        """(bound of every |correlation logit|, bound of every squared head norm of v_hat) from the weights alone, for
        point tokens (patch 1; for patch tokens these bounds are far above EXP_SAFE_BOUND: 280 to 660 for the
        shipped models), else None.

        An embedded position is GELU(LN(.)): the normalised vector has norm <= sqrt(d), so after the LN's affine
        map its norm is <= max|gamma| sqrt(d) + ||beta||, and |GELU(t)| <= |t| keeps it (padding copies positions).
        A head's projection W_h x + b_h then has norm <= ||W_h||_2 (that bound) + ||b_h||; v_hat, a softmax average
        of values, stays within the values' bound. Skips two passes over q and k per attention and one over the
        inter-head correlations.
        """
        if self.patch != 1:
            return None
        scale = 1.0 / math.sqrt(self.to_q.out_features // self.heads)
        query = _head_norm_bounds(self.to_q, self.heads, _embedding_norm_bound(self.embed_query)) * scale
        context = _embedding_norm_bound(self.embed_context)
        key, value = (_head_norm_bounds(linear, self.heads, context) for linear in (self.to_k, self.to_v))
        return float((query * key).amax()) + self._largest_bias(), float(value.square().amax())

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x1.shape
        q, k, v, token_h, token_w = self._heads(x1, x2)
        from_weights = self._weight_bounds() if cpu_float_inference(q) else None
        if exp_is_safe(self._logit_bound(q, k, from_weights)):
            v_hat = chunked_attention(q, k, v, self._position_bias())
        else:
            v_hat = torch.softmax(self._logits(q, k), dim=-1) @ v
        v_hat = v_hat.transpose(1, 2).contiguous()  # (G, N, M, d')
        if self.inter_head:
            head_logits = v_hat @ v_hat.transpose(-1, -2)  # A of Eq. 4 before its softmax: (G, N, M, M)
            bound = self._head_logit_bound(head_logits, from_weights)
            v_hat = v_hat + softmax_product(head_logits, v_hat, bound, softmax_of_few)
        mixed = v_hat.reshape(v_hat.shape[0], v_hat.shape[1], -1)

        token_map = ungroup_tokens(mixed, self.grouping, self.window, batch, token_h, token_w)
        folded = F.pixel_shuffle(token_map, self.patch) if self.patch > 1 else token_map
        return conv_add(folded[..., :height, :width], self.post.weight, self.post.bias, x1)

    def _head_logit_bound(
        self, head_logits: torch.Tensor, from_weights: tuple[float, float] | None
    ) -> float | None:
        """A bound of every |inter-head logit| on the CPU inference path (else None): from the weights where
        `_weight_bounds` gave one, else the largest <v_m, v_m> (by Cauchy-Schwarz the largest |<v_m, v_n>|)."""
        if not cpu_float_inference(head_logits):
            return None
        if from_weights is not None:
            return from_weights[1]
        return float(head_logits.diagonal(dim1=-2, dim2=-1).amax())

    @torch.no_grad()
    def attention_weights(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """The correlation maps s of Eq. 3 (with the position bias), (groups, heads, N, N): for diagnostics."""
        q, k, _v, _h, _w = self._heads(x1, x2)
        return torch.softmax(self._logits(q.float(), k.float()), dim=-1)


def exp_is_safe(bound: float | None) -> bool:
    """Whether logits bounded by `bound` (None: no bound) can be exponentiated without their row maxima."""
    return bound is not None and bound < EXP_SAFE_BOUND


def softmax_product(
    logits: torch.Tensor,
    values: torch.Tensor,
    bound: float | None,
    softmax: Callable[[torch.Tensor], torch.Tensor] = functools.partial(torch.softmax, dim=-1),
) -> torch.Tensor:
    """softmax(logits) @ values over the last axis of logits; `logits` may be overwritten.

    With `bound`, a bound of every |logit| below EXP_SAFE_BOUND, the row maxima are not subtracted
    (softmax does not change under a shift, and exp can neither overflow nor vanish there): the
    logits are exponentiated in place and the product divided by the row sums afterwards: fewer
    passes over the maps (used for the inter-head correlation; `chunked_attention` does the same for the
    token correlations). Otherwise (bound None or too large) `softmax` then the product.
    """
    if not exp_is_safe(bound):
        return softmax(logits) @ values
    weights = logits.exp_()
    return (weights @ values).div_(weights.sum(dim=-1, keepdim=True))


def chunked_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """softmax(q k^T + bias) v for (groups, heads, N, d) q, k, v, in chunks of groups whose q, k, v and correlations
    take about CHUNK_BYTES, so each chunk's correlations stay in the CPU's cache from product to product; exp
    without row maxima, so only where every |logit| is below EXP_SAFE_BOUND (the caller's bound; inference only).

    Groups are attended independently, so the chunks give the same values as the whole (window attention of a
    390 x 360 slice: 32.4 -> 19.6 ms on 2 cores, bench/cpu_choices.py), and the full correlation maps are never held.
    """
    groups, heads, queries, _ = q.shape
    keys = k.shape[-2]
    per_group = heads * (queries * (keys + q.shape[-1] + v.shape[-1]) + keys * (k.shape[-1] + v.shape[-1]))
    chunk = max(1, CHUNK_BYTES // (q.element_size() * per_group))
    out = torch.empty(groups, heads, queries, v.shape[-1], dtype=v.dtype, device=v.device)
    k_transposed = k.transpose(-1, -2)
    for start in range(0, groups, chunk):
        part = slice(start, start + chunk)
        weights = torch.matmul(q[part], k_transposed[part])
        if bias is not None:
            weights += bias
        weights = weights.exp_()
        torch.matmul(weights, v[part], out=out[part])
        out[part].div_(weights.sum(dim=-1, keepdim=True))
    return out


def softmax_of_few(x: torch.Tensor) -> torch.Tensor:
    """Softmax over a short last axis (the M heads): a fifth of torch.softmax's time there on the CPU
    (bench/cpu_choices.py)."""
    x = (x - x.amax(dim=-1, keepdim=True)).exp()
    return x / x.sum(dim=-1, keepdim=True)


def _embedding_norm_bound(embedding: nn.Sequential) -> torch.Tensor:
    """Bound of the norm of one position's output of `pointwise_embedding` (conv, LN, GELU): see _weight_bounds."""
    norm = embedding[1]
    return norm.weight.abs().amax() * math.sqrt(norm.weight.numel()) + torch.linalg.vector_norm(norm.bias)


def _head_norm_bounds(linear: nn.Linear, heads: int, input_bound: torch.Tensor) -> torch.Tensor:
    """(heads,) bounds of the norm of each head's share of linear(x) for inputs of norm <= input_bound."""
    weight = linear.weight.view(heads, -1, linear.in_features)
    bias = linear.bias.view(heads, -1)
    return torch.linalg.matrix_norm(weight, ord=2) * input_bound + torch.linalg.vector_norm(bias, dim=-1)


def _per_token(feature_map: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """A linear layer applied to the channel vector of every position of a (B, C, H, W) map."""
    return F.linear(feature_map.permute(0, 2, 3, 1), weight, bias).permute(0, 3, 1, 2)
