"""The training pack: every training and validation slice of a manifest in one compact file.

`cohft-sr pack --manifest M --out pack.npz` reads the manifest's pairs (``pairs.load_pair``: the T1
put onto the T2 grid, slices along the acquisition axis, trimmed to a multiple of 12), keeps the
slices with brain, gives a 'split' volume's central slab to validation (with a guard gap to
training), crops each volume to the bounding box of its non-zero voxels (plus a margin, a multiple
of 12) and stores the HR T2 and T1 slices in float16 with ``numpy.savez_compressed``. Training
reads it with numpy and torch alone (``cohft-sr train --pack``; no SimpleITK needed), so the pack
can be carried to a GPU machine beside the repository. Training from a manifest builds the same
pack in memory, so both routes give the same batches.

Stored per volume ``v``: ``hr_v`` and ``t1_v`` (N, H, W) float16 (T2 / its HR volume's robust scale,
T1 / its own), as two byte planes (uint8 (2, N, H, W): low bytes, high bytes; they compress about 15% better than
the float16 values; version 1 packs hold the float16 arrays themselves). The JSON header ``meta`` (bytes; no pickle
anywhere) holds the format version, the volume names and roles ('train' or 'val'), per volume its voxel spacing in
mm (slice, row, column; 1 mm where a pack has none) and the factors by which the T2 is further divided at each scale
so that it is normalised like inference normalises an LR input (``pairs.lr_reference_factor``). A pack volume
holds consecutive slices (the guide randomisation reads neighbouring slices): a run of brain slices
interrupted by a validation slab or a slice without brain is stored as separate volumes.

A training volume sliced along every voxel axis (manifest ``slice_axis`` 'every', ``pairs.EVERY_AXIS``) is stored
once, as the 3-D block (SimpleITK's (k, j, i) order) around its tissue, with the factors of each axis's stack
(``view_factors``), the whole volume's slice areas (``full_shape``) and ``slice_axes``; ``slice_views`` cuts it into
the brain slices along each axis when the pack is read, as a volume sliced along that axis alone would have been
stored (the same brain-slice rule on the whole slice's area, the same crop box of its tissue). Three axes then cost
the pack one volume, not three.
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from CohfTSuperResLib.errors import InputError
from CohfTSuperResLib.data.patches import SliceSet, brain_slices

PACK_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: float16 arrays as they are, every volume a stack of slices
CROP_MULTIPLE = 12  # every scale divides it
CROP_MARGIN = 6  # voxels kept around the non-zero bounding box
PACK_ROLES = ("train", "val")


@dataclass
class PackVolume:
    """The slices of one volume in a pack (float16 HR T2 and T1) and its per-scale T2 factors.

    With view_factors (a volume sliced along every axis, as stored): hr and t1 are a 3-D block in SimpleITK's
    (k, j, i) order, spacing its (k, j, i) spacing, view_factors[axis] the per-scale factors of its stack along
    each voxel axis, full_shape the whole volume's (k, j, i) size (its slice areas); ``slice_views`` gives its
    slices."""

    name: str
    role: str
    hr: np.ndarray
    t1: np.ndarray
    t2_factors: dict[int, float]
    has_t1: bool = True
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    view_factors: dict[int, dict[int, float]] = field(default_factory=dict)
    full_shape: tuple[int, int, int] | None = None

    def normalised(self, scale: int) -> tuple[np.ndarray, np.ndarray]:
        """float32 (HR T2, T1) slices with the T2 normalised as inference normalises an x`scale` LR input."""
        return self.hr.astype(np.float32) / np.float32(self.t2_factors[scale]), self.t1.astype(np.float32)


def consecutive_runs(index: np.ndarray) -> list[np.ndarray]:
    """The sorted slice indices split where they are not consecutive."""
    return [run for run in np.split(index, np.flatnonzero(np.diff(index) != 1) + 1) if run.size]


def crop_box(mask: np.ndarray, multiple: int = CROP_MULTIPLE, margin: int = CROP_MARGIN,
             axes: tuple[int, ...] = (1, 2)) -> tuple[slice, ...]:
    """Slices along `axes` (default: rows and columns of an (N, H, W) mask) of the mask's non-zero bounding box plus
    margin, sized to a multiple (those sizes must be multiples already); the whole extent when the mask is empty."""
    if not mask.any():
        return tuple(slice(0, mask.shape[axis]) for axis in axes)
    box = []
    for axis in axes:
        full = mask.shape[axis]
        used = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        low, high = max(0, used[0] - margin), min(full, used[-1] + 1 + margin)
        size = min(full, -(-(high - low) // multiple) * multiple)
        start = min(max(0, low - (size - (high - low)) // 2), full - size)
        box.append(slice(start, start + size))
    return tuple(box)


def _volume(name: str, role: str, hr: np.ndarray, t1: np.ndarray, factors: dict[int, float],
            has_t1: bool, spacing: tuple[float, float, float]) -> PackVolume:
    rows, cols = crop_box((hr > 0) | (t1 > 0))
    return PackVolume(name, role, hr[:, rows, cols].astype(np.float16), t1[:, rows, cols].astype(np.float16),
                      dict(factors), has_t1, spacing)


def _block(name: str, hr: np.ndarray, t1: np.ndarray, view_factors: dict[int, dict[int, float]], has_t1: bool,
           spacing: tuple[float, float, float]) -> PackVolume:
    """A training volume to be sliced along every axis: its (k, j, i) block around the tissue of T2 and T1."""
    box = crop_box((hr > 0) | (t1 > 0), axes=(0, 1, 2))
    return PackVolume(name, "train", hr[box].astype(np.float16), t1[box].astype(np.float16), {}, has_t1, spacing,
                      {axis: dict(factors) for axis, factors in view_factors.items()}, hr.shape)


def slice_views(volumes: list[PackVolume]) -> list[PackVolume]:
    """The volumes as stacks of slices: a volume stored for every axis becomes its runs of brain slices along each
    axis (named '<name> (axis a)'), each cropped to its tissue; the other volumes as they are."""
    views = []
    for volume in volumes:
        if not volume.view_factors:
            views.append(volume)
            continue
        by_axis = dict(zip((2, 1, 0), volume.spacing))  # the block's (k, j, i) spacing, by voxel axis
        for axis, factors in volume.view_factors.items():
            hr, t1 = (np.moveaxis(block, 2 - axis, 0) for block in (volume.hr, volume.t1))  # geometry.to_slice_stack
            rows, cols = (volume.full_shape[2 - other] for other in (2, 1, 0) if other != axis)
            runs = consecutive_runs(brain_slices(hr, area=rows * cols))
            spacing = (by_axis[axis], *(by_axis[other] for other in (2, 1, 0) if other != axis))
            for number, run in enumerate(runs, 1):
                name = f"{volume.name} (axis {axis})" + (f" (part {number})" if len(runs) > 1 else "")
                views.append(_volume(name, volume.role, hr[run], t1[run], factors, volume.has_t1, spacing))
    return views


def build_pack(manifest: str | Path, val_slices: int = 12, guard: int = 4,
               log: Callable[[str], None] | None = None) -> list[PackVolume]:
    """The pack's volumes from a manifest (see pairs.py for its format and roles), as stored (``slice_views``
    gives their slices).

    A 'split' volume gives its central `val_slices` brain slices to validation and drops `guard`
    slices on each side of that slab from training, so no training slice neighbours a validation one.
    """
    # SimpleITK is needed to build a pack, not to read one
    from CohfTSuperResLib.data.pairs import load_pair, read_manifest

    volumes = []
    for spec in read_manifest(manifest):
        pair = load_pair(spec)
        if pair.view_factors:
            if spec.role != "train":
                raise InputError(f"{spec.subject}: a volume sliced along every axis can only train "
                                 f"(role {spec.role!r})")
            volumes.append(_block(spec.subject, pair.hr, pair.t1, pair.view_factors, spec.t1 is not None,
                                  pair.spacing))
            if log is not None:
                log(f"loaded {spec.subject} (train, every axis): {'x'.join(map(str, pair.hr.shape))} voxels")
            continue
        brain = pair.brain
        if brain.size == 0:
            raise InputError(f"{spec.subject}: no slice with brain (>= 5% of the voxels above 10% of the "
                             "99.5th percentile)")
        parts = {"train": brain} if spec.role == "train" else {"val": brain} if spec.role == "val" else {}
        if spec.role == "split":
            middle = len(brain) // 2
            start = max(0, middle - val_slices // 2)
            val_index = brain[start:start + val_slices]
            low, high = val_index.min() - guard, val_index.max() + guard
            parts = {"train": brain[(brain < low) | (brain > high)], "val": val_index}
        for role, index in parts.items():
            runs = consecutive_runs(index)
            for number, run in enumerate(runs, 1):
                name = spec.subject if role == "train" or spec.role == "val" else f"{spec.subject} (val slab)"
                if len(runs) > 1:
                    name += f" (part {number})"
                volumes.append(_volume(name, role, pair.hr[run], pair.t1[run], pair.t2_factors,
                                       spec.t1 is not None, pair.spacing))
        if log is not None:
            log(f"loaded {spec.subject} ({spec.role}): {pair.hr.shape[0]} slices of {pair.hr.shape[1]}x"
                f"{pair.hr.shape[2]}, {len(brain)} with brain")
    return volumes


def write_pack(volumes: list[PackVolume], path: str | Path, source: dict[str, Any] | None = None) -> Path:
    """Write the volumes as one compressed .npz (float16 slices, JSON header); returns the path."""
    path = check_pack_path(path)
    meta = {"version": PACK_VERSION, "source": source or {}, "volumes": [_entry(v) for v in volumes]}
    arrays = {"meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
    for number, volume in enumerate(volumes):
        arrays[f"hr_{number}"], arrays[f"t1_{number}"] = _byte_planes(volume.hr), _byte_planes(volume.t1)
    temporary = path.with_name(path.name + ".partial.npz")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(temporary, **arrays)
        temporary.replace(path)
    except OSError as error:  # e.g. a full disk: no partial file left behind
        temporary.unlink(missing_ok=True)
        raise InputError(f"cannot write the training pack {path}: {error.strerror or error}") from error
    return path


def check_pack_path(path: str | Path) -> Path:
    """The path of a pack to write; InputError, before any volume is read, unless it is an .npz file."""
    path = Path(path)
    if path.suffix != ".npz":
        raise InputError(f"a training pack is an .npz file, got {path.name}")
    return path


def _entry(volume: PackVolume) -> dict[str, Any]:
    """A volume's header entry."""
    entry = {"name": volume.name, "role": volume.role,
             "t2_factors": {str(k): f for k, f in volume.t2_factors.items()}, "has_t1": volume.has_t1,
             "shape": list(volume.hr.shape), "spacing": list(volume.spacing)}
    if volume.view_factors:
        entry |= {"slice_axes": list(volume.view_factors), "full_shape": list(volume.full_shape),
                  "view_factors": {str(axis): {str(k): f for k, f in factors.items()}
                                   for axis, factors in volume.view_factors.items()}}
    return entry


