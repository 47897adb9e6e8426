"""Hyper-parameters of the Cohf-T network and the paper's S / M / L variants (Sec. 4.2, 4.3)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

SCALES = (2, 3, 4)


@dataclass(frozen=True)
class CohfTConfig:
    """Everything that fixes the network's shape; stored beside shipped weights.

    dim: feature dimension d. stages: number of (main-stream stage, Cohf-T block)
    pairs. rrdbs_per_stage: RRDBs in each main-stream stage (5 in the paper).
    rdbs_per_rrdb / convs_per_rdb: RRDB depth (growth channels = dim).
    window: g, the side of the short- and long-distance windows, in tokens.
    intra_patch / inter_patch: p of the intra-modality and inter-modality
    attention. heads: M. mlp_ratio: hidden width of the residual MLPs / dim.
    use_t1: inter-modality attention with the HR T1 (False = no T1 input at all).
    inter_head: the inter-head correlation of the basic attention module.
    adain: the point-wise adaptive instance normalisation before inter-modality attention.
    """

    scale: int = 2
    dim: int = 32
    stages: int = 4
    rrdbs_per_stage: int = 5
    rdbs_per_rrdb: int = 3
    convs_per_rdb: int = 5
    window: int = 6
    intra_patch: int = 1
    inter_patch: int = 5
    heads: int = 4
    mlp_ratio: int = 2
    use_t1: bool = True
    inter_head: bool = True
    adain: bool = True

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {self.scale}")
        for name in ("intra_patch", "inter_patch"):
            width = self.dim * getattr(self, name) ** 2
            if width % self.heads:
                raise ValueError(f"dim * {name}^2 = {width} is not divisible by heads = {self.heads}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict, for metadata next to weights."""
        return asdict(self)


VARIANTS: dict[str, CohfTConfig] = {
    # Ours-S: d = 16, two stages, RRDBs of two RDBs of three convolutions.
    "S": CohfTConfig(dim=16, stages=2, rdbs_per_rrdb=2, convs_per_rdb=3),
    # Ours-M: d = 16, three stages, RRDBs of three RDBs of three convolutions.
    "M": CohfTConfig(dim=16, stages=3, rdbs_per_rrdb=3, convs_per_rdb=3),
    # Ours-L: the defaults (d = 32, four stages, ESRGAN's RRDB of three five-conv RDBs).
    "L": CohfTConfig(),
}


def variant_config(variant: str, scale: int, **switches: Any) -> CohfTConfig:
    """Config of a named variant at a scale, with optional ablation switches."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown model variant {variant!r}; choose one of {sorted(VARIANTS)}")
    return replace(VARIANTS[variant], scale=scale, **switches)
