"""Training data: paired (T2, T1) volumes -> aligned LR T2 / HR T2 / HR T1 slices and patches.

Manifest (CSV with a header, or JSON: a list of objects or {"pairs": [...]}) with columns
- ``t2``: the HR T2 volume (any SimpleITK-readable file). Required.
- ``t1``: the T1 volume of the same subject. Required (it may be ignored by a no-T1 model).
- ``t1_to_t2``: optional ITK transform file with which ``sitk.Resample(t1, t2, tfm)`` puts
  the T1 on the T2 grid (i.e. it maps T2 physical points to T1 points).
- ``t1_to_ref`` and ``t2_to_ref``: optional alternative, two transforms that each register
  one image (moving) to a common reference (fixed, e.g. the study's FLAIR); the T1 is then
  resampled with ``t1_to_ref`` composed with the inverse of ``t2_to_ref``.
- ``role``: ``train`` (default), ``val`` (whole volume for validation) or ``split``
  (a central slab of brain slices for validation, the rest, minus a guard gap, for training).
- ``subject``: a name for logs (default: the T2 path).
- ``slice_axis``: voxel axis of the acquisition (0, 1, 2); default: the axis of largest
  spacing, 2 on ties (axial for the isotropic MNI volumes).
Relative paths are relative to the manifest's folder. Without any transform the T1 is
resampled on the T2 grid in physical space (identity), or used as is when the grids match.

Per volume: the T1 goes onto the T2 grid (linear interpolation, 0 outside), both are split
into slices along the acquisition axis, each volume is divided by its own robust scale
(``normalize.robust_scale``, the one inference uses: the T2 by that of its synthesised LR
volume, which is what inference sees, the T1 by that of the T1 as read), the slices are trimmed to a multiple
of the scale, slices without brain are dropped (``brain_slices``) and the LR T2 is
synthesised from each whole HR slice with ``degrade`` (the paper's k-space protocol).

Patches: an LR patch of p x p at (top, left) pairs with the HR T2 / T1 patch of sp x sp at
(s*top, s*left) (the DFT grid: LR sample j sits at HR sample s*j). Augmentation is the
8-element dihedral group applied so that this grid relation still holds: a flip of the LR
patch (j -> p-1-j) pairs with the HR flip i -> s(p-1) - i, which is the flip of the HR window
started s-1 samples earlier; rot90 = transpose + flip. Sampling is a pure function of
(seed, rank, iteration), so training can resume exactly and ranks draw different batches.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

from .degrade import crop_to_multiple, degrade
from .normalize import normalize, robust_scale

ROLES = ("train", "val", "split")
BRAIN_LEVEL = 0.1  # normalised intensity above which a voxel counts as tissue
BRAIN_FRACTION = 0.05  # a brain slice has at least this fraction of tissue voxels
PATCH_TISSUE_FRACTION = 0.25  # sampled HR patches have at least this fraction of tissue (after a few tries)
PATCH_TRIES = 8


@dataclass
class PairSpec:
    """One manifest row."""

    t2: Path
    t1: Path | None
    t1_to_t2: Path | None = None
    t1_to_ref: Path | None = None
    t2_to_ref: Path | None = None
    role: str = "train"
    subject: str = ""
    slice_axis: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {key: (str(value) if isinstance(value, Path) else value) for key, value in self.__dict__.items()}


def _path(value: Any, base: Path) -> Path | None:
    if value is None or str(value).strip() == "":
        return None
    path = Path(str(value).strip()).expanduser()
    return path if path.is_absolute() else (base / path)


def read_manifest(path: str | Path) -> list[PairSpec]:
    """Rows of a CSV or JSON manifest as PairSpec (paths resolved against the manifest's folder)."""
    path = Path(path)
    base = path.resolve().parent
    if path.suffix.lower() == ".json":
        loaded = json.loads(path.read_text())
        rows = loaded["pairs"] if isinstance(loaded, dict) else loaded
    else:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    specs = []
    for number, row in enumerate(rows, 1):
        if not row.get("t2"):
            raise ValueError(f"{path}: row {number} has no t2")
        role = (row.get("role") or "train").strip()
        if role not in ROLES:
            raise ValueError(f"{path}: row {number} has role {role!r}; use one of {ROLES}")
        axis = row.get("slice_axis")
        to_ref = (_path(row.get("t1_to_ref"), base), _path(row.get("t2_to_ref"), base))
        if (to_ref[0] is None) != (to_ref[1] is None):
            raise ValueError(f"{path}: row {number} needs both t1_to_ref and t2_to_ref, or neither")
        specs.append(PairSpec(
            t2=_path(row["t2"], base), t1=_path(row.get("t1"), base), t1_to_t2=_path(row.get("t1_to_t2"), base),
            t1_to_ref=to_ref[0], t2_to_ref=to_ref[1], role=role,
            subject=(row.get("subject") or str(row["t2"])).strip(),
            slice_axis=None if axis in (None, "") else int(axis),
        ))
    return specs


def write_manifest(specs: list[PairSpec], path: str | Path) -> None:
    """Write PairSpecs as a CSV manifest (absolute paths)."""
    columns = ["subject", "role", "t2", "t1", "t1_to_t2", "t1_to_ref", "t2_to_ref", "slice_axis"]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        for spec in specs:
            row = spec.to_dict()
            writer.writerow({key: ("" if row.get(key) is None else row[key]) for key in columns})


TEST_SUBJECT = "mni/patient26"
VALIDATION_SUBJECT = "mni/patient19"


def open_ms_specs(root: str | Path) -> list[PairSpec]:
    """The project's split of ../shared/data/open_ms: every pair except the held-out test subject
    mni/patient26; mni/patient19 is 'split' (a central axial slab validates, the rest trains)."""
    root = Path(root)
    specs = []
    for folder in sorted((root / "mni").glob("patient*")):
        name = f"mni/{folder.name}"
        if name == TEST_SUBJECT:
            continue
        specs.append(PairSpec(t2=folder / "t2.nii.gz", t1=folder / "t1.nii.gz", subject=name,
                              role="split" if name == VALIDATION_SUBJECT else "train"))
    for folder in sorted((root / "clinical").glob("patient*")):
        specs.append(PairSpec(t2=folder / "t2w.nii.gz", t1=folder / "t1w.nii.gz", t1_to_ref=folder / "t1w_to_flair.tfm",
                              t2_to_ref=folder / "t2w_to_flair.tfm", subject=f"clinical/{folder.name}"))
    return specs


# ----------------------------------------------------------------------------- volumes


def read_volume(path: Path) -> sitk.Image:
    return sitk.Cast(sitk.ReadImage(str(path)), sitk.sitkFloat32)


def default_slice_axis(image: sitk.Image) -> int:
    """Axis of largest spacing (the thick-slice acquisition axis); 2 when spacings tie."""
    spacing = image.GetSpacing()
    largest = max(spacing)
    if math.isclose(spacing[2], largest, rel_tol=1e-3):
        return 2
    return int(np.argmax(spacing))


def same_grid(a: sitk.Image, b: sitk.Image, tolerance: float = 1e-4) -> bool:
    return (a.GetSize() == b.GetSize()
            and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=tolerance)
            and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tolerance)
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=tolerance))


