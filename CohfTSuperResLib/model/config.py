"""Hyper-parameters of the Cohf-T network and the paper's S / M / L variants (Sec. 4.2, 4.3)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from CohfTSuperResLib.options import SCALES, THROUGH_PLANE_SCALE, VARIANTS, check_scale

ADAIN_MODULATIONS = ("pixel", "channel")
CROSS_POSITIONS = ("none", "local")
# Values of the switches added after release 0.1.0 that reproduce the paper's text and that release:
# a configuration stored without them (older weights files) means these.
PAPER_TEXT_SWITCHES: dict[str, Any] = {"adain_modulation": "pixel", "cross_position": "none", "guide_input": False}


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
    adain_modulation: 'pixel' = the paper's one gamma / beta map shared by all channels (beta is then
    removed by the attention's channel LayerNorm); 'channel' = a gamma / beta per pixel and channel.
    cross_position: 'none' = the paper's inter-modality attention over all tokens of the slice, which
    carry no position; 'local' = attention within aligned g x g token windows with a learned relative
    position bias that starts as a locality prior (the co-located T1 patch first). Size-independent.
    guide_input: the HR T1 and its gradient, folded to LR size (space-to-depth), also enter the
    main stream's input gate: a direct path for the guide (an extension of the paper).
    The last three are only used with use_t1; PAPER_TEXT_SWITCHES gives the paper's values.
    scale: the in-plane factor (2, 3, 4), or THROUGH_PLANE_SCALE (1) for the through-plane network, which
    restores planes already interpolated onto the thin-slice grid (no upsampling inside the network).
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
    adain_modulation: str = "channel"
    cross_position: str = "local"
    guide_input: bool = True

    def __post_init__(self) -> None:
        check_scale(self.scale, (THROUGH_PLANE_SCALE, *SCALES))
        for name in ("dim", "stages", "rrdbs_per_stage", "rdbs_per_rrdb", "convs_per_rdb", "window", "intra_patch",
                     "inter_patch", "heads", "mlp_ratio"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("use_t1", "inter_head", "adain", "guide_input"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.adain_modulation not in ADAIN_MODULATIONS:
            raise ValueError(f"adain_modulation must be one of {ADAIN_MODULATIONS}, got {self.adain_modulation!r}")
        if self.cross_position not in CROSS_POSITIONS:
            raise ValueError(f"cross_position must be one of {CROSS_POSITIONS}, got {self.cross_position!r}")
        for name in ("intra_patch", "inter_patch"):
            width = self.dim * getattr(self, name) ** 2
            if width % self.heads:
                raise ValueError(f"dim * {name}^2 = {width} is not divisible by heads = {self.heads}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict, for metadata next to weights."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CohfTConfig:
        """The config a stored dict describes; switches it lacks take their paper-text values
        (PAPER_TEXT_SWITCHES, what weights written before them mean). ValueError for unknown keys or bad values."""
        if not isinstance(values, dict):
            raise ValueError(f"a Cohf-T configuration is a JSON object, got {type(values).__name__}")
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown Cohf-T configuration key(s): {', '.join(unknown)}")
        return cls(**{**PAPER_TEXT_SWITCHES, **values})


VARIANT_CONFIGS: dict[str, CohfTConfig] = {  # keyed by options.VARIANTS
    # Ours-S: d = 16, two stages, RRDBs of two RDBs of three convolutions.
    "S": CohfTConfig(dim=16, stages=2, rdbs_per_rrdb=2, convs_per_rdb=3),
    # Ours-M: d = 16, three stages, RRDBs of three RDBs of three convolutions.
    "M": CohfTConfig(dim=16, stages=3, rdbs_per_rrdb=3, convs_per_rdb=3),
    # Ours-L: the defaults (d = 32, four stages, ESRGAN's RRDB of three five-conv RDBs).
    "L": CohfTConfig(),
}


assert tuple(VARIANT_CONFIGS) == VARIANTS, "options.VARIANTS and the variant configs must list the same variants"


def variant_config(variant: str, scale: int, **switches: Any) -> CohfTConfig:
    """Config of a named variant at a scale, with optional ablation switches."""
    if variant not in VARIANT_CONFIGS:
        raise ValueError(f"unknown model variant {variant!r}; choose one of {sorted(VARIANT_CONFIGS)}")
    return replace(VARIANT_CONFIGS[variant], scale=scale, **switches)
