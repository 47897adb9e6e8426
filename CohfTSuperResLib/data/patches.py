"""Training slices and patches: aligned LR T2 / HR T2 / HR T1, augmentation, seeded sampling (numpy + torch only).

A ``SliceSet`` holds, per volume, normalised HR T2 and T1 slices (N, H, W) with H and W multiples of
the scale, and the LR T2 synthesised from each whole HR slice with ``degrade`` (the paper's
k-space protocol).

Patches: an LR patch of ph x pw at (top, left) pairs with the HR T2 / T1 patch of s*ph x s*pw at
(s*top, s*left) (the DFT grid: LR sample j sits at HR sample s*j). The dihedral augmentation keeps
this grid relation: a flip of the LR patch (j -> p-1-j) pairs with the HR flip i -> s(p-1) - i,
which is the flip of the HR window started s-1 samples earlier; rot90 = transpose + flip (square
patches only). Patches are as large as asked and as the smallest slice allows (whole slices when
the slices are smaller than the patch).

Augmentations (``degradations.py``): the intensity augmentation of the T2 pair and the T1, and the guide
randomisation of the T1, on whole slices before the patch is cut.

Sampling is a pure function of (seed, rank, iteration), so training can resume exactly and ranks
draw different batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from CohfTSuperResLib.data.degradations import GuideRandomisation, IntensityAugmentation, degrade

BRAIN_LEVEL = 0.1  # normalised intensity above which a voxel counts as tissue
BRAIN_FRACTION = 0.05  # a brain slice has at least this fraction of tissue voxels
PATCH_TISSUE_FRACTION = 0.25  # sampled HR patches have at least this fraction of tissue (after a few tries)
PATCH_TRIES = 8
MIN_PATCH = 8  # smallest LR patch side the sampler accepts


def brain_slices(stack: np.ndarray, area: int | None = None) -> np.ndarray:
    """Indices of the slices of a normalised (N, H, W) stack with brain: at least BRAIN_FRACTION of the
    voxels above BRAIN_LEVEL (10% of the volume's 99.5th percentile). area: the voxels of a whole slice, where the
    stack is a crop of slices whose other voxels are background (default: H * W)."""
    tissue = (stack > BRAIN_LEVEL).reshape(stack.shape[0], -1).sum(axis=1)
    return np.flatnonzero(tissue >= BRAIN_FRACTION * (area or stack.shape[1] * stack.shape[2]))


@dataclass
class SliceSet:
    """Aligned, normalised slices of one or more volumes: LR (N, h, w), HR T2 and T1 (N, s*h, s*w) per volume,
    consecutive slices of each volume, with its voxel spacing in mm (slice, row, column)."""

    scale: int
    lr: list[np.ndarray] = field(default_factory=list)
    hr: list[np.ndarray] = field(default_factory=list)
    t1: list[np.ndarray] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    spacings: list[tuple[float, float, float]] = field(default_factory=list)

    def add(self, name: str, hr: np.ndarray, t1: np.ndarray,
            spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> None:
        """Add a volume's consecutive HR T2 and T1 slices (float32, H and W multiples of the scale); the LR is
        synthesised."""
        if hr.shape[0] == 0:
            return
        self.names.append(name)
        self.spacings.append(tuple(float(x) for x in spacing))
        self.hr.append(np.ascontiguousarray(hr, dtype=np.float32))
        self.t1.append(np.ascontiguousarray(t1, dtype=np.float32))
        self.lr.append(degrade(self.hr[-1], self.scale))

    @property
    def num_slices(self) -> int:
        return sum(stack.shape[0] for stack in self.hr)

    def slices(self) -> list[tuple[int, int]]:
        """(volume, slice) index pairs of every slice."""
        return [(v, i) for v, stack in enumerate(self.hr) for i in range(stack.shape[0])]


def crop_patch(lr: np.ndarray, hr: np.ndarray, t1: np.ndarray, scale: int, top: int, left: int,
               size: int | tuple[int, int], flip_y: bool, flip_x: bool,
               transpose: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Aligned (LR ph x pw, HR T2 and T1 s*ph x s*pw) patch at LR (top, left) with a dihedral augmentation.

    A flipped axis needs top/left >= 1: its HR window starts s-1 samples before s*top. A transpose
    needs a square patch.
    """
    size_h, size_w = (size, size) if isinstance(size, int) else size
    if transpose and size_h != size_w:
        raise ValueError("a transposed patch must be square")
    y0 = scale * top - (scale - 1 if flip_y else 0)
    x0 = scale * left - (scale - 1 if flip_x else 0)
    if y0 < 0 or x0 < 0:
        raise ValueError("a flipped patch needs top and left >= 1")
    lr_patch = lr[top:top + size_h, left:left + size_w]
    hr_patch = hr[y0:y0 + scale * size_h, x0:x0 + scale * size_w]
    t1_patch = t1[y0:y0 + scale * size_h, x0:x0 + scale * size_w]
    axes = [axis for axis, flip in ((0, flip_y), (1, flip_x)) if flip]
    if axes:
        lr_patch, hr_patch, t1_patch = (np.flip(x, axis=axes) for x in (lr_patch, hr_patch, t1_patch))
    if transpose:
        lr_patch, hr_patch, t1_patch = (x.T for x in (lr_patch, hr_patch, t1_patch))
    return tuple(np.ascontiguousarray(x) for x in (lr_patch, hr_patch, t1_patch))


class PatchSampler:
    """Batches of random augmented patches; batch(iteration) depends only on (seed, rank, iteration).

    guide: the guide randomisation (data/degradations.py) applied to the T1 slab of each sample before
    the intensity augmentation; the LR and HR T2 are never touched by it.
    """

    def __init__(self, data: SliceSet, patch: int, batch_size: int, seed: int = 0, rank: int = 0,
                 augment: bool = True, intensity: IntensityAugmentation | None = None,
                 guide: GuideRandomisation | None = None) -> None:
        self.data, self.batch_size = data, batch_size
        self.seed, self.rank, self.augment, self.intensity, self.guide = seed, rank, augment, intensity, guide
        self.index = data.slices()
        if not self.index:
            raise ValueError("no training slices")
        smallest_h = min(lr.shape[1] for lr in data.lr)
        smallest_w = min(lr.shape[2] for lr in data.lr)
        self.patch_shape = (min(patch, smallest_h - 1), min(patch, smallest_w - 1))  # -1: room for the flip offset
        needed = min(patch, MIN_PATCH)
        if min(self.patch_shape) < needed:
            raise ValueError(f"LR slices of {smallest_h} x {smallest_w} are smaller than the patch size {needed} + 1")

    def batch(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(LR (B,1,ph,pw), HR (B,1,s*ph,s*pw), T1 (B,1,s*ph,s*pw)) float32 tensors."""
        rng = np.random.default_rng([self.seed, self.rank, iteration])
        scale = self.data.scale
        size_h, size_w = self.patch_shape
        square = size_h == size_w
        lrs, hrs, t1s = [], [], []
        for _ in range(self.batch_size):
            volume, index = self.index[rng.integers(len(self.index))]
            lr, hr, t1 = self.data.lr[volume][index], self.data.hr[volume][index], self.data.t1[volume][index]
            flips = rng.integers(0, 2, size=3).astype(bool) if self.augment else np.zeros(3, bool)
            flips[2] &= square
            if self.guide is not None:
                t1 = self.guide.apply(self.data.t1[volume], index, self.data.spacings[volume], rng,
                                      0 if self.guide.parallel_slices > 0 else None)  # the slices' own axis
            if self.intensity is not None:
                lr, hr, t1 = self.intensity.apply(hr, t1, scale, rng)
            best = None
            for _ in range(PATCH_TRIES):
                top = int(rng.integers(1, lr.shape[0] - size_h + 1))
                left = int(rng.integers(1, lr.shape[1] - size_w + 1))
                y, x = scale * top, scale * left
                tissue = float((hr[y:y + scale * size_h, x:x + scale * size_w] > BRAIN_LEVEL).mean())
                if best is None or tissue > best[0]:
                    best = (tissue, top, left)
                if tissue >= PATCH_TISSUE_FRACTION:
                    break
            patch = crop_patch(lr, hr, t1, scale, best[1], best[2], self.patch_shape, *flips)
            lrs.append(patch[0])
            hrs.append(patch[1])
            t1s.append(patch[2])
        return tuple(torch.from_numpy(np.stack(x)[:, None]) for x in (lrs, hrs, t1s))