def t1_to_t2_transform(spec: PairSpec) -> sitk.Transform | None:
    """The transform that maps T2 physical points to T1 points (None: identity)."""
    if spec.t1_to_t2 is not None:
        return sitk.ReadTransform(str(spec.t1_to_t2))
    if spec.t1_to_ref is not None:
        t1_to_ref = sitk.ReadTransform(str(spec.t1_to_ref))
        t2_to_ref = sitk.ReadTransform(str(spec.t2_to_ref))
        # sitk.Resample(t2, ref, t2_to_ref) means t2_to_ref maps ref points -> T2 points; its inverse maps
        # T2 -> ref, then t1_to_ref maps ref -> T1. A CompositeTransform applies its last transform first.
        return sitk.CompositeTransform([t1_to_ref, t2_to_ref.GetInverse()])
    return None


def t1_on_t2_grid(t1: sitk.Image, t2: sitk.Image, transform: sitk.Transform | None) -> sitk.Image:
    """T1 resampled (linear, 0 outside) on the T2 grid; returned as is when the grids already match."""
    if transform is None and same_grid(t1, t2):
        return t1
    return sitk.Resample(t1, t2, transform if transform is not None else sitk.Transform(), sitk.sitkLinear, 0.0,
                         sitk.sitkFloat32)


