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
T1 / its own). The JSON header ``meta`` (bytes; no pickle anywhere) holds the format version, the
volume names and roles ('train' or 'val'), per volume its voxel spacing in mm (slice, row, column;
1 mm where a pack has none) and the factors by which the T2 is further divided at each scale so that
it is normalised like inference normalises an LR input (``pairs.lr_reference_factor``). A pack volume
holds consecutive slices (the guide randomisation reads neighbouring slices): a run of brain slices
interrupted by a validation slab or a slice without brain is stored as separate volumes.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from CohfTSuperResLib.errors import InputError
from CohfTSuperResLib.data.patches import SliceSet

PACK_VERSION = 1
CROP_MULTIPLE = 12  # every scale divides it
CROP_MARGIN = 6  # voxels kept around the non-zero bounding box
PACK_ROLES = ("train", "val")


@dataclass
class PackVolume:
    """The slices of one volume in a pack (float16 HR T2 and T1) and its per-scale T2 factors."""

    name: str
    role: str
    hr: np.ndarray
    t1: np.ndarray
    t2_factors: dict[int, float]
    has_t1: bool = True
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def normalised(self, scale: int) -> tuple[np.ndarray, np.ndarray]:
        """float32 (HR T2, T1) slices with the T2 normalised as inference normalises an x`scale` LR input."""
        return self.hr.astype(np.float32) / np.float32(self.t2_factors[scale]), self.t1.astype(np.float32)


def consecutive_runs(index: np.ndarray) -> list[np.ndarray]:
    """The sorted slice indices split where they are not consecutive."""
    return [run for run in np.split(index, np.flatnonzero(np.diff(index) != 1) + 1) if run.size]


def crop_box(mask: np.ndarray, multiple: int = CROP_MULTIPLE, margin: int = CROP_MARGIN) -> tuple[slice, slice]:
    """Row and column slices of the (N, H, W) mask's non-zero bounding box plus margin, sized to a multiple
    (H and W must be multiples already); the whole slice when the mask is empty."""
    height, width = mask.shape[-2:]
    if not mask.any():
        return slice(0, height), slice(0, width)
    box = []
    for axis, full in ((1, height), (2, width)):
        used = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        low, high = max(0, used[0] - margin), min(full, used[-1] + 1 + margin)
        size = min(full, -(-(high - low) // multiple) * multiple)
        start = min(max(0, low - (size - (high - low)) // 2), full - size)
        box.append(slice(start, start + size))
    return box[0], box[1]


def _volume(name: str, role: str, hr: np.ndarray, t1: np.ndarray, factors: dict[int, float],
            has_t1: bool, spacing: tuple[float, float, float]) -> PackVolume:
    rows, cols = crop_box((hr > 0) | (t1 > 0))
    return PackVolume(name, role, hr[:, rows, cols].astype(np.float16), t1[:, rows, cols].astype(np.float16),
                      dict(factors), has_t1, spacing)


def build_pack(manifest: str | Path, val_slices: int = 12, guard: int = 4,
               log: Callable[[str], None] | None = None) -> list[PackVolume]:
    """The pack's volumes from a manifest (see pairs.py for its format and roles).

    A 'split' volume gives its central `val_slices` brain slices to validation and drops `guard`
    slices on each side of that slab from training, so no training slice neighbours a validation one.
    """
    from CohfTSuperResLib.data.pairs import load_pair, read_manifest  # SimpleITK is needed to build a pack, not to read one

    volumes = []
    for spec in read_manifest(manifest):
        pair = load_pair(spec)
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
    path = Path(path)
    if path.suffix != ".npz":
        raise InputError(f"a training pack is an .npz file, got {path.name}")
    meta = {"version": PACK_VERSION, "source": source or {},
            "volumes": [{"name": v.name, "role": v.role, "t2_factors": {str(k): f for k, f in v.t2_factors.items()},
                         "has_t1": v.has_t1, "shape": list(v.hr.shape), "spacing": list(v.spacing)} for v in volumes]}
    arrays = {"meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
    for number, volume in enumerate(volumes):
        arrays[f"hr_{number}"], arrays[f"t1_{number}"] = volume.hr, volume.t1
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".partial.npz")
    np.savez_compressed(temporary, **arrays)
    temporary.replace(path)
    return path


def read_pack(path: str | Path) -> tuple[list[PackVolume], dict[str, Any]]:
    """The volumes and the header of a pack; InputError when the file is not one."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"training pack not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as stored:
            meta = json.loads(stored["meta"].tobytes().decode())
            if meta.get("version") != PACK_VERSION:
                raise InputError(f"{path.name} is a training pack of version {meta.get('version')}; "
                                 f"this library reads version {PACK_VERSION}: rebuild it with `cohft-sr pack`")
            volumes = [PackVolume(entry["name"], entry["role"], stored[f"hr_{n}"], stored[f"t1_{n}"],
                                  {int(k): float(f) for k, f in entry["t2_factors"].items()}, bool(entry["has_t1"]),
                                  tuple(float(x) for x in entry.get("spacing", (1.0, 1.0, 1.0))))
                       for n, entry in enumerate(meta["volumes"])]
    except (OSError, ValueError, KeyError) as error:
        if isinstance(error, InputError):
            raise
        raise InputError(f"{path.name} is not a readable training pack: {error}") from error
    return volumes, meta


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
    volumes = build_pack(args.manifest, args.val_slices, log=lambda message: print(message, flush=True))
    path = write_pack(volumes, args.out, {"manifest": str(args.manifest), "val_slices": args.val_slices})
    slices = {role: sum(v.hr.shape[0] for v in volumes if v.role == role) for role in PACK_ROLES}
    print(f"wrote {path}: {slices['train']} training and {slices['val']} validation slices, "
          f"{path.stat().st_size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
