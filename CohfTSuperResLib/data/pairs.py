"""Paired (T2, T1) volumes for training and evaluation: the manifest, the T1 put onto the T2 grid, slicing.

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
  spacing, 2 on ties (axial for the isotropic MNI volumes); ``every`` (EVERY_AXIS, a training row of an isotropic
  volume): its slices along all three voxel axes, the volume loaded once as a 3-D block (``LoadedPair.view_factors``;
  the pack stores it once, ``pack.slice_views``).
- ``in_plane_mm``: optional; the T2 is first reduced to in-plane pixels of about this size by k-space truncation of
  each slice (``in_plane_reduced``): a 2-D acquisition's fine in-plane grid (0.5-0.6 mm on clinical scanners) made
  the 1 mm pixels the networks learn on, as if acquired with fewer k-space samples over the same field of view.
Relative paths are relative to the manifest's folder. Without any transform the T1 is
resampled on the T2 grid in physical space (identity), or used as is when the grids match.

``load_pair`` reads one row: the T1 goes onto the T2 grid (linear interpolation, 0 outside), both
are split into slices along the acquisition axis and trimmed to a multiple of ``SLICE_MULTIPLE``
(every scale divides it), the T2 is divided by the robust scale of its HR volume and the T1 by that
of the T1 as read (``normalize.robust_scale``, as inference does). ``t2_factors`` then give, per
scale, the further division that makes the T2 relative to its synthesised LR volume, which is what
inference normalises by. The training pack (``pack.py``) is built from these pairs; nothing else
here is needed to train from a pack, and this module is the only one of the training data that
needs SimpleITK.

``python -m CohfTSuperResLib.data.pairs open-ms ROOT OUT.csv`` writes the project's open_ms manifest,
``python -m CohfTSuperResLib.data.pairs sources DATA OUT.csv [--every-axis [SOURCE ...]] [--clinical]`` the manifest of
the split across the sources of ``../shared/data`` (``source_specs``);
``python -m CohfTSuperResLib.data.pairs check MANIFEST`` prints the T1/T2 gradient correlation per pair.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from CohfTSuperResLib.data.degradations import crop_to_multiple, degrade, kspace_resize
from CohfTSuperResLib.data.patches import BRAIN_LEVEL, brain_slices
from CohfTSuperResLib.errors import InputError
from CohfTSuperResLib.imageio.normalize import normalize, robust_scale
from CohfTSuperResLib.imageio.volumes import read_volume
from CohfTSuperResLib.inference.geometry import acquisition_axis, from_slice_stack, image_stack, to_slice_stack
from CohfTSuperResLib.options import SCALES

MANIFEST_ROLES = ("train", "val", "split")
EVERY_AXIS = "every"  # the slice_axis of a volume sliced along all three voxel axes
EVERY_AXIS_ORDER = (2, 1, 0)  # its axes, in the order of its slice views (axial, coronal, sagittal for MNI volumes)
SLICE_MULTIPLE = math.lcm(*SCALES)  # slices are trimmed to a multiple of every scale


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
    slice_axis: int | str | None = None  # a voxel axis, EVERY_AXIS, or None: the acquisition axis
    in_plane_mm: float | None = None  # reduce the T2's in-plane pixels to about this size first (None: as read)

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
    if not path.is_file():
        raise InputError(f"manifest not found: {path}")
    try:
        if path.suffix.lower() == ".json":
            loaded = json.loads(path.read_text(encoding="utf-8"))
            rows = loaded["pairs"] if isinstance(loaded, dict) else loaded
        else:
            with open(path, newline="", encoding="utf-8-sig") as handle:
                rows = list(csv.DictReader(handle))
    except (ValueError, KeyError, csv.Error) as error:  # JSON and Unicode errors are ValueErrors
        raise InputError(f"manifest {path} can not be read ({type(error).__name__}: {error}); a CSV with a header "
                         "row or a JSON list of pairs is expected") from error
    if not rows:
        raise InputError(f"manifest {path} has no rows: nothing to read")
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise InputError(f"manifest {path}: a JSON manifest is a list of objects (or {{'pairs': [...]}})")
    specs = []
    for number, row in enumerate(rows, 1):
        if not row.get("t2"):
            raise InputError(f"{path}: row {number} has no t2")
        role = (row.get("role") or "train").strip()
        if role not in MANIFEST_ROLES:
            raise InputError(f"{path}: row {number} has role {role!r}; use one of {MANIFEST_ROLES}")
        axis = row.get("slice_axis")
        to_ref = (_path(row.get("t1_to_ref"), base), _path(row.get("t2_to_ref"), base))
        if (to_ref[0] is None) != (to_ref[1] is None):
            raise InputError(f"{path}: row {number} needs both t1_to_ref and t2_to_ref, or neither")
        specs.append(PairSpec(
            t2=_path(row["t2"], base), t1=_path(row.get("t1"), base), t1_to_t2=_path(row.get("t1_to_t2"), base),
            t1_to_ref=to_ref[0], t2_to_ref=to_ref[1], role=role,
            subject=(row.get("subject") or str(row["t2"])).strip(),
            slice_axis=_slice_axis(axis, f"{path}: row {number}"),
            in_plane_mm=_in_plane_mm(row.get("in_plane_mm"), f"{path}: row {number}"),
        ))
    return specs


def _slice_axis(value: Any, where: str) -> int | str | None:
    """A manifest's slice_axis: None (empty), EVERY_AXIS or a voxel axis 0-2; InputError otherwise."""
    text = "" if value is None else str(value).strip()
    if text in ("", EVERY_AXIS):
        return text or None
    if text not in ("0", "1", "2"):
        raise InputError(f"{where} has slice_axis {text!r}; use 0, 1, 2, {EVERY_AXIS!r} or leave it empty")
    return int(text)