def to_stack(image: sitk.Image, slice_axis: int) -> np.ndarray:
    """(slices, rows, columns) float32 array along voxel axis slice_axis (SimpleITK index order)."""
    return np.ascontiguousarray(np.moveaxis(sitk.GetArrayFromImage(image), 2 - slice_axis, 0), dtype=np.float32)


def brain_slices(stack: np.ndarray) -> np.ndarray:
    """Indices of the slices of a normalised (N, H, W) stack with brain: at least BRAIN_FRACTION of the
    voxels above BRAIN_LEVEL (10% of the volume's 99.5th percentile)."""
    fraction = (stack > BRAIN_LEVEL).reshape(stack.shape[0], -1).mean(axis=1)
    return np.flatnonzero(fraction >= BRAIN_FRACTION)


def gradient_correlation(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Pearson correlation of the gradient magnitude maps of two stacks (a registration check)."""
    def grad(x: np.ndarray) -> np.ndarray:
        gy, gx = np.gradient(x.astype(np.float64), axis=(-2, -1))
        return np.hypot(gy, gx)
    ga, gb = grad(a), grad(b)
    if mask is not None:
        ga, gb = ga[mask], gb[mask]
    ga, gb = ga.ravel() - ga.mean(), gb.ravel() - gb.mean()
    return float((ga @ gb) / (np.linalg.norm(ga) * np.linalg.norm(gb) + 1e-12))


@dataclass
class SliceSet:
    """Aligned, normalised slices of one or more volumes: LR (N, h, w), HR T2 and T1 (N, s*h, s*w) per volume."""

    scale: int
    lr: list[np.ndarray] = field(default_factory=list)
    hr: list[np.ndarray] = field(default_factory=list)
    t1: list[np.ndarray] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    def add(self, name: str, hr: np.ndarray, t1: np.ndarray) -> None:
        if hr.shape[0] == 0:
            return
        self.names.append(name)
        self.hr.append(np.ascontiguousarray(hr))
        self.t1.append(np.ascontiguousarray(t1))
        self.lr.append(np.ascontiguousarray(degrade(hr, self.scale).astype(np.float32)))

    @property
    def num_slices(self) -> int:
        return sum(stack.shape[0] for stack in self.hr)

    def slices(self) -> list[tuple[int, int]]:
        """(volume, slice) index pairs of every slice."""
        return [(v, i) for v, stack in enumerate(self.hr) for i in range(stack.shape[0])]


@dataclass
class LoadedPair:
    """One pair on the T2 grid, normalised, as (N, H, W) stacks trimmed to a multiple of the scale."""

    spec: PairSpec
    hr: np.ndarray
    t1: np.ndarray
    brain: np.ndarray


INTENSITY_REFERENCES = ("lr", "hr")


def t2_intensity_scale(hr: np.ndarray, scale: int, reference: str = "lr") -> float:
    """The T2 normalisation scale of a trimmed (N, H, W) HR stack in raw units.

    'lr' (default): ``robust_scale`` of the synthesised LR volume, which is what inference computes
    from its LR input; the k-space ringing of the LR adds many small positive background voxels, so
    this differs a lot from the HR's own percentile on skull-stripped data (about 0.74x at x2 on the
    MNI volumes). 'hr': ``robust_scale`` of the HR stack (the behaviour of runs started before
    this option existed).
    """
    if reference == "lr":
        return robust_scale(degrade(hr, scale))
    if reference == "hr":
        return robust_scale(hr)
    raise ValueError(f"intensity reference must be one of {INTENSITY_REFERENCES}, got {reference!r}")


def load_pair(spec: PairSpec, scale: int, intensity_reference: str = "lr") -> LoadedPair:
    """Read, register (T1 on the T2 grid), normalise, slice and trim one manifest pair.

    The T2 is divided by ``t2_intensity_scale`` (see there), the T1 by the robust scale of the T1
    volume as read (as inference does), before resampling.
    """
    t2 = read_volume(spec.t2)
    axis = spec.slice_axis if spec.slice_axis is not None else default_slice_axis(t2)
    hr = to_stack(t2, axis)
    # 'hr' keeps the exact former order (percentile of the untrimmed stack) so that old runs resume unchanged.
    t2_scale = robust_scale(hr) if intensity_reference == "hr" else None
    hr = crop_to_multiple(hr, scale)
    if t2_scale is None:
        t2_scale = t2_intensity_scale(hr, scale, intensity_reference)
    hr = normalize(hr, t2_scale)
    if spec.t1 is not None:
        t1_raw = read_volume(spec.t1)
        t1_scale = robust_scale(sitk.GetArrayViewFromImage(t1_raw))
        t1 = to_stack(t1_on_t2_grid(t1_raw, t2, t1_to_t2_transform(spec)), axis)
        t1 = crop_to_multiple(normalize(t1, t1_scale), scale)
    else:
        t1 = np.zeros_like(hr)
    return LoadedPair(spec, np.ascontiguousarray(hr), np.ascontiguousarray(t1), brain_slices(hr))


def build_datasets(specs: list[PairSpec], scale: int, val_slices: int = 12, guard: int = 4,
                   log: Any = None, intensity_reference: str = "lr") -> tuple[SliceSet, SliceSet]:
    """Training and validation SliceSets from manifest rows (see the module docstring for roles).

    A 'split' volume gives its central `val_slices` brain slices to validation and drops `guard`
    slices on each side of that slab from training, so no training slice neighbours a validation one.
    """
    train, val = SliceSet(scale), SliceSet(scale)
    for spec in specs:
        pair = load_pair(spec, scale, intensity_reference)
        brain = pair.brain
        if brain.size == 0:
            raise ValueError(f"{spec.subject}: no slice with brain (>= {BRAIN_FRACTION:.0%} of voxels above "
                             f"{BRAIN_LEVEL} after normalisation)")
        if spec.role == "train":
            train.add(spec.subject, pair.hr[brain], pair.t1[brain])
        elif spec.role == "val":
            val.add(spec.subject, pair.hr[brain], pair.t1[brain])
        else:
            middle = len(brain) // 2
            start = max(0, middle - val_slices // 2)
            val_index = brain[start:start + val_slices]
            low, high = val_index.min() - guard, val_index.max() + guard
            train_index = brain[(brain < low) | (brain > high)]
            train.add(spec.subject, pair.hr[train_index], pair.t1[train_index])
            val.add(spec.subject + " (val slab)", pair.hr[val_index], pair.t1[val_index])
        if log is not None:
            log(f"loaded {spec.subject} ({spec.role}): {pair.hr.shape[0]} slices of {pair.hr.shape[1]}x"
                f"{pair.hr.shape[2]}, {len(brain)} with brain")
    return train, val


# ----------------------------------------------------------------------------- patches


def crop_patch(lr: np.ndarray, hr: np.ndarray, t1: np.ndarray, scale: int, top: int, left: int, size: int,
               flip_y: bool, flip_x: bool, transpose: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Aligned (LR p x p, HR sp x sp, T1 sp x sp) patch at LR (top, left) with a dihedral augmentation.

    A flipped axis needs top/left >= 1: its HR window starts s-1 samples before s*top.
    """
    hr_size = scale * size
    y0 = scale * top - (scale - 1 if flip_y else 0)
    x0 = scale * left - (scale - 1 if flip_x else 0)
    if y0 < 0 or x0 < 0:
        raise ValueError("a flipped patch needs top and left >= 1")
    lr_patch = lr[top:top + size, left:left + size]
    hr_patch = hr[y0:y0 + hr_size, x0:x0 + hr_size]
    t1_patch = t1[y0:y0 + hr_size, x0:x0 + hr_size]
    axes = [axis for axis, flip in ((0, flip_y), (1, flip_x)) if flip]
    if axes:
        lr_patch, hr_patch, t1_patch = (np.flip(x, axis=axes) for x in (lr_patch, hr_patch, t1_patch))
    if transpose:
        lr_patch, hr_patch, t1_patch = (x.T for x in (lr_patch, hr_patch, t1_patch))
    return tuple(np.ascontiguousarray(x) for x in (lr_patch, hr_patch, t1_patch))