def _byte_planes(values: np.ndarray) -> np.ndarray:
    """float16 values as uint8 (2, ...): their low bytes, then their high bytes."""
    return np.ascontiguousarray(np.moveaxis(values.astype("<f2").view(np.uint8).reshape(*values.shape, 2), -1, 0))


def _from_byte_planes(planes: np.ndarray) -> np.ndarray:
    """The float16 values of ``_byte_planes``."""
    return np.ascontiguousarray(np.moveaxis(planes, 0, -1)).view("<f2")[..., 0].astype(np.float16)


def _stored_volume(entry: dict[str, Any], hr: np.ndarray, t1: np.ndarray) -> PackVolume:
    """A volume from its header entry and arrays (as written by write_pack)."""
    views = {int(axis): {int(k): float(f) for k, f in factors.items()}
             for axis, factors in entry.get("view_factors", {}).items()}
    return PackVolume(entry["name"], entry["role"], hr, t1, {int(k): float(f) for k, f in entry["t2_factors"].items()},
                      bool(entry["has_t1"]), tuple(float(x) for x in entry.get("spacing", (1.0, 1.0, 1.0))), views,
                      tuple(entry["full_shape"]) if views else None)


def read_pack(path: str | Path) -> tuple[list[PackVolume], dict[str, Any]]:
    """The volumes of a pack as stacks of slices (``slice_views``) and its header; InputError when the file is not
    one."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"training pack not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as stored:
            meta = json.loads(stored["meta"].tobytes().decode())
            if meta.get("version") not in READABLE_VERSIONS:
                raise InputError(f"{path.name} is a training pack of version {meta.get('version')}; "
                                 f"this library reads versions {READABLE_VERSIONS}: rebuild it with `cohft-sr pack`")
            decode = _from_byte_planes if meta["version"] >= 2 else (lambda values: values)
            volumes = [_stored_volume(entry, decode(stored[f"hr_{n}"]), decode(stored[f"t1_{n}"]))
                       for n, entry in enumerate(meta["volumes"])]
    except InputError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise InputError(f"{path} is not a readable training pack ({type(error).__name__}: {error}); it is damaged, "
                         "cut short or not a pack: rebuild it with `cohft-sr pack`") from error
    return slice_views(volumes), meta


def slice_sets(volumes: list[PackVolume], scale: int) -> tuple[SliceSet, SliceSet]:
    """Training and validation SliceSets of a pack at one scale."""
    sets = {"train": SliceSet(scale), "val": SliceSet(scale)}
    for volume in volumes:
        sets[volume.role].add(volume.name, *volume.normalised(scale), volume.spacing)
    return sets["train"], sets["val"]


def main(argv: list[str] | None = None) -> int:
    """`cohft-sr pack --manifest M --out pack.npz`: write the training pack of a manifest."""
    parser = argparse.ArgumentParser(prog="cohft-sr pack", description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", type=Path, required=True, help="CSV/JSON of (t2, t1[, transforms], role)")
    parser.add_argument("--out", type=Path, required=True, help="pack file to write (.npz)")
    parser.add_argument("--val-slices", type=int, default=12, help="slab size of a 'split' volume's validation")
    args = parser.parse_args(argv)
    check_pack_path(args.out)
    volumes = build_pack(args.manifest, args.val_slices, log=lambda message: print(message, flush=True))
    path = write_pack(volumes, args.out, {"manifest": str(args.manifest), "val_slices": args.val_slices})
    slices = {role: sum(v.hr.shape[0] for v in slice_views(volumes) if v.role == role) for role in PACK_ROLES}
    print(f"wrote {path}: {slices['train']} training and {slices['val']} validation slices, "
          f"{path.stat().st_size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":  # `python -m`: the command line's one-line errors
    from CohfTSuperResLib.cli import main as command_line

    raise SystemExit(command_line(["pack", *sys.argv[1:]]))
