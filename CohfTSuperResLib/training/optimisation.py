"""The optimiser of training: AdamW groups (or the paper's Adam with L2 on everything) and the learning-rate steps."""

from __future__ import annotations

from typing import Any

import torch

from CohfTSuperResLib.model.attention import BasicAttention
from CohfTSuperResLib.model.layers import LayerNorm2d

OPTIMIZERS = ("adamw", "adam")


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on weights; none on biases, normalisation parameters, attention query / key
    projections and position biases (decay pulls those towards uniform attention)."""
    exempt: set[int] = set()
    for module in model.modules():
        if isinstance(module, LayerNorm2d):
            exempt.update(id(p) for p in module.parameters())
        elif isinstance(module, BasicAttention):
            exempt.update(id(p) for p in (*module.to_q.parameters(), *module.to_k.parameters()))
            if module.relative_bias is not None:
                exempt.add(id(module.relative_bias))
    decay, plain = [], []
    for name, parameter in model.named_parameters():
        (plain if id(parameter) in exempt or name.endswith(".bias") else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, kind: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """'adamw' (decoupled decay on parameter_groups) or 'adam' (the paper's text: L2 on every parameter)."""
    if kind == "adamw":
        return torch.optim.AdamW(parameter_groups(model, weight_decay), lr=lr)
    if kind == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {kind!r}; use one of {OPTIMIZERS}")


def lr_at(iteration: int, base: float, halve_every: int) -> float:
    """The learning rate at an iteration: base, halved every `halve_every` iterations."""
    return base * 0.5 ** (iteration // max(1, halve_every))