def _in_plane_mm(value: Any, where: str) -> float | None:
    """A manifest's in_plane_mm: None (empty) or a positive number of millimetres; InputError otherwise."""
    text = "" if value is None else str(value).strip()
    if not text:
        return None
    try:
        millimetres = float(text)
    except ValueError:
        millimetres = math.nan
    if not (math.isfinite(millimetres) and millimetres > 0):
        raise InputError(f"{where} has in_plane_mm {text!r}; give a pixel size in mm (> 0) or leave it empty")
    return millimetres


def write_manifest(specs: list[PairSpec], path: str | Path) -> None:
    """Write PairSpecs as a CSV manifest (absolute paths)."""
    columns = ["subject", "role", "t2", "t1", "t1_to_t2", "t1_to_ref", "t2_to_ref", "slice_axis", "in_plane_mm"]
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
    root = Path(root).resolve()
    specs = []
    for folder in sorted((root / "mni").glob("patient*")):
        name = f"mni/{folder.name}"
        if name == TEST_SUBJECT:
            continue
        specs.append(PairSpec(t2=folder / "t2.nii.gz", t1=folder / "t1.nii.gz", subject=name,
                              role="split" if name == VALIDATION_SUBJECT else "train"))
    return specs + study_specs(root / "clinical", "clinical")


TRAINING_SOURCES = ("open_ms/mni/patient07", "open_ms/mni/patient19", "templates/icbm2009c_sym")
SELECTION_SOURCE = "templates/mni152_fsl"
REPORTING_SUBJECTS = ("open_ms/mni/patient26", "brats_gli/BraTS-GLI-00000-000")
CLINICAL_STUDIES = "open_ms/clinical"
TRAINING_PIXEL_MM = 1.0  # the in-plane pixel size of every other training source


def study_specs(folder: Path, prefix: str, in_plane_mm: float | None = None) -> list[PairSpec]:
    """One training row per open_ms clinical study folder (patient*) under folder, named prefix/<study>: its T2, and its
    T1 put on the T2 through the two transforms to the study's FLAIR; in_plane_mm: see the manifest column."""
    return [PairSpec(t2=study / "t2w.nii.gz", t1=study / "t1w.nii.gz", t1_to_ref=study / "t1w_to_flair.tfm",
                     t2_to_ref=study / "t2w_to_flair.tfm", subject=f"{prefix}/{study.name}", in_plane_mm=in_plane_mm)
            for study in sorted(folder.glob("patient*")) if study.is_dir()]


def clinical_specs(data: str | Path) -> list[PairSpec]:
    """The open_ms clinical studies as in-plane training rows: each 2-D T2's own slices (0.5-0.6 mm pixels, 3.3-4 mm
    apart), reduced to TRAINING_PIXEL_MM pixels, with the study's T1 put on them through the two transforms to its
    FLAIR. Real 2-D acquisitions of four more patients (the longitudinal open_ms cohort), not skull-stripped."""
    return study_specs(Path(data).resolve() / CLINICAL_STUDIES, CLINICAL_STUDIES, TRAINING_PIXEL_MM)


