"""The CPU inference path of the attention module: softmax without row maxima where the logits are provably small.

``FastBasicAttention`` computes what ``model.attention.BasicAttention`` computes (same parameters, the same values
up to rounding) with fewer passes over memory, where the input is a CPU float32 tensor of an inference run:

- the correlations' 1 / sqrt(d') is folded into the query projection, and k and v are projected together;
- where every |logit| is provably below EXP_SAFE_BOUND, exp is taken without subtracting the row maxima (softmax
  does not change under a shift, and exp can neither overflow nor vanish there), in place, and the product is
  divided by the row sums afterwards; the token correlations in chunks of groups that stay in the CPU's cache;
- the bound comes from the weights alone for point tokens (``_weight_bounds``), else from the largest query and
  key norms (Cauchy-Schwarz); without a bound (training, autocast, export, GPUs: no host synchronisation) the
  stable softmax runs;
- the output convolution and the residual addition in one oneDNN call (fused_ops.py).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
from torch import nn

from CohfTSuperResLib.inference.fused_ops import conv_add, cpu_float_inference
from CohfTSuperResLib.model.attention import BasicAttention, per_token
from CohfTSuperResLib.model.partition import group_head_tokens

EXP_SAFE_BOUND = 60.0  # exp(+-60) neither overflows nor underflows float32, even summed over thousands of tokens
CHUNK_BYTES = 2 << 20  # groups attended at once: their q, k, v and correlations in about 2 MiB


class FastBasicAttention(BasicAttention):
    """BasicAttention with the CPU inference path of this module (module docstring)."""

    def _heads(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, int]:
        """q (already scaled by 1 / sqrt(d')), k and v grouped into heads, and the token grid's size."""
        query_map, context_map = self._embedded_maps(x1, x2)
        scale = 1.0 / math.sqrt(self.to_q.out_features // self.heads)
        q_map = per_token(self._to_tokens(query_map), self.to_q.weight * scale, self.to_q.bias * scale)
        kv_map = per_token(self._to_tokens(context_map), torch.cat([self.to_k.weight, self.to_v.weight]),
                           torch.cat([self.to_k.bias, self.to_v.bias]))
        q, k, v = (group_head_tokens(part, self.grouping, self.window, self.heads)
                   for part in (q_map, *kv_map.chunk(2, dim=1)))
        return q, k, v, query_map.shape[-2] // self.patch, query_map.shape[-1] // self.patch

    def _logits(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """The logits of Eq. 3 for a query that arrives scaled (see _heads)."""
        logits = q @ k.transpose(-1, -2)
        bias = self._position_bias()
        return logits if bias is None else logits + bias.to(logits.dtype)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x1.shape
        q, k, v, token_h, token_w = self._heads(x1, x2)
        from_weights = self._weight_bounds() if cpu_float_inference(q) else None
        if exp_is_safe(self._logit_bound(q, k, from_weights)):
            v_hat = chunked_attention(q, k, v, self._position_bias())
        else:
            v_hat = torch.softmax(self._logits(q, k), dim=-1) @ v
        v_hat = v_hat.transpose(1, 2).contiguous()  # (groups, tokens, heads, d')
        if self.inter_head:
            head_logits = v_hat @ v_hat.transpose(-1, -2)  # A of Eq. 4 before its softmax: (G, N, M, M)
            bound = self._head_logit_bound(head_logits, from_weights)
            v_hat = v_hat + softmax_product(head_logits, v_hat, bound, softmax_of_few)
        folded = self._fold(v_hat, batch, token_h, token_w, height, width)
        return conv_add(folded, self.post.weight, self.post.bias, x1)

    def _logit_bound(self, q: torch.Tensor, k: torch.Tensor, from_weights: tuple[float, float] | None) -> float | None:
        """An upper bound of every |correlation logit| on the CPU inference path, else None: from the weights where
        that bound is safe, else from the largest query and key norms, plus the largest position bias."""
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
        point tokens (patch 1), else None (patch tokens: the bound is far above EXP_SAFE_BOUND).

        An embedded position is GELU(LN(.)): the normalised vector has norm <= sqrt(d), so after the LN's affine
        map its norm is <= max|gamma| sqrt(d) + ||beta||, and |GELU(t)| <= |t| keeps it (padding copies positions).
        A head's projection W_h x + b_h then has norm <= ||W_h||_2 (that bound) + ||b_h||; v_hat, a softmax average
        of values, stays within the values' bound.
        """
        if self.patch != 1:
            return None
        scale = 1.0 / math.sqrt(self.to_q.out_features // self.heads)
        query = _head_norm_bounds(self.to_q, self.heads, _embedding_norm_bound(self.embed_query)) * scale
        context = _embedding_norm_bound(self.embed_context)
        key, value = (_head_norm_bounds(linear, self.heads, context) for linear in (self.to_k, self.to_v))
        return float((query * key).amax()) + self._largest_bias(), float(value.square().amax())

    def _head_logit_bound(self, head_logits: torch.Tensor, from_weights: tuple[float, float] | None) -> float | None:
        """A bound of every |inter-head logit| on the CPU inference path (else None): from the weights where
        `_weight_bounds` gave one, else the largest <v_m, v_m> (by Cauchy-Schwarz the largest |<v_m, v_n>|)."""
        if not cpu_float_inference(head_logits):
            return None
        if from_weights is not None:
            return from_weights[1]
        return float(head_logits.diagonal(dim1=-2, dim2=-1).amax())


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

    With `bound` below EXP_SAFE_BOUND the logits are exponentiated in place and the product divided by the row sums
    afterwards; otherwise (bound None or too large) `softmax` then the product.
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
    without row maxima, so only where every |logit| is below EXP_SAFE_BOUND (the caller's bound).

    Groups are attended independently, so the chunks give the same values as the whole, and the full correlation
    maps are never held.
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
    """Softmax over a short last axis (the M heads), faster than torch.softmax there on the CPU."""
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
