"""Training data (data.py): manifests, T1 registration onto the T2 grid, slicing, normalisation, patches, sampling."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from CohfTSuperResLib.data import (
    PairSpec,
    PatchSampler,
    SliceSet,
    brain_slices,
    build_datasets,
    crop_patch,
    default_slice_axis,
    load_pair,
    read_manifest,
    t1_on_t2_grid,
    t1_to_t2_transform,
    to_stack,
    write_manifest,
)
from CohfTSuperResLib.degrade import degrade
from CohfTSuperResLib.normalize import robust_scale

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
    specs = [PairSpec(t2=tmp_path / "a.nii", t1=tmp_path / "b.nii", role="split", subject="s", slice_axis=0),
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


def test_default_slice_axis() -> None:
    image = sitk.Image(4, 4, 4, sitk.sitkFloat32)
    assert default_slice_axis(image) == 2
    image.SetSpacing((0.5, 4.0, 0.5))
    assert default_slice_axis(image) == 1
    image.SetSpacing((4.0, 4.0, 1.0))
    assert default_slice_axis(image) == 0


def test_to_stack_axes() -> None:
    array = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)  # (k, j, i)
    image = sitk.GetImageFromArray(array)
    assert to_stack(image, 2).shape == (2, 3, 4)
    np.testing.assert_array_equal(to_stack(image, 0)[1], array[:, :, 1])
    np.testing.assert_array_equal(to_stack(image, 1)[2], array[:, 2, :])


# ----------------------------------------------------------------------------- brain slices


def test_brain_slices_threshold() -> None:
    stack = np.zeros((4, 20, 20), dtype=np.float32)
    stack[1].flat[:16] = 0.5   # 4% tissue: not brain
    stack[2].flat[:20] = 0.5   # 5%: brain
    stack[3].flat[:200] = 0.05  # half the slice, but below the tissue level
    np.testing.assert_array_equal(brain_slices(stack), [2])


def test_brain_slices_on_a_real_volume(open_ms: Path) -> None:
    t2 = sitk.ReadImage(str(open_ms / "mni" / "patient07" / "t2.nii.gz"), sitk.sitkFloat32)
    stack = to_stack(t2, 2)
    brain = brain_slices(stack / robust_scale(stack))
    assert np.all(np.diff(brain) == 1)  # one contiguous block of axial slices
    assert 0 < brain[0] and brain[-1] < stack.shape[0] - 1  # the empty slices at both ends are dropped
    assert 100 < brain.size < stack.shape[0]
    assert 90 in brain


# ----------------------------------------------------------------------------- loading real pairs


def _crop(open_ms: Path, folder: Path, subject: str, region: tuple[slice, slice, slice]) -> PairSpec:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("t2", "t1"):
        image = sitk.ReadImage(str(open_ms / "mni" / subject / f"{name}.nii.gz"))
        sitk.WriteImage(image[region], str(folder / f"{subject}_{name}.nii.gz"))
    return PairSpec(t2=folder / f"{subject}_t2.nii.gz", t1=folder / f"{subject}_t1.nii.gz", subject=subject)


def test_load_pair_normalises_like_inference(open_ms: Path, tmp_path: Path) -> None:
    """The T2 is divided by the robust scale of its synthesised LR volume (what inference computes from its
    input), the T1 by its own; the stacks are trimmed to a multiple of the scale."""
    spec = _crop(open_ms, tmp_path, "patient07", (slice(40, 143), slice(50, 171), slice(80, 100)))
    for scale in (2, 3):
        pair = load_pair(spec, scale)
        assert pair.hr.shape == (20, 121 - 121 % scale, 103 - 103 % scale) == pair.t1.shape
        assert robust_scale(degrade(pair.hr, scale)) == pytest.approx(1.0, rel=1e-5)
        t1_raw = sitk.GetArrayFromImage(sitk.ReadImage(str(spec.t1), sitk.sitkFloat32))
        raw = to_stack(sitk.ReadImage(str(spec.t2), sitk.sitkFloat32), 2)
        ratio = raw[:, : pair.hr.shape[1], : pair.hr.shape[2]] / np.where(pair.hr == 0, 1, pair.hr)
        assert np.allclose(ratio[pair.hr > 0.1], np.median(ratio[pair.hr > 0.1]), rtol=1e-5)
        np.testing.assert_allclose(pair.t1 * robust_scale(t1_raw), to_stack(
            sitk.ReadImage(str(spec.t1), sitk.sitkFloat32), 2)[:, : pair.hr.shape[1], : pair.hr.shape[2]], rtol=1e-5)
    legacy = load_pair(spec, 2, intensity_reference="hr")
    raw = to_stack(sitk.ReadImage(str(spec.t2), sitk.sitkFloat32), 2)
    np.testing.assert_allclose(legacy.hr, (raw / robust_scale(raw))[:, :120, :102], rtol=1e-6)


def test_build_datasets_split_and_roles(open_ms: Path, tmp_path: Path) -> None:
    train_spec = _crop(open_ms, tmp_path, "patient07", (slice(60, 124), slice(70, 134), slice(70, 74)))
    split_spec = _crop(open_ms, tmp_path, "patient19", (slice(60, 124), slice(70, 134), slice(40, 80)))
    split_spec.role = "split"
    train, val = build_datasets([train_spec, split_spec], 2, val_slices=6, guard=3)
    assert train.names == ["patient07", "patient19"] and val.names == ["patient19 (val slab)"]
    assert [x.shape for x in val.hr] == [(6, 64, 64)] and [x.shape for x in val.lr] == [(6, 32, 32)]
    assert train.hr[0].shape[0] == 4
    full = load_pair(split_spec, 2)
    # the slab is the central run of brain slices; no training slice lies within `guard` of it
    val_index = [i for i in range(full.hr.shape[0]) if any(np.array_equal(full.hr[i], v) for v in val.hr[0])]
    train_index = [i for i in range(full.hr.shape[0]) if any(np.array_equal(full.hr[i], v) for v in train.hr[1])]
    assert val_index == list(range(val_index[0], val_index[0] + 6))
    assert abs((val_index[0] + val_index[-1]) / 2 - (full.brain[0] + full.brain[-1]) / 2) <= 1
    assert len(train_index) == len(full.brain) - 6 - 6
    assert min(abs(i - j) for i in train_index for j in val_index) == 4
    np.testing.assert_allclose(train.lr[1], degrade(train.hr[1], 2), atol=1e-6)


# ----------------------------------------------------------------------------- patches


AUGMENTATIONS = list(itertools.product((False, True), repeat=3))


def _dihedral(x: np.ndarray, flip_y: bool, flip_x: bool, transpose: bool) -> np.ndarray:
    if flip_y:
        x = x[::-1]
    if flip_x:
        x = x[:, ::-1]
    return x.T if transpose else x


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("augmentation", AUGMENTATIONS)
def test_crop_patch_keeps_the_grid_relation(scale: int, augmentation: tuple[bool, bool, bool]) -> None:
    """HR built so that HR sample s*j is LR sample j: every augmented patch keeps lr == hr[::s, ::s]."""
    rng = np.random.default_rng(scale)
    lr = rng.random((9, 11)).astype(np.float32)
    hr = rng.random((9 * scale, 11 * scale)).astype(np.float32)
    hr[::scale, ::scale] = lr
    t1 = -hr
    top, left, size = 2, 3, 5
    lr_patch, hr_patch, t1_patch = crop_patch(lr, hr, t1, scale, top, left, size, *augmentation)
    assert lr_patch.shape == (size, size) and hr_patch.shape == (scale * size,) * 2 == t1_patch.shape
    np.testing.assert_array_equal(hr_patch[::scale, ::scale], lr_patch)
    np.testing.assert_array_equal(t1_patch, -hr_patch)
    np.testing.assert_array_equal(lr_patch, _dihedral(lr[top:top + size, left:left + size], *augmentation))
    if not any(augmentation):
        np.testing.assert_array_equal(hr_patch, hr[scale * top:scale * (top + size), scale * left:scale * (left + size)])


def test_crop_patch_augmentations_are_distinct_and_guarded() -> None:
    rng = np.random.default_rng(0)
    lr, hr = rng.random((8, 8)), rng.random((16, 16))
    patches = {crop_patch(lr, hr, hr, 2, 1, 1, 4, *a)[1].tobytes() for a in AUGMENTATIONS}
    assert len(patches) == 8
    with pytest.raises(ValueError, match="top and left"):
        crop_patch(lr, hr, hr, 2, 0, 1, 4, True, False, False)


def _aligned_set(scale: int, count: int = 3, size: int = 20) -> SliceSet:
    """A SliceSet whose LR is the HR's every s-th sample (so alignment is checkable) and T1 = HR + 10."""
    rng = np.random.default_rng(1)
    data = SliceSet(scale)
    for volume in range(2):
        hr = rng.random((count + volume, scale * size, scale * size)).astype(np.float32)
        data.names.append(f"v{volume}")
        data.hr.append(hr)
        data.t1.append(hr + 10)
        data.lr.append(np.ascontiguousarray(hr[:, ::scale, ::scale]))
    return data


