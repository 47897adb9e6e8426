"""Guide randomisation: the training T1 made as imperfect as real guides are, the T2 target left unchanged.

Real T1 guides are 1-3 mm off their T2 after registration, have other contrast curves and bias fields,
may be blurrier or thick-sliced, or are missing. A network trained on perfect pairs trusts its guide
blindly; one trained on randomised guides can only gain from the T1 where the LR T2 agrees with it.
Each part is drawn independently with its own chance (0 turns it off), on the T1 slab around one
training slice, before the patch is cut:

- ``misregistration``: a rigid motion of the T1 volume, shifts U(-max, max) mm along each axis
  (in-plane and through-plane) and rotations U(-max, max) degrees about each axis, sampled
  trilinearly from the neighbouring slices;
- ``resolution``: either a Gaussian blur (sigma U(0.3, max) mm in every axis) or thick slices
  (a box average of U(2, 5) mm along a random axis with a random phase, linearly resampled back);
- ``intensity``: a smooth random monotone curve (piecewise linear through sorted random knots),
  a gamma, a smooth multiplicative bias field and Gaussian noise;
- ``dropout``: the guide replaced by zeros (an absent T1).

All sizes are in millimetres and use the volume's voxel spacing (slice, row, column). numpy and torch
only, so it runs wherever a training pack is read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import numpy as np
import torch
import torch.nn.functional as F

GUIDE_PARTS = ("misregistration", "resolution", "intensity", "dropout")
CURVE_KNOTS = 6


@dataclass(frozen=True)
class GuideRandomisation:
    """Chances and ranges of the guide randomisation (one chance per part in GUIDE_PARTS)."""

    misregistration: float = 0.6
    resolution: float = 0.3
    intensity: float = 0.5
    dropout: float = 0.1
    max_shift_mm: float = 3.0
    max_rotation_degrees: float = 3.0
    max_blur_mm: float = 1.5
    thick_slice_mm: tuple[float, float] = (2.0, 5.0)
    max_noise: float = 0.04

    @classmethod
    def only(cls, parts: list[str] | tuple[str, ...]) -> GuideRandomisation:
        """The default chances for the named parts, 0 for the others ('none' or [] turns every part off)."""
        unknown = sorted(set(parts) - set(GUIDE_PARTS) - {"all", "none"})
        if unknown:
            raise ValueError(f"unknown guide randomisation part(s) {unknown}; use {', '.join(GUIDE_PARTS)}, all or none")
        if "all" in parts:
            return cls()
        default = cls()
        return replace(default, **{part: getattr(default, part) if part in parts else 0.0 for part in GUIDE_PARTS})

    @property
    def active(self) -> list[str]:
        return [part for part in GUIDE_PARTS if getattr(self, part) > 0]

    def slab_radius(self, spacing: tuple[float, float, float]) -> int:
        """Slices needed on each side of the centre slice: the largest shift, slice thickness, blur and the
        through-plane reach of a tilt at 128 mm from the slice centre (a 256 mm field of view)."""
        tilt = 128.0 * math.tan(math.radians(self.max_rotation_degrees))
        reach = self.max_shift_mm + tilt + self.thick_slice_mm[1] + 2 * self.max_blur_mm
        return int(math.ceil(reach / spacing[0])) + 1

    def to_dict(self) -> dict[str, float | list[float]]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}

    def apply(self, stack: np.ndarray, index: int, spacing: tuple[float, float, float],
              rng: np.random.Generator) -> np.ndarray:
        """The randomised T1 slice `index` of a (N, H, W) T1 stack of consecutive slices, float32 (H, W)."""
        use = {part: rng.random() < getattr(self, part) for part in GUIDE_PARTS}
        if use["dropout"]:
            return np.zeros(stack.shape[1:], dtype=np.float32)
        if use["misregistration"] or use["resolution"]:
            image = self._resample(stack, index, spacing, use["misregistration"], use["resolution"], rng)
        else:
            image = np.asarray(stack[index], dtype=np.float32)
        if use["intensity"]:
            image = self._remap_intensity(image, rng)
        return image.astype(np.float32, copy=False)

    def _resample(self, stack: np.ndarray, index: int, spacing: tuple[float, float, float], move: bool,
                  degrade: bool, rng: np.random.Generator) -> np.ndarray:
        radius = self.slab_radius(spacing)
        rows = np.clip(np.arange(index - radius, index + radius + 1), 0, stack.shape[0] - 1)
        slab = torch.from_numpy(np.ascontiguousarray(stack[rows], dtype=np.float32))[None, None]
        if degrade:
            slab = self._lose_resolution(slab, spacing, rng)
        if not move:
            return slab[0, 0, radius].numpy()
        return _rigidly_moved_slice(slab, radius, spacing, self._motion(rng))

    def _motion(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(rotation matrix, shift in mm) in (slice, row, column) axes."""
        angles = np.radians(rng.uniform(-self.max_rotation_degrees, self.max_rotation_degrees, 3))
        rotation = np.eye(3)
        for axis, angle in enumerate(angles):
            a, b = [k for k in range(3) if k != axis]
            turn = np.eye(3)
            turn[a, a] = turn[b, b] = math.cos(angle)
            turn[a, b], turn[b, a] = -math.sin(angle), math.sin(angle)
            rotation = turn @ rotation
        return rotation, rng.uniform(-self.max_shift_mm, self.max_shift_mm, 3)

    def _lose_resolution(self, slab: torch.Tensor, spacing: tuple[float, float, float],
                         rng: np.random.Generator) -> torch.Tensor:
        """A Gaussian blur of the slab, or thick slices along one random axis (box average, resampled back)."""
        if rng.random() < 0.5:
            sigma_mm = rng.uniform(0.3, self.max_blur_mm)
            for axis in range(3):
                slab = _blur_along(slab, sigma_mm / spacing[axis], axis)
            return slab
        axis = int(rng.integers(3))
        width = max(2, int(round(rng.uniform(*self.thick_slice_mm) / spacing[axis])))
        return _thick_slices_along(slab, width, int(rng.integers(width)), axis)

    def _remap_intensity(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Monotone random curve, gamma, bias field and noise on the tissue of a normalised slice."""
        top = 1.5
        knots_x = np.linspace(0.0, top, CURVE_KNOTS)
        knots_y = np.concatenate([[0.0], np.cumsum(rng.uniform(0.2, 1.0, CURVE_KNOTS - 1))])
        knots_y *= top / knots_y[-1]
        positive = np.clip(image, 0.0, None)
        curve = np.interp(positive, knots_x, knots_y, right=np.nan)
        curve = np.where(np.isnan(curve), positive, curve)  # above the last knot: unchanged
        curve = curve ** math.exp(rng.uniform(-0.4, 0.4))
        y, x = np.meshgrid(*(np.linspace(-1.0, 1.0, n) for n in image.shape), indexing="ij")
        terms = np.stack([x, y, x * x, y * y, x * y])
        curve = curve * np.exp(np.tensordot(rng.uniform(-0.3, 0.3, 5), terms, axes=1))
        noise = rng.uniform(0.0, self.max_noise)
        curve = curve + noise * rng.standard_normal(image.shape) * (image > 0)
        return curve.astype(np.float32)


def _blur_along(slab: torch.Tensor, sigma: float, axis: int) -> torch.Tensor:
    """Gaussian blur of a (1, 1, D, H, W) tensor along spatial axis 0-2 (sigma in voxels), edges replicated."""
    radius = max(1, int(math.ceil(3 * sigma)))
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / sigma) ** 2)
    taps /= taps.sum()
    shape = [1, 1, 1, 1, 1]
    shape[2 + axis] = taps.numel()
    padding = [0, 0, 0, 0, 0, 0]
    padding[2 * (2 - axis)] = padding[2 * (2 - axis) + 1] = radius
    return F.conv3d(F.pad(slab, padding, mode="replicate"), taps.view(shape))


def _thick_slices_along(slab: torch.Tensor, width: int, phase: int, axis: int) -> torch.Tensor:
    """Box averages of `width` voxels along spatial axis 0-2 starting at `phase`, linearly resampled back."""
    length = slab.shape[2 + axis]
    starts = np.arange(phase - width, length, width)
    centres, averages = [], []
    for start in starts:
        lo, hi = max(0, start), min(length, start + width)
        if hi <= lo:
            continue
        centres.append(0.5 * (lo + hi - 1))
        averages.append(slab.narrow(2 + axis, lo, hi - lo).mean(dim=2 + axis, keepdim=True))
    thick = torch.cat(averages, dim=2 + axis)
    position = torch.arange(length, dtype=torch.float32)
    centre = torch.tensor(centres, dtype=torch.float32)
    upper = torch.searchsorted(centre, position).clamp(1, len(centres) - 1) if len(centres) > 1 else None
    if upper is None:
        return thick.expand_as(slab).clone()
    lower = upper - 1
    weight = ((position - centre[lower]) / (centre[upper] - centre[lower])).clamp(0.0, 1.0)
    shape = [1, 1, 1, 1, 1]
    shape[2 + axis] = length
    weight = weight.view(shape)
    return (thick.index_select(2 + axis, lower) * (1 - weight) + thick.index_select(2 + axis, upper) * weight)


def _rigidly_moved_slice(slab: torch.Tensor, centre_slice: int, spacing: tuple[float, float, float],
                         motion: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The centre slice of a (1, 1, D, H, W) slab after the slab's content is moved rigidly (rotation about
    the slice centre, then shift; both in mm), trilinear, zero outside."""
    rotation, shift = motion
    _, _, depth, height, width = slab.shape
    spacing_arr = np.asarray(spacing, dtype=np.float64)
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    centre = np.array([centre_slice, (height - 1) / 2, (width - 1) / 2])
    points = np.stack([np.full(rows.shape, centre_slice, dtype=np.float64), rows, cols], axis=-1)
    # moving the content by (R, t) samples the source at R^-1 (p - c - t) + c, in mm
    offset_mm = (points - centre) * spacing_arr - shift
    source = (offset_mm @ rotation) / spacing_arr + centre  # rows of p @ R = R^T p = R^-1 p
    sizes = np.array([depth, height, width], dtype=np.float64)
    normalised = 2.0 * source / (sizes - 1) - 1.0
    grid = torch.from_numpy(normalised[..., ::-1].copy()).float()[None, None]  # (x, y, z) order
    moved = F.grid_sample(slab, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return moved[0, 0, 0].numpy()
