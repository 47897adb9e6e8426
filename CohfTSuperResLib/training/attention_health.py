"""Health of the attention modules: query/key weight size and how spread the attention is.

Two ways a Cohf-T network stops using an attention module, both seen in this project: its query and
key projections decay to zero (then every correlation is equal) or the attention spreads evenly over
all tokens. ``attention_report`` measures both for every attention module on one input:
- ``qk_rms``: root mean square of the query and key projection weights;
- ``entropy``: the correlation maps' entropy divided by log(N), N the tokens each query sees, averaged
  over queries, heads and groups: 1.0 is uniform attention, lower is more selective.
Training logs them at every checkpoint and warns about a collapse.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from CohfTSuperResLib.model.attention import BasicAttention

COLLAPSED_RMS = 1e-3  # query/key weights below this RMS count as collapsed
UNIFORM_ENTROPY = 0.99  # attention with a normalised entropy above this counts as uniform


@dataclass(frozen=True)
class AttentionHealth:
    """One attention module's query/key weight RMS and normalised attention entropy on one input."""

    name: str
    qk_rms: float
    entropy: float

    @property
    def cross_modal(self) -> bool:
        return "cross_modal" in self.name

    @property
    def collapsed(self) -> bool:
        """Query/key weights decayed to (almost) zero: every correlation is then the same."""
        return self.qk_rms < COLLAPSED_RMS

    @property
    def uniform(self) -> bool:
        """The attention spreads (almost) evenly over the tokens (normal for a fresh intra-modality module)."""
        return self.entropy > UNIFORM_ENTROPY


def qk_rms(module: BasicAttention) -> float:
    """RMS of the query and key projection weights of one attention module."""
    weights = torch.cat([module.to_q.weight.detach().flatten(), module.to_k.weight.detach().flatten()])
    return float(weights.float().square().mean().sqrt())


def normalised_entropy(weights: torch.Tensor) -> float:
    """Mean over all rows of (G, M, N, N) correlation maps of entropy / log(N)."""
    tokens = weights.shape[-1]
    if tokens < 2:
        return 0.0
    entropy = -(weights * torch.log(weights.clamp_min(1e-30))).sum(dim=-1)
    return float(entropy.mean() / math.log(tokens))


@torch.no_grad()
def attention_report(model: torch.nn.Module, lr: torch.Tensor, t1: torch.Tensor | None) -> list[AttentionHealth]:
    """AttentionHealth of every BasicAttention of the model, measured on one forward pass of (lr, t1)."""
    inputs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    modules = {name: module for name, module in model.named_modules() if isinstance(module, BasicAttention)}
    hooks = [module.register_forward_pre_hook(lambda _m, args, name=name: inputs.__setitem__(name, args))
             for name, module in modules.items()]
    was_training = model.training
    model.eval()
    try:
        model(lr, t1)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return [AttentionHealth(name, qk_rms(module), normalised_entropy(module.attention_weights(*inputs[name])))
            for name, module in modules.items() if name in inputs]


def summary(report: list[AttentionHealth]) -> dict[str, float]:
    """Mean qk_rms and entropy of the inter-modality and of the intra-modality modules (for logs)."""
    out = {}
    for label, rows in (("cross", [r for r in report if r.cross_modal]), ("intra", [r for r in report
                                                                                    if not r.cross_modal])):
        if rows:
            out[f"{label}_qk_rms"] = sum(r.qk_rms for r in rows) / len(rows)
            out[f"{label}_entropy"] = sum(r.entropy for r in rows) / len(rows)
    return out