def source_specs(data: str | Path, every_axis: Collection[str] = (), clinical: bool = False) -> list[PairSpec]:
    """The project's split of ../shared/data across sources: two open_ms subjects and one template train,
    another template (a source never trained on) selects checkpoints; REPORTING_SUBJECTS are never used
    for either. clinical: the open_ms clinical studies train too (``clinical_specs``).

    every_axis: the training sources (names of TRAINING_SOURCES; all are 1 mm isotropic) that also give their
    slices along the other two voxel axes (slice_axis EVERY_AXIS: axial, coronal and sagittal slices of one stored
    volume), three times the variety of anatomy for the in-plane networks. Selection stays on the acquisition axis of
    the selection source."""
    unknown = set(every_axis) - set(TRAINING_SOURCES)
    if unknown:
        raise InputError(f"not training sources: {', '.join(sorted(unknown))} (they are {', '.join(TRAINING_SOURCES)})")
    data = Path(data).resolve()
    specs = []
    for name in TRAINING_SOURCES:
        folder = data / name
        specs.append(PairSpec(t2=folder / "t2.nii.gz", t1=folder / "t1.nii.gz", role="train", subject=name,
                              slice_axis=EVERY_AXIS if name in every_axis else None))
    if clinical:
        specs.extend(clinical_specs(data))
    folder = data / SELECTION_SOURCE
    specs.append(PairSpec(t2=folder / "t2.nii.gz", t1=folder / "t1.nii.gz", subject=SELECTION_SOURCE, role="val"))
    return specs


def in_plane_reduced(image: sitk.Image, slice_axis: int, pixel_mm: float) -> sitk.Image:
    """The image as if acquired with in-plane pixels of about pixel_mm: each slice along slice_axis reduced by
    k-space truncation (``degradations.kspace_resize``) to round(n * spacing / pixel_mm) samples per in-plane axis
    where that is fewer than its n. Same field of view, origin and direction; spacing * n / m (the DFT grid: the new
    sample j sits at the old n * j / m). An axis already at pixel_mm or coarser is kept."""
    spacing = list(image.GetSpacing())
    plane = [axis for axis in (2, 1, 0) if axis != slice_axis]  # the stack's rows, columns (to_slice_stack)
    stack = image_stack(image, slice_axis)
    shape = tuple(min(stack.shape[1 + row], max(1, round(stack.shape[1 + row] * spacing[axis] / pixel_mm)))
                  for row, axis in enumerate(plane))
    if shape == stack.shape[1:]:
        return image
    reduced = np.abs(kspace_resize(stack, shape)).astype(np.float32)
    result = sitk.GetImageFromArray(np.ascontiguousarray(from_slice_stack(reduced, slice_axis)))
    for row, axis in enumerate(plane):
        spacing[axis] *= stack.shape[1 + row] / shape[row]
    result.SetSpacing(spacing)
    result.SetOrigin(image.GetOrigin())
    result.SetDirection(image.GetDirection())
    return result


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
class LoadedPair:
    """One pair on the T2 grid as (N, H, W) float32 stacks trimmed to a multiple of SLICE_MULTIPLE.

    hr: the T2 divided by the robust scale of the HR volume; t1: the T1 divided by its own;
    brain: indices of the slices with brain; t2_factors[s]: divide hr by it to normalise the T2 by
    its synthesised x s LR volume instead (what inference computes from an LR input); spacing: the voxel
    spacing in mm of the stack's axes (slice, row, column). A volume of slice_axis EVERY_AXIS: hr and t1 are its
    3-D (k, j, i) arrays (the stack along axis 2), every side trimmed to the multiple, and view_factors[axis] holds
    the t2_factors of its stack along each axis (empty for the other rows).
    """

    spec: PairSpec
    hr: np.ndarray
    t1: np.ndarray
    brain: np.ndarray
    t2_factors: dict[int, float]
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    view_factors: dict[int, dict[int, float]] = field(default_factory=dict)


def lr_reference_factor(hr: np.ndarray, scale: int) -> float:
    """robust_scale of the k-space-synthesised LR of an (N, H, W) stack, relative to the stack's units.

    The ringing of the k-space truncation adds many small positive background voxels, so on
    skull-stripped data this differs a lot from the HR's own percentile (about 0.74 at x2 on open_ms/mni).
    """
    return robust_scale(degrade(hr, scale))


