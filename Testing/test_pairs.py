"""Paired volumes (data/pairs.py): manifests, the T1 put onto the T2 grid, slicing, normalisation of real pairs."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from CohfTSuperResLib.data.degradations import degrade
from CohfTSuperResLib.data.pairs import (
    CLINICAL_STUDIES,
    EVERY_AXIS,
    SELECTION_SOURCE,
    SLICE_MULTIPLE,
    TRAINING_PIXEL_MM,
    TRAINING_SOURCES,
    PairSpec,
    in_plane_reduced,
    load_pair,
    main,
    open_ms_specs,
    read_manifest,
    source_specs,
    t1_on_t2_grid,
    t1_to_t2_transform,
    write_manifest,
)
from CohfTSuperResLib.errors import InputError
from CohfTSuperResLib.imageio.normalize import robust_scale
from CohfTSuperResLib.inference.geometry import acquisition_axis, image_stack

# ----------------------------------------------------------------------------- manifests


def test_csv_manifest_resolves_relative_paths_and_reads_columns(tmp_path: Path) -> None:
    folder = tmp_path / "study"
    folder.mkdir()
    absolute = tmp_path / "elsewhere" / "t1.nii.gz"
    (folder / "m.csv").write_text(
        "subject,role,t2,t1,t1_to_t2,slice_axis\n"
        f"a,train,a/t2.nii.gz,{absolute},a/t1_to_t2.tfm,1\n"
        "b,split,b/t2.nii.gz,b/t1.nii.gz,,\n"
        ",,c/t2.nii.gz,c/t1.nii.gz,,\n"
    )
    specs = read_manifest(folder / "m.csv")
    assert [s.subject for s in specs] == ["a", "b", "c/t2.nii.gz"]
    assert [s.role for s in specs] == ["train", "split", "train"]
    assert specs[0].t2 == folder.resolve() / "a" / "t2.nii.gz"
    assert specs[0].t1 == absolute
    assert specs[0].t1_to_t2 == folder.resolve() / "a" / "t1_to_t2.tfm"
    assert specs[0].slice_axis == 1
    assert specs[1].t1_to_t2 is None and specs[1].slice_axis is None


def test_json_manifest_list_and_pairs_object(tmp_path: Path) -> None:
    rows = [{"t2": "x/t2.nii", "t1": "x/t1.nii", "role": "val", "slice_axis": 0},
            {"t2": "y/t2.nii", "t1": "y/t1.nii", "t1_to_ref": "y/a.tfm", "t2_to_ref": "y/b.tfm"}]
    (tmp_path / "list.json").write_text(json.dumps(rows))
    (tmp_path / "pairs.json").write_text(json.dumps({"pairs": rows}))
    for name in ("list.json", "pairs.json"):
        specs = read_manifest(tmp_path / name)
        assert specs[0].role == "val" and specs[0].slice_axis == 0
        assert specs[0].t2 == tmp_path.resolve() / "x" / "t2.nii"
        assert specs[1].t1_to_ref == tmp_path.resolve() / "y" / "a.tfm"
        assert specs[1].t2_to_ref == tmp_path.resolve() / "y" / "b.tfm"
        assert specs[1].role == "train"


@pytest.mark.parametrize("row, message", [
    ({"t2": "a.nii", "t1": "b.nii", "role": "test"}, "role"),
    ({"t1": "b.nii"}, "no t2"),
    ({"t2": "a.nii", "t1": "b.nii", "t1_to_ref": "x.tfm"}, "t2_to_ref"),
])
def test_manifest_errors(tmp_path: Path, row: dict, message: str) -> None:
    (tmp_path / "m.json").write_text(json.dumps([row]))
    with pytest.raises(ValueError, match=message):
        read_manifest(tmp_path / "m.json")


def test_write_manifest_round_trip(tmp_path: Path) -> None:
    specs = [PairSpec(t2=tmp_path / "a.nii", t1=tmp_path / "b.nii", role="split", subject="s", slice_axis=0,
                      in_plane_mm=1.0),
             PairSpec(t2=tmp_path / "c.nii", t1=None, t1_to_ref=tmp_path / "r1.tfm", t2_to_ref=tmp_path / "r2.tfm")]
    write_manifest(specs, tmp_path / "out" / "m.csv")
    back = read_manifest(tmp_path / "out" / "m.csv")
    for spec in back:
        spec.subject = spec.subject or ""
    assert [s.to_dict() for s in back][0] == specs[0].to_dict()
    assert back[1].t1_to_ref == specs[1].t1_to_ref and back[1].t2_to_ref == specs[1].t2_to_ref and back[1].t1 is None


# ----------------------------------------------------------------------------- geometry


def _linear_image(size: tuple[int, int, int], spacing: float, origin: tuple[float, float, float],
                  coefficients: tuple[float, float, float], offset: float) -> sitk.Image:
    """Image whose value at physical point p is offset + coefficients . p (identity direction)."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in reversed(size)), indexing="ij")
    points = [origin[a] + spacing * index for a, index in enumerate((i, j, k))]
    values = offset + sum(c * p for c, p in zip(coefficients, points))
    image = sitk.GetImageFromArray(values.astype(np.float32))
    image.SetSpacing((spacing,) * 3)
    image.SetOrigin(origin)
    return image


