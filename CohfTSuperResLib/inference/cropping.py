"""The in-plane box of a slice batch that holds the anatomy, so the network skips the background around it.

Clinical slices are largely background (zero outside a defaced or masked head, or low noise).
The network runs on the box of the samples above `CONTENT_THRESHOLD` (normalised units, tissue
about 0 .. 1: 0.02 leaves out faint background, such as ringing or low noise around the head),
widened by `CONTENT_MARGIN` LR samples of real context on every side, and grown with more real context
to the network's input multiple and minimum side (batching.py), so no padding is invented. Outside the box the engine
writes the cubic upsampling the network adds its detail to. The network has slice-wide
operations (dilated windows, AdaIN statistics), so the result inside differs slightly from a
whole-slice run (docs/benchmarks.md).
"""

from __future__ import annotations

import torch

from CohfTSuperResLib.model.partition import padded_length
from CohfTSuperResLib.inference.tiling import Tile

CONTENT_THRESHOLD = 0.02
CONTENT_MARGIN = 8


def _span(present: torch.Tensor, multiple: int, minimum: int, margin: int) -> tuple[int, int]:
    """(start, length) along one axis: the True run widened by `margin`, length a multiple and at least `minimum`,
    inside the axis."""
    length = present.numel()
    indices = present.nonzero()
    first, last = int(indices[0]), int(indices[-1])
    needed = last - first + 1 + 2 * margin
    size = padded_length(needed, multiple, minimum)
    if size >= length:
        return 0, length
    start = first - margin - (size - needed) // 2
    return min(max(start, 0), length - size), size


def content_box(
    lr: torch.Tensor,
    multiple: int,
    minimum: int = 0,
    threshold: float = CONTENT_THRESHOLD,
    margin: int = CONTENT_MARGIN,
) -> Tile | None:
    """Box of (..., h, w) LR slices around every sample above `threshold` (all slices together).

    Sides are multiples of `multiple` and at least `minimum` unless they span the whole axis. None when nothing is above
    the threshold or the box would be the whole slice (then there is nothing to skip).
    """
    content = (lr > threshold).reshape(-1, *lr.shape[-2:]).any(dim=0)
    if not bool(content.any()):
        return None
    top, height = _span(content.any(dim=1), multiple, minimum, margin)
    left, width = _span(content.any(dim=0), multiple, minimum, margin)
    if (height, width) == tuple(lr.shape[-2:]):
        return None
    return Tile(top, left, height, width)
