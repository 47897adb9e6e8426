"""The training pack (data/pack.py): roles and guard band, float16 round trip (and version 1 packs), crop box, a
volume stored once for every axis, training from it without SimpleITK."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from CohfTSuperResLib.errors import InputError
from CohfTSuperResLib.data.pack import build_pack, crop_box, read_pack, slice_sets, slice_views, write_pack
from CohfTSuperResLib.data.pairs import EVERY_AXIS, PairSpec, load_pair, write_manifest
from CohfTSuperResLib.data.degradations import degrade

ROOT = Path(__file__).resolve().parents[1]


def test_crop_box_holds_the_mask_in_multiples_of_12() -> None:
    mask = np.zeros((3, 96, 120), dtype=bool)
    mask[1, 30:41, 50:77] = True
    rows, cols = crop_box(mask)
    assert (rows.stop - rows.start) % 12 == 0 and (cols.stop - cols.start) % 12 == 0
    assert rows.start <= 30 - 6 and rows.stop >= 41 + 6 and cols.start <= 50 - 6 and cols.stop >= 77 + 6
    edge = np.zeros((1, 24, 24), dtype=bool)
    edge[0, 0, 23] = True
    rows, cols = crop_box(edge)
    assert 0 <= rows.start < rows.stop <= 24 and 0 <= cols.start < cols.stop <= 24
    assert crop_box(np.zeros((1, 24, 36), dtype=bool)) == (slice(0, 24), slice(0, 36))


def _crop(open_ms: Path, folder: Path, subject: str, region: tuple[slice, slice, slice], role: str) -> PairSpec:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("t2", "t1"):
        image = sitk.ReadImage(str(open_ms / "mni" / subject / f"{name}.nii.gz"))
        sitk.WriteImage(image[region], str(folder / f"{subject}_{name}.nii.gz"))
    return PairSpec(t2=folder / f"{subject}_t2.nii.gz", t1=folder / f"{subject}_t1.nii.gz", subject=subject, role=role)


@pytest.fixture(scope="module")
def small_manifest(open_ms: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pack")
    specs = [_crop(open_ms, folder, "patient07", (slice(40, 140), slice(50, 170), slice(70, 74)), "train"),
             _crop(open_ms, folder, "patient19", (slice(40, 140), slice(50, 170), slice(40, 80)), "split")]
    write_manifest(specs, folder / "m.csv")
    return folder / "m.csv"


def test_pack_split_roles_guard_and_float16(small_manifest: Path) -> None:
    volumes = build_pack(small_manifest, val_slices=6, guard=3)
    # the split volume's training slices lie on both sides of its validation slab: two runs of consecutive slices
    assert [(v.name, v.role) for v in volumes] == [
        ("patient07", "train"), ("patient19 (part 1)", "train"), ("patient19 (part 2)", "train"),
        ("patient19 (val slab)", "val")]
    assert all(v.spacing == (1.0, 1.0, 1.0) for v in volumes)
    assert all(v.hr.dtype == np.float16 and v.t1.dtype == np.float16 and v.has_t1 for v in volumes)
    assert all(v.hr.shape[1] % 12 == 0 and v.hr.shape[2] % 12 == 0 for v in volumes)
    assert volumes[0].hr.shape[0] == 4
    pair = load_pair(PairSpec(t2=small_manifest.parent / "patient19_t2.nii.gz",
                              t1=small_manifest.parent / "patient19_t1.nii.gz"))
    brain = pair.brain
    middle = len(brain) // 2
    val_index = brain[middle - 3:middle + 3]  # the central run of brain slices ...
    below, above = brain[brain < val_index.min() - 3], brain[brain > val_index.max() + 3]  # ... and a guard band
    for volume, index in ((volumes[3], val_index), (volumes[1], below), (volumes[2], above)):
        rows, cols = crop_box((pair.hr[index] > 0) | (pair.t1[index] > 0))
        np.testing.assert_array_equal(volume.hr, pair.hr[index][:, rows, cols].astype(np.float16))
        np.testing.assert_array_equal(volume.t1, pair.t1[index][:, rows, cols].astype(np.float16))
        assert volume.t2_factors == pytest.approx(pair.t2_factors)
    assert min(abs(int(i) - int(j)) for i in np.concatenate([below, above]) for j in val_index) == 4


def test_pack_round_trip_and_slice_sets(small_manifest: Path, tmp_path: Path) -> None:
    volumes = build_pack(small_manifest, val_slices=6, guard=3)
    path = write_pack(volumes, tmp_path / "pack.npz", {"manifest": "m.csv"})
    again, meta = read_pack(path)
    assert meta["version"] == 2 and meta["source"] == {"manifest": "m.csv"}
    for a, b in zip(volumes, again):
        assert (a.name, a.role, a.has_t1, a.spacing) == (b.name, b.role, b.has_t1, b.spacing)
        np.testing.assert_array_equal(a.hr, b.hr)
        np.testing.assert_array_equal(a.t1, b.t1)
        assert a.t2_factors == pytest.approx(b.t2_factors)
    train, val = slice_sets(again, 3)
    assert train.names == ["patient07", "patient19 (part 1)", "patient19 (part 2)"]
    assert val.names == ["patient19 (val slab)"]
    hr, t1 = again[0].normalised(3)
    np.testing.assert_array_equal(train.hr[0], hr)
    np.testing.assert_allclose(train.lr[0], degrade(hr, 3), atol=1e-6)
    assert train.lr[0].shape[1:] == (hr.shape[1] // 3, hr.shape[2] // 3)


def test_a_version_1_pack_still_reads(small_manifest: Path, tmp_path: Path) -> None:
    """Packs written before the byte planes: their float16 arrays as they are."""
    volumes = build_pack(small_manifest, val_slices=6, guard=3)
    meta = {"version": 1, "source": {}, "volumes": [
        {"name": v.name, "role": v.role, "t2_factors": {str(k): f for k, f in v.t2_factors.items()},
         "has_t1": v.has_t1, "shape": list(v.hr.shape)} for v in volumes]}
    arrays = {f"{kind}_{n}": getattr(v, kind) for n, v in enumerate(volumes) for kind in ("hr", "t1")}
    np.savez_compressed(tmp_path / "v1.npz", meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
    again, _meta = read_pack(tmp_path / "v1.npz")
    for a, b in zip(volumes, again):
        np.testing.assert_array_equal(a.hr, b.hr)
        assert b.hr.dtype == np.float16 and b.spacing == (1.0, 1.0, 1.0)


@pytest.fixture(scope="module")
def every_axis_manifest(open_ms: Path, small_manifest: Path) -> Path:
    """patient07's 96 x 120 x 60 block: once sliced along every axis, and as three rows of one axis each."""
    folder = small_manifest.parent
    block = _crop(open_ms, folder / "block", "patient07", (slice(40, 136), slice(50, 170), slice(40, 100)), "train")
    rows = [PairSpec(block.t2, block.t1, subject="patient07", slice_axis=EVERY_AXIS)]
    rows += [PairSpec(block.t2, block.t1, subject=f"patient07 (axis {axis})", slice_axis=axis) for axis in (2, 1, 0)]
    split = _crop(open_ms, folder, "patient19", (slice(40, 140), slice(50, 170), slice(40, 80)), "split")
    write_manifest([rows[0], split], folder / "every.csv")
    write_manifest([*rows[1:], split], folder / "axes.csv")
    return folder / "every.csv"