COEFFICIENTS = (0.5, -0.25, 2.0)
OFFSET = 100.0


def _expected(points: np.ndarray) -> np.ndarray:
    return OFFSET + points @ np.asarray(COEFFICIENTS)


def _t2_grid_points(t2: sitk.Image) -> np.ndarray:
    """Physical points of the T2 voxels in SimpleITK array order (k, j, i, 3)."""
    size = t2.GetSize()
    k, j, i = np.meshgrid(*(np.arange(n) for n in reversed(size)), indexing="ij")
    return np.stack([t2.GetOrigin()[a] + t2.GetSpacing()[a] * index for a, index in enumerate((i, j, k))], axis=-1)


@pytest.fixture
def grids() -> tuple[sitk.Image, sitk.Image]:
    """A coarse T2 grid inside a finer, larger T1 that holds a linear function of position (exact under linear
    interpolation)."""
    t2 = sitk.Image(10, 8, 4, sitk.sitkFloat32)
    t2.SetSpacing((1.5, 1.5, 2.0))
    t2.SetOrigin((3.0, 2.0, 4.0))
    t1 = _linear_image((60, 60, 40), 0.5, (-5.0, -6.0, -4.0), COEFFICIENTS, OFFSET)
    return t2, t1


def test_t1_resampled_with_a_t1_to_t2_transform(tmp_path: Path, grids) -> None:
    t2, t1 = grids
    shift = (1.25, -0.75, 0.5)
    sitk.WriteTransform(sitk.TranslationTransform(3, shift), str(tmp_path / "t1_to_t2.tfm"))
    spec = PairSpec(t2=tmp_path / "t2.nii", t1=tmp_path / "t1.nii", t1_to_t2=tmp_path / "t1_to_t2.tfm")
    resampled = t1_on_t2_grid(t1, t2, t1_to_t2_transform(spec))
    assert resampled.GetSize() == t2.GetSize() and resampled.GetOrigin() == t2.GetOrigin()
    expected = _expected(_t2_grid_points(t2) + np.asarray(shift))
    np.testing.assert_allclose(sitk.GetArrayFromImage(resampled), expected, rtol=0, atol=1e-3)


def test_t1_resampled_through_a_common_reference(tmp_path: Path, grids) -> None:
    """t1_to_ref and t2_to_ref (each maps reference points to its image's points): T1 value at T2 point p is
    f(t1_to_ref(t2_to_ref^-1(p))). An affine t2_to_ref makes the composition order matter."""
    t2, t1 = grids
    shift = np.array([3.0, 4.0, -2.0])
    matrix = np.array([[1.3, 0.1, 0.0], [-0.1, 1.2, 0.0], [0.0, 0.05, 1.25]])
    translation = np.array([0.3, -0.4, 0.6])
    sitk.WriteTransform(sitk.TranslationTransform(3, shift.tolist()), str(tmp_path / "t1.tfm"))
    sitk.WriteTransform(sitk.AffineTransform(matrix.ravel().tolist(), translation.tolist()), str(tmp_path / "t2.tfm"))
    spec = PairSpec(t2=tmp_path / "t2.nii", t1=tmp_path / "t1.nii", t1_to_ref=tmp_path / "t1.tfm",
                    t2_to_ref=tmp_path / "t2.tfm")
    resampled = sitk.GetArrayFromImage(t1_on_t2_grid(t1, t2, t1_to_t2_transform(spec)))
    points = _t2_grid_points(t2)
    reference = (points - translation) @ np.linalg.inv(matrix).T
    np.testing.assert_allclose(resampled, _expected(reference + shift), rtol=0, atol=1e-3)
    wrong_order = (points + shift - translation) @ np.linalg.inv(matrix).T
    assert np.abs(resampled - _expected(wrong_order)).min() > 0.1