def test_patch_sampler_is_a_function_of_seed_rank_iteration() -> None:
    data = _aligned_set(2)
    first = PatchSampler(data, 6, 4, seed=3, rank=0).batch(17)
    again = PatchSampler(data, 6, 4, seed=3, rank=0).batch(17)
    for a, b in zip(first, again):
        assert torch_equal(a, b)
    assert [tuple(x.shape) for x in first] == [(4, 1, 6, 6), (4, 1, 12, 12), (4, 1, 12, 12)]
    for other in (PatchSampler(data, 6, 4, seed=3, rank=1).batch(17), PatchSampler(data, 6, 4, seed=4).batch(17),
                  PatchSampler(data, 6, 4, seed=3).batch(18)):
        assert not torch_equal(first[1], other[1])


def test_patch_sampler_batches_are_aligned() -> None:
    for scale in (2, 3):
        sampler = PatchSampler(_aligned_set(scale), 5, 8, seed=0)
        for iteration in range(5):
            lr, hr, t1 = sampler.batch(iteration)
            np.testing.assert_array_equal(hr[..., ::scale, ::scale].numpy(), lr.numpy())
            np.testing.assert_allclose(t1.numpy(), hr.numpy() + 10, atol=1e-5)


def test_patch_sampler_rejects_small_slices() -> None:
    with pytest.raises(ValueError, match="smaller than the patch"):
        PatchSampler(_aligned_set(2, size=6), 6, 2)
    with pytest.raises(ValueError, match="no training slices"):
        PatchSampler(SliceSet(2), 6, 2)


def torch_equal(a, b) -> bool:
    return a.shape == b.shape and bool((a == b).all())