def test_a_volume_stored_once_gives_the_slices_of_every_axis(every_axis_manifest: Path, tmp_path: Path) -> None:
    """Stored once, read as the slices along each axis that three rows of one axis each store: the same brain
    slices, shapes, factors and voxels (up to the normalisation by the whole block, 0.1% at most), in a pack of
    less than half the size."""
    compact = build_pack(every_axis_manifest, val_slices=6, guard=3)
    by_axis = build_pack(every_axis_manifest.with_name("axes.csv"), val_slices=6, guard=3)
    assert [v.name for v in compact] == ["patient07", "patient19 (part 1)", "patient19 (part 2)", "patient19 (val slab)"]
    assert compact[0].hr.ndim == 3 and sorted(compact[0].view_factors) == [0, 1, 2]
    written = write_pack(compact, tmp_path / "compact.npz")
    views, _meta = read_pack(written)
    assert [v.name for v in views] == [v.name for v in by_axis] == [v.name for v in slice_views(compact)]
    for view, alone in zip(views[:3], by_axis[:3]):
        assert view.hr.shape == alone.hr.shape and view.spacing == alone.spacing and view.role == "train"
        assert view.t2_factors == pytest.approx(alone.t2_factors, rel=1e-3)
        np.testing.assert_allclose(view.hr.astype(np.float32), alone.hr.astype(np.float32), rtol=2e-3, atol=1e-3)
        np.testing.assert_array_equal(view.t1, alone.t1)
    assert written.stat().st_size < 0.5 * write_pack(by_axis, tmp_path / "axes.npz").stat().st_size
    block = every_axis_manifest.parent / "block"
    write_manifest([PairSpec(block / "patient07_t2.nii.gz", block / "patient07_t1.nii.gz", role="val",
                             slice_axis=EVERY_AXIS)], tmp_path / "bad.csv")
    with pytest.raises(InputError, match="along every axis can only train"):
        build_pack(tmp_path / "bad.csv")


def test_read_pack_refuses_what_is_not_a_pack(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_pack(tmp_path / "missing.npz")
    (tmp_path / "garbage.npz").write_bytes(b"not a zip file")
    with pytest.raises(InputError, match="not a readable training pack"):
        read_pack(tmp_path / "garbage.npz")
    meta = np.frombuffer(json.dumps({"version": 99, "volumes": []}).encode(), dtype=np.uint8)
    np.savez(tmp_path / "future.npz", meta=meta)
    with pytest.raises(InputError, match="version 99"):
        read_pack(tmp_path / "future.npz")
    with pytest.raises(InputError, match=".npz"):
        write_pack([], tmp_path / "pack.zip")


def test_training_from_a_pack_needs_no_simpleitk(every_axis_manifest: Path, tmp_path: Path) -> None:
    """What a GPU machine without SimpleITK runs: `cohft-sr pack` here (a volume stored for every axis in it),
    `train --pack` there."""
    pack = write_pack(build_pack(every_axis_manifest, val_slices=6, guard=3), tmp_path / "pack.npz")
    code = (
        "import sys; sys.modules['SimpleITK'] = None\n"  # any import of SimpleITK now fails
        "from CohfTSuperResLib.training.train import main\n"
        f"main(['--pack', {str(pack)!r}, '--out', {str(tmp_path / 'run')!r}, '--scale', '2', '--iterations', '2',"
        " '--batch-size', '2', '--patch', '16', '--threads', '1', '--no-progress'])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "run" / "best.safetensors").is_file()
    assert json.loads((tmp_path / "run" / "run.json").read_text())["iterations"] == 2
