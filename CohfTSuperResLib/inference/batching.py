"""How many slices to run at once, when to tile, and what to do when the accelerator runs out of memory.

Memory model: the activations of one slice take up to ACTIVATION_MAPS float32 maps of
dim * (1 + convs_per_rdb) channels (the widest dense concatenation of an RDB) at the HR resolution,
freed memory kept in the process included (allocator.py); the peak RSS behind that figure is in
docs/benchmarks.md.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from CohfTSuperResLib.model import CohfTConfig
from CohfTSuperResLib.inference.tiling import overlap_for

ACTIVATION_MAPS = 6.0


@dataclass(frozen=True)
class BatchPlan:
    """Slices per batch and, when whole slices do not fit, the LR tile side and overlap."""

    batch_size: int
    tile: int | None
    overlap: int


def size_multiple(config: CohfTConfig) -> int:
    """LR side multiple that no attention block has to pad: window * intra patch, and the inter patch
    (times the window when the inter-modality attention works in windows)."""
    inter = config.inter_patch * (config.window if config.use_t1 and config.cross_position == "local" else 1)
    return math.lcm(config.window * config.intra_patch, inter)


def input_multiple(config: CohfTConfig) -> int:
    """LR side multiple of what the inference engine gives the network (with sides of at least `size_multiple`):
    window * intra patch, so the intra-modality attentions tile the map with whole windows; the inter-modality
    attention pads its own token map (by reflection) to its multiple, which costs far less than running every
    block on an input padded that far."""
    return config.window * config.intra_patch


def slice_bytes(config: CohfTConfig, height: int, width: int) -> int:
    """Estimated peak activation bytes of one LR slice of height x width."""
    channels = config.dim * (1 + config.convs_per_rdb)
    return int(ACTIVATION_MAPS * 4 * channels * config.scale**2 * height * width)


def plan_batches(config: CohfTConfig, height: int, width: int, budget: int, batch_size: int | None = None) -> BatchPlan:
    """Whole slices in batches that fit `budget` bytes; else square tiles (multiple of `size_multiple`) that fit.

    height and width are the padded LR slice size; an explicit batch_size overrides the memory-based one.
    """
    multiple = size_multiple(config)
    per_slice = slice_bytes(config, height, width)
    if per_slice <= budget:
        return BatchPlan(batch_size or max(1, budget // per_slice), None, 0)
    side = max(multiple, math.isqrt(budget // slice_bytes(config, 1, 1)) // multiple * multiple)
    per_tile = slice_bytes(config, min(side, height), min(side, width))
    return BatchPlan(batch_size or max(1, budget // per_tile), side, overlap_for(side))


def is_out_of_memory(error: BaseException) -> bool:
    """True for an accelerator out-of-memory error (CUDA's OutOfMemoryError, MPS's RuntimeError)."""
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "MPS backend out of memory" in str(error)
    )


def run_in_batches(
    items: Sequence[int],
    batch_size: int,
    device: torch.device,
    run_batch: Callable[[Sequence[int], torch.device], None],
) -> torch.device:
    """Call run_batch on consecutive chunks of items; return the device the last batch ran on.

    On an accelerator out-of-memory error the batch is halved and retried; at one
    item the work moves to the CPU with a warning. run_batch must not have
    stored anything for a batch that raised.
    """
    start = 0
    while start < len(items):
        chunk = items[start : start + batch_size]
        try:
            run_batch(chunk, device)
        except (torch.OutOfMemoryError, RuntimeError) as error:
            if not is_out_of_memory(error) or device.type == "cpu":
                raise
            _release_cache(device)
            if batch_size > 1:
                batch_size //= 2
            else:
                warnings.warn(
                    f"{device.type.upper()} ran out of memory on a single slice; continuing on the CPU (slower)",
                    RuntimeWarning,
                    stacklevel=2,
                )
                device = torch.device("cpu")
            continue
        start += len(chunk)
    return device


def _release_cache(device: torch.device) -> None:
    """Give the accelerator's cached blocks back after an out-of-memory error."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()