def test_t1_without_transform(grids) -> None:
    t2, t1 = grids
    np.testing.assert_allclose(sitk.GetArrayFromImage(t1_on_t2_grid(t1, t2, None)), _expected(_t2_grid_points(t2)),
                               rtol=0, atol=1e-3)
    same = sitk.Image(t2)
    assert t1_on_t2_grid(same, t2, None) is same  # same grid: used as is


def test_acquisition_axis_is_the_odd_one_out() -> None:
    """In-plane pixels are square: the slice axis is the one whose spacing differs from the two others."""
    assert acquisition_axis((1.0, 1.0, 1.0)) == 2
    assert acquisition_axis((0.5, 4.0, 0.5)) == 1
    assert acquisition_axis((4.0, 4.0, 1.0)) == 2  # an LR made from 1 mm data: sliced along its 1 mm axis
    assert acquisition_axis((2.0, 2.0, 1.0)) == 2
    assert acquisition_axis((1.0, 0.45, 0.45)) == 0  # a sagittal acquisition
    assert acquisition_axis((3.3, 0.57, 3.3)) == 1  # the odd one out, thinner or thicker
    assert acquisition_axis((0.5, 0.6, 4.0)) == 2 and acquisition_axis((0.5, 4.0, 0.7)) == 1  # all differ: thickest


def test_to_stack_axes() -> None:
    array = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)  # (k, j, i)
    image = sitk.GetImageFromArray(array)
    assert image_stack(image, 2).shape == (2, 3, 4)
    np.testing.assert_array_equal(image_stack(image, 0)[1], array[:, :, 1])
    np.testing.assert_array_equal(image_stack(image, 1)[2], array[:, 2, :])


# ----------------------------------------------------------------------------- loading real pairs


def _crop(open_ms: Path, folder: Path, subject: str, region: tuple[slice, slice, slice]) -> PairSpec:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("t2", "t1"):
        image = sitk.ReadImage(str(open_ms / "mni" / subject / f"{name}.nii.gz"))
        sitk.WriteImage(image[region], str(folder / f"{subject}_{name}.nii.gz"))
    return PairSpec(t2=folder / f"{subject}_t2.nii.gz", t1=folder / f"{subject}_t1.nii.gz", subject=subject)


def test_load_pair_normalises_like_inference(open_ms: Path, tmp_path: Path) -> None:
    """The T2 is divided by its HR volume's robust scale, and t2_factors[s] is the robust scale of its synthesised
    x s LR volume (what inference normalises an LR input by); the T1 is divided by its own robust scale; the
    stacks are trimmed to a multiple of every scale."""
    spec = _crop(open_ms, tmp_path, "patient07", (slice(40, 143), slice(50, 171), slice(80, 100)))
    pair = load_pair(spec)
    assert SLICE_MULTIPLE == 12
    assert pair.hr.shape == (20, 120, 96) == pair.t1.shape
    raw = image_stack(sitk.ReadImage(str(spec.t2), sitk.sitkFloat32), 2)[:, :120, :96]
    np.testing.assert_allclose(pair.hr * robust_scale(raw), raw, rtol=1e-5, atol=1e-3)
    for scale in (2, 3, 4):
        assert pair.t2_factors[scale] == pytest.approx(robust_scale(degrade(pair.hr, scale)), rel=1e-6)
        assert robust_scale(degrade(pair.hr / pair.t2_factors[scale], scale)) == pytest.approx(1.0, rel=1e-5)
    t1_raw = sitk.ReadImage(str(spec.t1), sitk.sitkFloat32)
    np.testing.assert_allclose(pair.t1 * robust_scale(sitk.GetArrayFromImage(t1_raw)),
                               image_stack(t1_raw, 2)[:, :120, :96], rtol=1e-5, atol=1e-3)


def test_open_ms_manifest_holds_out_the_test_subject_with_absolute_paths(open_ms: Path, tmp_path: Path) -> None:
    specs = open_ms_specs(Path(os.path.relpath(open_ms)))  # a relative root gives absolute paths
    names = [spec.subject for spec in specs]
    assert "mni/patient26" not in names and "mni/patient07" in names
    assert [spec.role for spec in specs if spec.subject == "mni/patient19"] == ["split"]
    assert all(spec.t2.is_absolute() for spec in specs)
    write_manifest(specs, tmp_path / "m.csv")
    assert [spec.t2 for spec in read_manifest(tmp_path / "m.csv")] == [spec.t2 for spec in specs]


