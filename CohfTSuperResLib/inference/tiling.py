"""Overlapping tiles of a slice, and their seamless blending back into the whole.

Cohf-T has global operations (dilated windows spanning the whole map, global
inter-modality attention, instance statistics in AdaIN), so a tiled result can
not equal the whole-slice result exactly; tiles are therefore used only when a
whole slice does not fit in memory, are as large as memory allows and overlap
by a quarter of their side. Tiles are cut on the LR grid; each HR output tile
is weighted by a linear ramp across the overlaps it shares with a neighbour
(weight 1 elsewhere, also along the slice's own border) and the weighted sum
is divided by the sum of weights, so there is no seam.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

OVERLAP_FRACTION = 0.25

Forward = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]


@dataclass(frozen=True)
class Tile:
    """A rectangle of the LR slice: rows top .. top+height-1, columns left .. left+width-1."""

    top: int
    left: int
    height: int
    width: int


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Starts of tiles of size `tile` covering 0 .. length-1, step tile - overlap, the last one flush with the end."""
    if tile >= length:
        return [0]
    step = tile - overlap
    if step <= 0:
        raise ValueError(f"tile overlap {overlap} must be smaller than the tile size {tile}")
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def overlap_for(tile: int, multiple: int = 1) -> int:
    """Default overlap: a quarter of the tile side, rounded up to `multiple`."""
    quarter = max(1, round(tile * OVERLAP_FRACTION))
    return -(-quarter // multiple) * multiple


def plan_tiles(height: int, width: int, tile: int, overlap: int) -> list[Tile]:
    """Row-major tiles of at most tile x tile covering a height x width slice."""
    return [
        Tile(top, left, min(tile, height), min(tile, width))
        for top in tile_starts(height, tile, overlap)
        for left in tile_starts(width, tile, overlap)
    ]


def _ramp(length: int, ramp: int, rising: bool, falling: bool) -> torch.Tensor:
    """1-D weights: 1, with linear ramps (never 0) of `ramp` samples at the start and/or end."""
    weights = torch.ones(length, dtype=torch.float32)
    ramp = min(ramp, length)
    edge = (torch.arange(ramp, dtype=torch.float32) + 0.5) / ramp
    if rising:
        weights[:ramp] = torch.minimum(weights[:ramp], edge)
    if falling:
        weights[length - ramp :] = torch.minimum(weights[length - ramp :], edge.flip(0))
    return weights


def blend_weights(tile: Tile, height: int, width: int, ramp: int) -> torch.Tensor:
    """(height, width)-grid weights of one tile (any grid: pass sizes and ramp on the grid you blend on)."""
    rows = _ramp(tile.height, ramp, tile.top > 0, tile.top + tile.height < height)
    cols = _ramp(tile.width, ramp, tile.left > 0, tile.left + tile.width < width)
    return rows[:, None] * cols[None, :]


def scaled(tile: Tile, scale: int) -> Tile:
    """The same rectangle on the grid `scale` times finer (DFT convention: LR j -> HR s*j)."""
    return Tile(tile.top * scale, tile.left * scale, tile.height * scale, tile.width * scale)


def run_tiled(
    forward: Forward,
    lr: torch.Tensor,
    guide: torch.Tensor | None,
    scale: int,
    tile: int,
    overlap: int,
    between_tiles: Callable[[], None] = lambda: None,
) -> torch.Tensor:
    """Apply forward (B,1,h,w)+(B,1,sh,sw) -> (B,1,sh,sw) tile by tile and blend the tiles into one output.

    `between_tiles` is called before each tile (e.g. to honour a cancel request).
    """
    batch, _, height, width = lr.shape
    out = torch.zeros(batch, 1, scale * height, scale * width, dtype=torch.float32, device=lr.device)
    total = torch.zeros(scale * height, scale * width, dtype=torch.float32, device=lr.device)
    for lr_tile in plan_tiles(height, width, tile, overlap):
        between_tiles()
        hr_tile = scaled(lr_tile, scale)
        rows = slice(lr_tile.top, lr_tile.top + lr_tile.height)
        cols = slice(lr_tile.left, lr_tile.left + lr_tile.width)
        hr_rows = slice(hr_tile.top, hr_tile.top + hr_tile.height)
        hr_cols = slice(hr_tile.left, hr_tile.left + hr_tile.width)
        guide_tile = None if guide is None else guide[..., hr_rows, hr_cols]
        result = forward(lr[..., rows, cols], guide_tile).float()
        weights = blend_weights(hr_tile, scale * height, scale * width, scale * overlap).to(lr.device)
        out[..., hr_rows, hr_cols] += result * weights
        total[hr_rows, hr_cols] += weights
    return out / total