class PatchSampler:
    """Batches of random augmented patches; batch(iteration) depends only on (seed, rank, iteration)."""

    def __init__(self, data: SliceSet, patch: int, batch_size: int, seed: int = 0, rank: int = 0,
                 augment: bool = True) -> None:
        self.data, self.patch, self.batch_size = data, patch, batch_size
        self.seed, self.rank, self.augment = seed, rank, augment
        self.index = data.slices()
        if not self.index:
            raise ValueError("no training slices")
        small = [n for n, lr in zip(data.names, data.lr) if min(lr.shape[1:]) < patch + 1]
        if small:
            raise ValueError(f"LR slices of {small} are smaller than the patch size {patch} + 1")

    def batch(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(LR (B,1,p,p), HR (B,1,sp,sp), T1 (B,1,sp,sp)) float32 tensors."""
        rng = np.random.default_rng([self.seed, self.rank, iteration])
        scale, size = self.data.scale, self.patch
        lrs, hrs, t1s = [], [], []
        for _ in range(self.batch_size):
            volume, index = self.index[rng.integers(len(self.index))]
            lr, hr, t1 = self.data.lr[volume][index], self.data.hr[volume][index], self.data.t1[volume][index]
            flips = rng.integers(0, 2, size=3).astype(bool) if self.augment else np.zeros(3, bool)
            best = None
            for _ in range(PATCH_TRIES):
                top = int(rng.integers(1, lr.shape[0] - size + 1))
                left = int(rng.integers(1, lr.shape[1] - size + 1))
                y, x = scale * top, scale * left
                tissue = float((hr[y:y + scale * size, x:x + scale * size] > BRAIN_LEVEL).mean())
                if best is None or tissue > best[0]:
                    best = (tissue, top, left)
                if tissue >= PATCH_TISSUE_FRACTION:
                    break
            patch = crop_patch(lr, hr, t1, scale, best[1], best[2], size, *flips)
            lrs.append(patch[0])
            hrs.append(patch[1])
            t1s.append(patch[2])
        return tuple(torch.from_numpy(np.stack(x)[:, None]) for x in (lrs, hrs, t1s))


def main(argv: list[str] | None = None) -> int:
    """`python -m CohfTSuperResLib.data open-ms ROOT OUT.csv`: write the project's open_ms training manifest;
    `python -m CohfTSuperResLib.data check MANIFEST`: T1/T2 gradient correlation per pair (registration check)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m CohfTSuperResLib.data")
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("open-ms", help="write the training manifest of ../shared/data/open_ms")
    make.add_argument("root", type=Path)
    make.add_argument("output", type=Path)
    check = commands.add_parser("check", help="gradient correlation of T1 and T2 on the T2 grid, per pair")
    check.add_argument("manifest", type=Path)
    args = parser.parse_args(argv)
    if args.command == "open-ms":
        write_manifest(open_ms_specs(args.root), args.output)
        print(f"wrote {args.output}")
        return 0
    for spec in read_manifest(args.manifest):
        pair = load_pair(spec, 1)
        mask = (pair.hr > BRAIN_LEVEL) | (pair.t1 > BRAIN_LEVEL)
        aligned = gradient_correlation(pair.hr[pair.brain], pair.t1[pair.brain], mask[pair.brain])
        print(f"{spec.subject}: gradient correlation T1 vs T2 = {aligned:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