def test_every_axis_manifest_loads_each_training_volume_once_for_all_three_axes(tmp_path: Path) -> None:
    """`sources --every-axis`: one row of slice_axis 'every' per training volume, loaded as its 3-D block trimmed
    to the multiple on every side, with the factors of its stack along each axis (those of that stack loaded alone);
    the selection source stays one row on its acquisition axis."""
    rng = np.random.default_rng(0)
    for name in (*TRAINING_SOURCES, SELECTION_SOURCE):
        (tmp_path / name).mkdir(parents=True)
        for contrast in ("t2", "t1"):
            image = sitk.GetImageFromArray(rng.uniform(1, 2, (50, 36, 24)).astype(np.float32))  # (z, y, x)
            sitk.WriteImage(image, str(tmp_path / name / f"{contrast}.nii.gz"))
    plain, every_axis = source_specs(tmp_path), source_specs(tmp_path, every_axis=TRAINING_SOURCES)
    assert [(spec.subject, spec.role, spec.slice_axis) for spec in plain] == \
        [(name, "train", None) for name in TRAINING_SOURCES] + [(SELECTION_SOURCE, "val", None)]
    assert [(spec.subject, spec.slice_axis) for spec in every_axis] == \
        [(name, EVERY_AXIS) for name in TRAINING_SOURCES] + [(SELECTION_SOURCE, None)]
    block = load_pair(every_axis[0])
    assert block.hr.shape == block.t1.shape == (48, 36, 24)
    for axis in (2, 1, 0):
        alone = load_pair(dataclasses.replace(every_axis[0], slice_axis=axis))
        view = np.moveaxis(block.hr, 2 - axis, 0)
        assert block.view_factors[axis] == pytest.approx(
            {scale: robust_scale(degrade(np.ascontiguousarray(view), scale)) for scale in (2, 3, 4)}, rel=1e-6)
        assert alone.view_factors == {}
        if axis == 2:  # the stack alone keeps its 50 slices; the block trims them to 48
            assert alone.hr.shape == (50, 36, 24)
        else:  # the same voxels as the stack alone
            np.testing.assert_array_equal(view, alone.hr)
            assert block.view_factors[axis] == pytest.approx(alone.t2_factors, rel=1e-6)
    first, *others = TRAINING_SOURCES
    subset = source_specs(tmp_path, every_axis=[first])
    assert [spec.slice_axis for spec in subset] == [EVERY_AXIS, None, None, None]
    with pytest.raises(InputError, match="not training sources: brats"):
        source_specs(tmp_path, every_axis=["brats"])
    main(["sources", str(tmp_path), str(tmp_path / "all.csv"), "--every-axis"])
    assert [spec.slice_axis for spec in read_manifest(tmp_path / "all.csv")] == [EVERY_AXIS] * 3 + [None]
    (tmp_path / "bad.csv").write_text("t2,t1,slice_axis\na.nii,b.nii,3\n")
    with pytest.raises(InputError, match="row 1 has slice_axis '3'; use 0, 1, 2, 'every'"):
        read_manifest(tmp_path / "bad.csv")


def test_manifest_errors_are_input_errors(tmp_path: Path) -> None:
    (tmp_path / "m.json").write_text(json.dumps([{"t1": "b.nii"}]))
    with pytest.raises(InputError, match="no t2"):
        read_manifest(tmp_path / "m.json")


# ----------------------------------------------------------------------------- 2-D acquisitions reduced in-plane


def _fine_2d_acquisition(size: tuple[int, int, int] = (96, 80, 6),
                         spacing: tuple[float, float, float] = (0.5, 0.6, 3.3)) -> sitk.Image:
    """A smooth pattern (a few cycles over the field of view) on a fine in-plane grid with thick slices, oblique."""
    k, j, i = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in reversed(size)), indexing="ij")
    x, y = i * spacing[0], j * spacing[1]
    values = 2.0 + np.cos(2 * np.pi * x / 16.0) * np.sin(2 * np.pi * y / 12.0) + 0.1 * k
    image = sitk.GetImageFromArray(values.astype(np.float32))
    image.SetSpacing(spacing)
    image.SetOrigin((-10.0, 4.0, 7.0))
    image.SetDirection(sitk.VersorRigid3DTransform((0.0, 0.0, 0.2, 0.98)).GetMatrix())
    return image


