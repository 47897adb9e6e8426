"""Padding to multiples and token grouping (window / dilated window / global).

All helpers work on token maps (B, C, H, W). Windows are g x g tokens:
`window` groups neighbours (short distance, Fig. 4a); `dilated` groups tokens
H/g and W/g apart, so each window spans the whole map (long distance, Fig. 4b);
`global` puts all tokens in one group. Grouped tokens are (B * groups, g*g, C), or
(B * groups, heads, g*g, C / heads) when split into heads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

GROUPINGS = ("window", "dilated", "global")


def padded_length(length: int, multiple: int, minimum: int = 0) -> int:
    """`length` rounded up to a multiple of `multiple`, and to at least `minimum` (itself a multiple)."""
    return max(-(-length // multiple) * multiple, minimum)


def pad_to_multiple(x: torch.Tensor, multiple: int, minimum: int = 0) -> torch.Tensor:
    """Pad H and W at the bottom/right up to a multiple (and to at least `minimum`, itself a multiple): reflect where
    the map is large enough, else replicate.

    While compiling or exporting (symbolic sizes) always reflect, without branching on the sizes: the inference
    engine gives the network sides of at least the largest multiple any block pads to (batching.size_multiple).
    """
    height, width = x.shape[-2:]
    if torch.compiler.is_compiling():
        return F.pad(x, (0, (-width) % multiple, 0, (-height) % multiple), mode="reflect")
    pad_h, pad_w = padded_length(height, multiple, minimum) - height, padded_length(width, multiple, minimum) - width
    if pad_h == 0 and pad_w == 0:
        return x
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


def group_head_tokens(x: torch.Tensor, grouping: str, window: int, heads: int) -> torch.Tensor:
    """(B, C, H, W) -> (B * groups, heads, tokens per group, C / heads), one copy; H, W multiples of `window`.

    Channel c belongs to head c // (C / heads), as when a token's C values are split into heads.
    """
    batch, channels, height, width = x.shape
    width_per_head = channels // heads
    if grouping == "global":
        return x.reshape(batch, heads, width_per_head, height * width).transpose(-1, -2).contiguous()
    rows, cols = height // window, width // window
    if grouping == "window":
        x = x.view(batch, heads, width_per_head, rows, window, cols, window).permute(0, 3, 5, 1, 4, 6, 2)
    elif grouping == "dilated":
        x = x.view(batch, heads, width_per_head, window, rows, window, cols).permute(0, 4, 6, 1, 3, 5, 2)
    else:
        raise ValueError(f"unknown grouping {grouping!r}; choose one of {GROUPINGS}")
    return x.reshape(batch * rows * cols, heads, window * window, width_per_head)


def group_tokens(x: torch.Tensor, grouping: str, window: int) -> torch.Tensor:
    """(B, C, H, W) -> (B * groups, tokens per group, C); H and W are multiples of `window`."""
    return group_head_tokens(x, grouping, window, 1)[:, 0]


def ungroup_tokens(tokens: torch.Tensor, grouping: str, window: int, batch: int, height: int,
                   width: int) -> torch.Tensor:
    """Inverse of `group_tokens`: back to (B, C, H, W), in channels-last memory layout (one copy)."""
    channels = tokens.shape[-1]
    if grouping == "global":
        return tokens.reshape(batch, height, width, channels).permute(0, 3, 1, 2)
    rows, cols = height // window, width // window
    x = tokens.view(batch, rows, cols, window, window, channels)
    if grouping == "window":
        x = x.permute(0, 1, 3, 2, 4, 5)
    elif grouping == "dilated":
        x = x.permute(0, 3, 1, 4, 2, 5)
    else:
        raise ValueError(f"unknown grouping {grouping!r}; choose one of {GROUPINGS}")
    return x.reshape(batch, height, width, channels).permute(0, 3, 1, 2)
