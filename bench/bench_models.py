"""The network the accuracy benchmarks measure: the shipped model when there is one, else random weights."""

from __future__ import annotations

import torch

from CohfTSuperResLib.errors import WeightsError
from CohfTSuperResLib.model import CohfTNet, build_model
from CohfTSuperResLib.weights.registry import find_model


def network(variant: str, scale: int) -> tuple[CohfTNet, str]:
    """(network in eval mode, 'shipped' or 'random (seed 0)') for the variant with T1 at the scale."""
    try:
        return find_model(variant, scale).load(), "shipped"
    except WeightsError:
        torch.manual_seed(0)
        return build_model(variant, scale).eval(), "random (seed 0)"
