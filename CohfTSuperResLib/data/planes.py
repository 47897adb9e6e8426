"""Training and validation planes of the through-plane mode (numpy + torch only).

The through-plane network restores planes that contain the thick-slice axis, after the thick slices were
interpolated onto the thin grid (``model.upsample.upsample_slices_cubic``); the thick axis runs along the
plane's rows. Training simulates the acquisition on the 1 mm volumes of a pack: a thick axis drawn among the
volume's three axes, a plane containing it, n thin slices per thick slice (THROUGH_PLANE_FACTORS), a box or
Gaussian slice profile with a slice gap of 0-20 % (``degradations.thick_slices``), a random phase of the thick
slices, noise, then the interpolation back. The target is the thin plane itself; the T1 plane, when used,
goes through the guide randomisation of the in-plane models (misregistration in 3-D, resolution loss,
intensity, dropout) before it is cut, and sometimes gets thick slices along the T2's own slice axis (a 2-D T1 of the
same orientation: ``parallel_slices``).

A sample's input, target and T1 crops share their position; flips along either axis keep the relation
(transposes would move the thick axis off the rows and are not used). Sampling is a pure function of
(seed, rank, iteration), as for the in-plane patches.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from CohfTSuperResLib.data.degradations import (
    SLICE_PROFILES,
    GuideRandomisation,
    IntensityAugmentation,
    thick_slices,
)
from CohfTSuperResLib.data.pack import PackVolume
from CohfTSuperResLib.data.patches import BRAIN_LEVEL, PATCH_TISSUE_FRACTION, PATCH_TRIES, brain_slices
from CohfTSuperResLib.model.upsample import upsample_slices_cubic
from CohfTSuperResLib.options import THROUGH_PLANE_FACTORS

MAX_GAP = 0.2  # slice gaps drawn up to this fraction of the spacing
GAP_CHANCE = 0.5  # the share of samples with a gap
NOISE_CHANCE = 0.5
MAX_NOISE = 0.02  # std of the Gaussian noise on the thick slices, normalised units
INTENSITY_SCALE = 0.1  # T2 pair scaled by U(1 - r, 1 + r): the thick volume's robust scale differs from the thin one's
MIN_THICK_SLICES = 4  # a thick axis is drawn for a factor only where it holds at least this many thick slices
VALIDATION_FACTOR = 4
VALIDATION_PLANES = 12


def simulated_plane(thin: np.ndarray, factor: int, profile: str = "box", gap: float = 0.0, phase: int = 0,
                    noise: float = 0.0, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(interpolated input, target) of a thin (L, W) plane whose rows are the thick axis: thick slices of `factor`
    rows starting at row `phase`, Gaussian noise of std `noise` on them, interpolated back; both (n*m, W)."""
    target = thin[phase:]
    target = target[: factor * (target.shape[0] // factor)]
    thick = thick_slices(target, factor, profile, gap)
    if noise > 0:
        thick = thick + noise * rng.standard_normal(thick.shape).astype(np.float32)
    interpolated = upsample_slices_cubic(torch.from_numpy(thick)[None, None], factor)[0, 0].numpy()
    return np.ascontiguousarray(interpolated), np.ascontiguousarray(target, dtype=np.float32)


def needs_transpose(thick_axis: int, normal_axis: int) -> bool:
    """Whether a plane cut across `normal_axis` of a (D, H, W) volume must be transposed to put `thick_axis` on its
    rows (the plane keeps the two other axes in order)."""
    remaining = [axis for axis in range(3) if axis != normal_axis]
    return remaining[0] != thick_axis


@dataclass
class PlaneSet:
    """Fixed validation planes, in the layout the validation reads (``training/validation.py``): per volume,
    interpolated inputs (``lr``), thin targets (``hr``) and T1 planes (N, H, W)."""

    factor: int
    lr: list[np.ndarray] = field(default_factory=list)
    hr: list[np.ndarray] = field(default_factory=list)
    t1: list[np.ndarray] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    @property
    def num_slices(self) -> int:
        return sum(stack.shape[0] for stack in self.hr)

    def slices(self) -> list[tuple[int, int]]:
        return [(v, i) for v, stack in enumerate(self.hr) for i in range(stack.shape[0])]


def validation_factor(factors: tuple[int, ...]) -> int:
    """The factor a run trained on `factors` is validated at: VALIDATION_FACTOR where it is among them, else the
    trained factor nearest to it (the larger of two), so that a network of one factor is chosen at that factor."""
    return min(factors, key=lambda factor: (abs(factor - VALIDATION_FACTOR), -factor))


def validation_planes(volumes: list[PackVolume], factor: int = VALIDATION_FACTOR,
                      count: int = VALIDATION_PLANES) -> PlaneSet:
    """Planes across the last axis of each volume, evenly spread over the brain, thick along the volume's slice
    axis (axis 0): box profile, no gap, no noise, phase 0."""
    planes = PlaneSet(factor)
    for volume in volumes:
        hr = np.moveaxis(volume.hr.astype(np.float32), 2, 0)
        t1 = np.moveaxis(volume.t1.astype(np.float32), 2, 0)
        brain = brain_slices(hr)
        chosen = brain[np.linspace(0, len(brain) - 1, min(count, len(brain))).round().astype(int)]
        pairs = [simulated_plane(hr[index], factor) for index in chosen]
        rows = pairs[0][1].shape[0]
        planes.names.append(f"{volume.name} (x{factor} box across axis 0)")
        planes.lr.append(np.stack([pair[0] for pair in pairs]))
        planes.hr.append(np.stack([pair[1] for pair in pairs]))
        planes.t1.append(np.ascontiguousarray(t1[chosen, :rows]))
    return planes


@dataclass
class _Volume:
    """One training volume as three stacks, each cut across one axis (thin T2, T1), with the brain planes of each."""

    name: str
    hr: list[np.ndarray]
    t1: list[np.ndarray]
    spacing: list[tuple[float, float, float]]
    brain: list[np.ndarray]


class PlaneSampler:
    """Batches of simulated through-plane samples: (input, target, T1) (B, 1, P, P) float32 tensors, thick axis along
    the rows; batch(iteration) depends only on (seed, rank, iteration).

    patch: the side of the thin-grid crop (smaller where a plane is smaller). intensity: the gamma / bias field of
    the T2 target before the acquisition is simulated (and on the T1). guide: the T1's randomisation. factors: the
    thin slices per thick slice drawn from (all of THROUGH_PLANE_FACTORS by default; one, to train for one factor).
    """

    def __init__(self, volumes: list[PackVolume], patch: int, batch_size: int, seed: int = 0, rank: int = 0,
                 augment: bool = True, intensity: IntensityAugmentation | None = None,
                 guide: GuideRandomisation | None = None,
                 factors: tuple[int, ...] = THROUGH_PLANE_FACTORS) -> None:
        if not factors or not set(factors) <= set(THROUGH_PLANE_FACTORS):
            raise ValueError(f"factors must be among {THROUGH_PLANE_FACTORS}, got {factors}")
        self.batch_size, self.seed, self.rank = batch_size, seed, rank
        self.factors = tuple(sorted(set(factors)))
        self.augment, self.intensity, self.guide = augment, intensity, guide
        self.volumes = []
        for volume in volumes:
            hr, t1 = volume.hr.astype(np.float32), volume.t1.astype(np.float32)
            stacks = [np.ascontiguousarray(np.moveaxis(x, axis, 0)) for x in (hr, t1) for axis in range(3)]
            spacing = [tuple(volume.spacing[a] for a in (axis, *(k for k in range(3) if k != axis)))
                       for axis in range(3)]
            brain = [brain_slices(stack) for stack in stacks[:3]]
            self.volumes.append(_Volume(volume.name, stacks[:3], stacks[3:], spacing,
                                        [b if b.size else np.arange(stack.shape[0])
                                         for b, stack in zip(brain, stacks)]))
        if not any(self._thick_axes(volume, self.factors[0]) for volume in self.volumes):
            raise ValueError(f"no training volume has {MIN_THICK_SLICES * self.factors[0]} slices along "
                             "any axis: too small to simulate thick slices")
        smallest = min(min(v.hr[0].shape) for v in self.volumes)
        self.patch_shape = (min(patch, smallest - smallest % self.factors[-1]),) * 2
        self.weights = np.array([v.hr[0].size if self._thick_axes(v, self.factors[0]) else 0
                                 for v in self.volumes], dtype=np.float64)
        self.weights /= self.weights.sum()

    @staticmethod
    def _thick_axes(volume: _Volume, factor: int) -> list[int]:
        """The axes of a volume long enough to hold MIN_THICK_SLICES thick slices of `factor` thin ones."""
        return [axis for axis in range(3) if volume.hr[axis].shape[0] >= MIN_THICK_SLICES * factor]

    def batch(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.rank, iteration])
        samples = [self._sample(rng) for _ in range(self.batch_size)]
        return tuple(torch.from_numpy(np.stack([s[k] for s in samples])[:, None]) for k in range(3))

    def _sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        volume = self.volumes[rng.choice(len(self.volumes), p=self.weights)]
        factor = int(rng.choice([n for n in self.factors if self._thick_axes(volume, n)]))
        thick_axis = int(rng.choice(self._thick_axes(volume, factor)))
        normal = int(rng.choice([axis for axis in range(3) if axis != thick_axis]))
        index = int(rng.choice(volume.brain[normal]))
        transpose = needs_transpose(thick_axis, normal)
        thin = volume.hr[normal][index].T if transpose else volume.hr[normal][index]
        if self.intensity is not None:
            thin = self.intensity.gamma_and_bias(thin, rng)
        scale = rng.uniform(1.0 - INTENSITY_SCALE, 1.0 + INTENSITY_SCALE)
        profile = SLICE_PROFILES[int(rng.integers(len(SLICE_PROFILES)))]
        gap = rng.uniform(0.0, MAX_GAP) if rng.random() < GAP_CHANCE else 0.0
        noise = rng.uniform(0.0, MAX_NOISE) if rng.random() < NOISE_CHANCE else 0.0
        phase = int(rng.integers(factor))
        interpolated, target = simulated_plane(scale * thin, factor, profile, gap, phase, noise, rng)
        slice_axis = 1 + [axis for axis in range(3) if axis != normal].index(thick_axis)  # in the stack's axes
        t1 = (volume.t1[normal][index] if self.guide is None
              else self.guide.apply(volume.t1[normal], index, volume.spacing[normal], rng, slice_axis))
        t1 = (t1.T if transpose else t1)[phase:phase + target.shape[0]]
        if self.intensity is not None:
            t1 = self.intensity.gamma_and_bias(t1, rng)
        return same_crop(interpolated, target, t1, self.patch_shape, self.augment, rng)


def same_crop(interpolated: np.ndarray, target: np.ndarray, t1: np.ndarray, patch_shape: tuple[int, int], augment: bool,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The same patch of the three planes: the most tissue of a few random places (edge-padded up to patch_shape where
    a plane is smaller); random flips when `augment`."""
    size_h = min(patch_shape[0], target.shape[0])
    size_w = min(patch_shape[1], target.shape[1])
    best = None
    for _ in range(PATCH_TRIES):
        top = int(rng.integers(target.shape[0] - size_h + 1))
        left = int(rng.integers(target.shape[1] - size_w + 1))
        tissue = float((target[top:top + size_h, left:left + size_w] > BRAIN_LEVEL).mean())
        if best is None or tissue > best[0]:
            best = (tissue, top, left)
        if tissue >= PATCH_TISSUE_FRACTION:
            break
    _, top, left = best
    crops = [x[top:top + size_h, left:left + size_w] for x in (interpolated, target, t1)]
    padded = [np.pad(x, ((0, patch_shape[0] - size_h), (0, patch_shape[1] - size_w)), mode="edge") for x in crops]
    if augment:
        axes = tuple(axis for axis in (0, 1) if rng.random() < 0.5)
        if axes:
            padded = [np.flip(x, axis=axes) for x in padded]
    return tuple(np.ascontiguousarray(x, dtype=np.float32) for x in padded)


class OwnPlaneSampler:
    """Batches of (input, target, T1) (B, 1, P, P) float32 tensors made from one thick-slice T2 itself, for adapting
    the through-plane network to it (inference/subject_adaptation.py): SMORE's idea, with the T1.

    Each thick slice is a plane with fine pixels along both in-plane axes. One of them plays the thick axis: its rows
    are resampled to the thin spacing (so that `factor` rows span one thick slice), then thick slices are simulated
    along it as in training (box or Gaussian profile, gap, noise, phase) and interpolated back; the resampled plane
    is the target. The T1 plane is the T1 averaged over the same thick slice, resampled the same way.

    t2, t1: (K, J, I) normalised voxels, thick slices along axis 0 (the T1 already averaged over each thick slice).
    row_scales: for the planes' axes 0 (J) and 1 (I), the in-plane spacing / the thin spacing. batch(iteration)
    depends only on (seed, iteration).
    """

    def __init__(self, t2: np.ndarray, t1: np.ndarray | None, factor: int, row_scales: tuple[float, float], patch: int,
                 batch_size: int, seed: int = 0) -> None:
        self.factor, self.row_scales, self.batch_size, self.seed = factor, row_scales, batch_size, seed
        self.t2 = torch.from_numpy(np.ascontiguousarray(t2, dtype=np.float32))
        self.t1 = None if t1 is None else torch.from_numpy(np.ascontiguousarray(t1, dtype=np.float32))
        brain = brain_slices(t2)
        self.brain = brain if brain.size else np.arange(t2.shape[0])
        self.patch_shape = (patch, patch)

    def batch(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, iteration])
        samples = [self._sample(rng) for _ in range(self.batch_size)]
        return tuple(torch.from_numpy(np.stack([s[k] for s in samples])[:, None]) for k in range(3))

    def _rows_resampled(self, plane: torch.Tensor, axis: int) -> np.ndarray:
        """The (J, I) plane with `axis` moved onto the rows and resampled to the thin spacing (cubic, antialiased)."""
        plane = plane if axis == 0 else plane.T
        rows = max(self.factor * MIN_THICK_SLICES, round(plane.shape[0] * self.row_scales[axis]))
        if rows == plane.shape[0]:
            return plane.numpy()
        resized = torch.nn.functional.interpolate(plane[None, None], size=(rows, plane.shape[1]), mode="bicubic",
                                                  align_corners=False, antialias=True)
        return resized[0, 0].numpy()

    def _sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        index = int(rng.choice(self.brain))
        axis = int(rng.integers(2))
        thin = self._rows_resampled(self.t2[index], axis)
        profile = SLICE_PROFILES[int(rng.integers(len(SLICE_PROFILES)))]
        gap = rng.uniform(0.0, MAX_GAP) if rng.random() < GAP_CHANCE else 0.0
        noise = rng.uniform(0.0, MAX_NOISE) if rng.random() < NOISE_CHANCE else 0.0
        phase = int(rng.integers(self.factor))
        interpolated, target = simulated_plane(thin, self.factor, profile, gap, phase, noise, rng)
        t1 = (np.zeros_like(target) if self.t1 is None
              else self._rows_resampled(self.t1[index], axis)[phase:phase + target.shape[0]])
        return same_crop(interpolated, target, t1, self.patch_shape, True, rng)