def test_in_plane_reduction_keeps_the_field_of_view_and_the_low_frequencies() -> None:
    """0.5 x 0.6 mm pixels -> 1 mm: 48 x 48 samples over the same extent, the slices untouched, same origin and
    direction (the DFT grid: new sample j at old n * j / m), and a pattern far below the new Nyquist limit kept."""
    image = _fine_2d_acquisition()
    reduced = in_plane_reduced(image, 2, 1.0)
    assert reduced.GetSize() == (48, 48, 6)
    assert reduced.GetSpacing() == pytest.approx((1.0, 1.0, 3.3))
    assert reduced.GetOrigin() == image.GetOrigin() and reduced.GetDirection() == image.GetDirection()
    k, j, i = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in (6, 48, 48)), indexing="ij")
    expected = 2.0 + np.cos(2 * np.pi * i / 16.0) * np.sin(2 * np.pi * j / 12.0) + 0.1 * k
    np.testing.assert_allclose(sitk.GetArrayFromImage(reduced), expected, atol=1e-3)


def test_in_plane_reduction_leaves_coarse_axes_and_other_slice_axes_right() -> None:
    image = _fine_2d_acquisition(size=(40, 6, 30), spacing=(0.5, 3.0, 2.0))  # slices along y; z already coarse
    reduced = in_plane_reduced(image, 1, 1.0)
    assert reduced.GetSize() == (20, 6, 30) and reduced.GetSpacing() == pytest.approx((1.0, 3.0, 2.0))
    assert in_plane_reduced(image, 1, 0.4) is image  # nothing finer than asked: the image as it was


def test_load_pair_reduces_the_t2_in_plane_and_puts_the_t1_on_the_reduced_grid(tmp_path: Path) -> None:
    t2 = _fine_2d_acquisition()
    t1 = sitk.Image(t2)
    sitk.WriteImage(t2, str(tmp_path / "t2.nii.gz"))
    sitk.WriteImage(t1, str(tmp_path / "t1.nii.gz"))
    (tmp_path / "m.csv").write_text("t2,t1,in_plane_mm\nt2.nii.gz,t1.nii.gz,1.0\n")
    spec, = read_manifest(tmp_path / "m.csv")
    assert spec.in_plane_mm == 1.0
    pair = load_pair(spec)
    assert pair.hr.shape == pair.t1.shape == (6, 48, 48)
    assert pair.spacing == pytest.approx((3.3, 1.0, 1.0))
    as_read = load_pair(dataclasses.replace(spec, in_plane_mm=None))
    assert as_read.hr.shape == (6, 72, 96)


@pytest.mark.parametrize("value", ["0", "-1", "fine", "nan"])
def test_manifest_in_plane_mm_must_be_a_positive_size(tmp_path: Path, value: str) -> None:
    (tmp_path / "m.csv").write_text(f"t2,t1,in_plane_mm\na.nii,b.nii,{value}\n")
    with pytest.raises(InputError, match=f"row 1 has in_plane_mm '{value}'; give a pixel size in mm"):
        read_manifest(tmp_path / "m.csv")


def test_sources_with_clinical_studies_add_them_as_reduced_training_rows(tmp_path: Path) -> None:
    for study in ("patient01_study1", "patient03_study2"):
        (tmp_path / CLINICAL_STUDIES / study).mkdir(parents=True)
    (tmp_path / CLINICAL_STUDIES / "README.md").write_text("not a study")
    specs = source_specs(tmp_path, clinical=True)
    clinical = [spec for spec in specs if spec.subject.startswith(CLINICAL_STUDIES)]
    assert [spec.subject for spec in clinical] == [f"{CLINICAL_STUDIES}/patient01_study1",
                                                   f"{CLINICAL_STUDIES}/patient03_study2"]
    folder = tmp_path.resolve() / CLINICAL_STUDIES / "patient01_study1"
    assert clinical[0] == PairSpec(t2=folder / "t2w.nii.gz", t1=folder / "t1w.nii.gz",
                                   t1_to_ref=folder / "t1w_to_flair.tfm", t2_to_ref=folder / "t2w_to_flair.tfm",
                                   subject=f"{CLINICAL_STUDIES}/patient01_study1", in_plane_mm=TRAINING_PIXEL_MM)
    assert specs[-1].subject == SELECTION_SOURCE and specs[-1].role == "val"
    assert not any(spec.subject.startswith(CLINICAL_STUDIES) for spec in source_specs(tmp_path))
    main(["sources", str(tmp_path), str(tmp_path / "m.csv"), "--clinical"])
    assert [spec.in_plane_mm for spec in read_manifest(tmp_path / "m.csv")] == [None] * 3 + [1.0, 1.0, None]