def load_pair(spec: PairSpec) -> LoadedPair:
    """Read, register (T1 on the T2 grid), normalise, slice and trim one manifest pair."""
    t2 = read_volume(spec.t2, float32=True)
    every = spec.slice_axis == EVERY_AXIS
    axis = EVERY_AXIS_ORDER[0] if every else \
        spec.slice_axis if spec.slice_axis is not None else acquisition_axis(t2.GetSpacing())
    if spec.in_plane_mm is not None:
        t2 = in_plane_reduced(t2, axis, spec.in_plane_mm)

    def trimmed(stack: np.ndarray) -> np.ndarray:  # in-plane, and along the slices too for a volume of every axis
        stack = crop_to_multiple(stack, SLICE_MULTIPLE)
        return stack[: stack.shape[0] // SLICE_MULTIPLE * SLICE_MULTIPLE] if every else stack

    hr = trimmed(image_stack(t2, axis))
    hr = normalize(hr, robust_scale(hr))
    if spec.t1 is not None:
        t1_raw = read_volume(spec.t1, float32=True)
        t1_scale = robust_scale(sitk.GetArrayViewFromImage(t1_raw))
        t1 = image_stack(t1_on_t2_grid(t1_raw, t2, t1_to_t2_transform(spec)), axis)
        t1 = trimmed(normalize(t1, t1_scale))
    else:
        t1 = np.zeros_like(hr)
    factors = {scale: lr_reference_factor(hr, scale) for scale in SCALES}
    views = {view: factors if view == axis else
             {scale: lr_reference_factor(np.ascontiguousarray(to_slice_stack(hr, view)), scale) for scale in SCALES}
             for view in EVERY_AXIS_ORDER} if every else {}
    spacing = t2.GetSpacing()
    stack_spacing = (spacing[axis], *(spacing[k] for k in (2, 1, 0) if k != axis))
    return LoadedPair(spec, np.ascontiguousarray(hr), np.ascontiguousarray(t1), brain_slices(hr), factors,
                      stack_spacing, views)


def main(argv: list[str] | None = None) -> int:
    """`open-ms ROOT OUT.csv`: write the project's open_ms training manifest; `check MANIFEST`: T1/T2 gradient
    correlation per pair (a registration check)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m CohfTSuperResLib.data.pairs")
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("open-ms", help="write the training manifest of ../shared/data/open_ms")
    make.add_argument("root", type=Path)
    make.add_argument("output", type=Path)
    make.add_argument("--mni-only", action="store_true", help="leave out the clinical studies")
    sources = commands.add_parser("sources", help="write the manifest of the split across ../shared/data's sources")
    sources.add_argument("root", type=Path)
    sources.add_argument("output", type=Path)
    sources.add_argument("--every-axis", nargs="*", metavar="SOURCE",
                         help="slice these training sources (all of them when none is named) along all three voxel "
                              f"axes (slice_axis '{EVERY_AXIS}'); sources: {', '.join(TRAINING_SOURCES)}")
    sources.add_argument("--clinical", action="store_true",
                         help=f"train on the in-plane slices of the {CLINICAL_STUDIES} 2-D T2 studies too, reduced "
                              f"to {TRAINING_PIXEL_MM:g} mm pixels")
    check = commands.add_parser("check", help="gradient correlation of T1 and T2 on the T2 grid, per pair")
    check.add_argument("manifest", type=Path)
    args = parser.parse_args(argv)
    if args.command in ("open-ms", "sources"):
        if args.command == "open-ms":
            specs = [spec for spec in open_ms_specs(args.root) if not args.mni_only or spec.subject.startswith("mni/")]
        else:
            every_axis = () if args.every_axis is None else args.every_axis or TRAINING_SOURCES
            try:
                specs = source_specs(args.root, every_axis, args.clinical)
            except InputError as error:
                parser.error(str(error))
        if not specs:
            raise InputError(f"no pairs found under {args.root}: give the folder that holds open_ms (and the other "
                             "sources), e.g. ../shared/data")
        write_manifest(specs, args.output)
        print(f"wrote {args.output}")
        return 0
    for spec in read_manifest(args.manifest):
        pair = load_pair(spec)
        mask = (pair.hr > BRAIN_LEVEL) | (pair.t1 > BRAIN_LEVEL)
        aligned = gradient_correlation(pair.hr[pair.brain], pair.t1[pair.brain], mask[pair.brain])
        print(f"{spec.subject}: gradient correlation T1 vs T2 = {aligned:.3f}")
    return 0


if __name__ == "__main__":  # one-line errors, as the command line's
    from CohfTSuperResLib.cli import reporting_errors

    raise SystemExit(reporting_errors(main))
