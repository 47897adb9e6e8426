"""One run of the network over every slice of a checked volume (steps 3-5 of the engine's pipeline, engine.py).

Slice by slice along the checked slice axis, in batches sized from the device's free memory (batching.py), with
freed memory kept in the process (allocator.py): the T1 of the batch's slab resampled onto the output grid, the
batch's content box cut (cropping.py; the cubic upsampling around it), padded to the network's input multiple
(batching.py), the network run on it whole, or on overlapping blended tiles where it does not fit (tiling.py).
Back in T2 units, float32; exactly 0 wherever the cubic upsampling of the input is exactly 0, and all-zero slices
are not run at all; a NaN / Inf network output is an InferenceError, never a returned volume.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from CohfTSuperResLib.errors import InferenceCancelled, InferenceError
from CohfTSuperResLib.imageio.normalize import denormalize, normalize
from CohfTSuperResLib.inference.backends import Runner
from CohfTSuperResLib.inference.batching import input_multiple, plan_batches, run_in_batches, size_multiple
from CohfTSuperResLib.inference.cropping import content_box
from CohfTSuperResLib.inference.devices import working_memory_budget
from CohfTSuperResLib.inference.geometry import Grid, output_grid, resample_to, slab, to_slice_stack
from CohfTSuperResLib.inference.input_checks import InputCheck
from CohfTSuperResLib.inference.tiling import Tile, run_tiled, scaled
from CohfTSuperResLib.model.partition import pad_to_multiple, padded_length
from CohfTSuperResLib.model.upsample import upsample_cubic
from CohfTSuperResLib.options import RunOptions

Progress = Callable[[int, int], None]
Cancel = Callable[[], bool]


def in_plane_volume(checked: InputCheck, runner: Runner, options: RunOptions, device: torch.device,
                    progress: Progress | None = None, cancel: Cancel | None = None) -> sitk.Image:
    """The checked T2 super-resolved in-plane by `runner`, on the output grid (3-D; geometry.output_grid)."""
    grid = output_grid(Grid.of(checked.t2), checked.scale, checked.slice_axis)
    return grid.image_from_array(SliceRun(runner, checked, grid, options, device, progress, cancel).volume())


class SliceRun:
    """One run of the network over every slice of one checked volume: the state of that run and nothing else.

    Slices with content run one at a time on the CPU (largest box first) unless a batch size is given, in batches
    sized from free memory on a GPU; each on the box around its content (cropping.py) or whole, padded to the
    network's input multiple, whole or in overlapping tiles where it does not fit (batching.py, tiling.py).
    """

    def __init__(self, runner: Runner, checked: InputCheck, grid: Grid, options: RunOptions, device: torch.device,
                 progress: Progress | None, cancel: Cancel | None) -> None:
        self.runner, self.grid, self.device = runner, grid, device
        self.scale, self.slice_axis = checked.scale, checked.slice_axis
        self.whole_slices = options.whole_slices
        self.progress = progress or (lambda done, total: None)
        self.cancel = cancel or (lambda: False)
        self.t2_scale = checked.t2_scale
        self.guide = None if checked.t1 is None else (checked.t1, checked.t1_scale)
        self.multiple = input_multiple(runner.config)
        self.minimum_side = size_multiple(runner.config)
        self.stack = to_slice_stack(normalize(checked.t2_voxels, checked.t2_scale), self.slice_axis)
        count, height, width = self.stack.shape
        self.busy = [index for index in range(count) if np.any(self.stack[index])]
        self.done, self.total = count - len(self.busy), count
        box = self._content_box(torch.from_numpy(self.stack))  # the union of every slice's box: the largest batch
        run_h, run_w = (height, width) if box is None else (box.height, box.width)
        padded_h, padded_w = (padded_length(n, self.multiple, self.minimum_side) for n in (run_h, run_w))
        self.plan = plan_batches(runner.config, padded_h, padded_w, working_memory_budget(device), options.batch_size)
        # on the CPU one slice at a time unless batch_size says otherwise: a batch runs no faster per voxel there,
        # takes more memory, and runs the network on the union of its slices' content boxes
        self.batch_size = 1 if options.batch_size is None and device.type == "cpu" else self.plan.batch_size

    def volume(self) -> np.ndarray:
        """SR voxels in T2 units (SimpleITK order, output grid)."""
        volume = np.zeros(tuple(reversed(self.grid.size)), dtype=np.float32)
        out = to_slice_stack(volume, self.slice_axis)
        self.progress(self.done, self.total)

        def run_batch(indices: Sequence[int], batch_device: torch.device) -> None:
            self._check_cancel()
            with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported below, as an error
                result = denormalize(self._batch(indices, batch_device), self.t2_scale)
            broken = int(np.count_nonzero(~np.isfinite(result)))
            if broken:
                raise InferenceError(
                    f"the network gave {broken:,} NaN or Inf voxel(s) in slices {min(indices)}-{max(indices)}: the "
                    "weights are unusable for this input (damaged, diverged, or the intensities out of range); "
                    "nothing was written"
                )
            out[list(indices)] = result
            self.done += len(indices)
            self.progress(self.done, self.total)

        order = self._largest_first(self.busy) if self.batch_size == 1 else self.busy
        run_in_batches(order, self.batch_size, self.device, run_batch)
        return volume

    def _largest_first(self, indices: Sequence[int]) -> list[int]:
        """The slices `indices` by decreasing area of the map the network runs on (ties in order).

        Freed memory stays in the process during a run (allocator.py); when each slice's box is a little larger
        than the last, no freed block fits the next slice's maps and the heap grows. Largest first, every later
        slice fits in what the first one freed.
        """

        def area(index: int) -> int:
            box = self._content_box(torch.from_numpy(self.stack[index : index + 1]))
            return self.stack[index].size if box is None else box.height * box.width

        return sorted(indices, key=area, reverse=True)

    def _check_cancel(self) -> None:
        if self.cancel():
            raise InferenceCancelled("super-resolution cancelled; nothing was returned")

    def _batch(self, indices: Sequence[int], device: torch.device) -> np.ndarray:
        """SR (B, s*h, s*w) of the slices `indices` of the LR stack: the network on their content box (cropping.py),
        the cubic upsampling around it, 0 where every LR sample the cubic upsampling reads is 0."""
        lr = torch.from_numpy(np.ascontiguousarray(self.stack[list(indices)]))[:, None]
        guide = None if self.guide is None else self._guide(indices)
        box = self._content_box(lr)
        if box is None:
            sr = self._network(lr, guide, device)
        else:
            rows, cols = slice(box.top, box.top + box.height), slice(box.left, box.left + box.width)
            hr_box = scaled(box, self.scale)
            hr_rows = slice(hr_box.top, hr_box.top + hr_box.height)
            hr_cols = slice(hr_box.left, hr_box.left + hr_box.width)
            sr = upsample_cubic(lr, self.scale)
            sr[..., hr_rows, hr_cols] = self._network(
                lr[..., rows, cols], None if guide is None else guide[..., hr_rows, hr_cols], device
            )
        return torch.where(_foreground(lr, self.scale), sr, 0.0)[:, 0].numpy()

    def _content_box(self, lr: torch.Tensor) -> Tile | None:
        """Where the network runs on these LR slices: their content box, or None for whole slices."""
        return None if self.whole_slices else content_box(lr, self.multiple, self.minimum_side)

    def _network(self, lr: torch.Tensor, guide: torch.Tensor | None, device: torch.device) -> torch.Tensor:
        """The network's SR (B, 1, s*h, s*w) of (B, 1, h, w) LR slices: padded to the input multiple and minimum
        side (batching.py), whole or in tiles."""
        height, width = lr.shape[-2:]
        lr_padded = pad_to_multiple(lr, self.multiple, self.minimum_side)
        if guide is not None:
            guide = pad_to_multiple(guide, self.scale * self.multiple, self.scale * self.minimum_side)
        if self.plan.tile is None:
            sr = self.runner.run(lr_padded, guide, device)
        else:
            sr = run_tiled(
                lambda lr_tile, t1_tile: self.runner.run(lr_tile, t1_tile, device),
                lr_padded, guide, self.scale, self.plan.tile, self.plan.overlap, self._check_cancel,
            )
        return sr[..., : self.scale * height, : self.scale * width]

    def _guide(self, indices: Sequence[int]) -> torch.Tensor:
        """Normalised T1 of the slices `indices`, resampled onto the output grid: (B, 1, s*h, s*w)."""
        t1, t1_scale = self.guide
        first, last = min(indices), max(indices) + 1
        voxels = resample_to(t1, slab(self.grid, first, last, self.slice_axis))
        slices = to_slice_stack(voxels, self.slice_axis)[[index - first for index in indices]]
        return torch.from_numpy(normalize(np.ascontiguousarray(slices), t1_scale))[:, None]


def _foreground(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """Boolean HR mask (B,1,s*h,s*w): False where every LR sample in the cubic kernel's support is 0.

    An HR sample x reads LR samples floor(x/s)-1 .. floor(x/s)+2 (Keys support |t| < 2),
    so the mask is a 4-wide max filter of (lr != 0), repeated s times on each axis.
    """
    nonzero = (lr != 0).float()
    support = F.max_pool2d(F.pad(nonzero, (1, 2, 1, 2)), kernel_size=4, stride=1)
    return support.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1) > 0
