"""Cohf-T network: configuration, variants and a small registry to build them."""

from __future__ import annotations

from typing import Any

from CohfTSuperResLib.model.cohft_net import CohfTNet
from CohfTSuperResLib.model.config import CohfTConfig, variant_config

__all__ = ["CohfTConfig", "CohfTNet", "build_model", "count_parameters"]


def build_model(variant: str = "S", scale: int = 2, **switches: Any) -> CohfTNet:
    """Build a named variant ('S', 'M', 'L') at a scale (2, 3, 4).

    Ablation switches: use_t1=False (no inter-modality attention, no T1 input),
    inter_head=False (no inter-head correlation), adain=False (no AdaIN).
    """
    return CohfTNet(variant_config(variant, scale, **switches))


def count_parameters(model: Any) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
