"""Volume files in and out (imageio/volumes.py, imageio/file_integrity.py): what SimpleITK lets through is caught, outputs are
atomic and verified, an input is never overwritten, two runs never both write one output."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from CohfTSuperResLib.imageio import volumes as volume_io
from CohfTSuperResLib.errors import InputError
from CohfTSuperResLib.imageio.file_integrity import check_volume_file

SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha")


def _image(dtype=np.float32, seed: int = 0) -> sitk.Image:
    voxels = (np.random.default_rng(seed).random((6, 20, 24)) * 100 + 1).astype(dtype)
    image = sitk.GetImageFromArray(voxels)
    image.SetSpacing((0.5, 0.6, 3.0))
    image.SetOrigin((10.0, -5.0, 2.0))
    return image


# ---------- inputs SimpleITK would read wrongly ----------


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_truncated_nifti_is_refused_not_read_with_zeros(tmp_path, suffix):
    path = tmp_path / f"t2{suffix}"
    sitk.WriteImage(_image(), str(path), useCompression=True)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(path))).size  # SimpleITK itself reads it without an error
    with pytest.raises(InputError, match="truncated"):
        volume_io.read_volume(path)


def test_corrupt_gzip_is_refused(tmp_path):
    path = tmp_path / "t2.nii.gz"
    sitk.WriteImage(_image(), str(path), useCompression=True)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="corrupt|truncated"):
        volume_io.read_volume(path)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_and_inf_in_nifti_are_refused_with_count_and_place(tmp_path, suffix, dtype):
    voxels = sitk.GetArrayFromImage(_image(dtype))
    voxels[2, 3, 4] = np.nan
    voxels[5, 0, 1] = np.inf
    image = sitk.GetImageFromArray(voxels)
    path = tmp_path / f"t2{suffix}"
    sitk.WriteImage(image, str(path))
    assert np.isfinite(sitk.GetArrayFromImage(sitk.ReadImage(str(path)))).all()  # SimpleITK reads them as 0
    with pytest.raises(InputError, match=r"2 NaN or Inf voxel\(s\) \(the first at voxel index \(4, 3, 2\)\)"):
        volume_io.read_volume(path)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_truncated_nrrd_and_mha_are_refused_by_itk(tmp_path, suffix):
    path = tmp_path / f"t2{suffix}"
    sitk.WriteImage(_image(), str(path), useCompression=True)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(InputError, match="cannot read"):
        volume_io.read_volume(path)


def test_a_file_that_is_not_nifti_is_refused(tmp_path):
    path = tmp_path / "t2.nii.gz"
    path.write_bytes(gzip.compress(b"\x00" * 600))
    with pytest.raises(InputError, match="not a NIfTI file"):
        check_volume_file(path)


def _nifti_with_pixdim(tmp_path: Path, value: float, sform_agrees: bool = False) -> Path:
    """An uncompressed NIfTI-1 of _image() whose pixdim[1] (the x voxel size, 0.5 mm) is `value` in the header; its
    sform (and with sform_agrees, the sform's x column too) as SimpleITK wrote it."""
    import struct

    path = tmp_path / "t2.nii"
    sitk.WriteImage(_image(), str(path))
    data = bytearray(path.read_bytes())
    data[80:84] = struct.pack("<f", value)
    if sform_agrees:  # srow_x, srow_y, srow_z at 280, 296, 312: scale the x column to the new voxel size
        for row in (280, 296, 312):
            old = struct.unpack("<f", data[row:row + 4])[0]
            data[row:row + 4] = struct.pack("<f", old * value / 0.5)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("value", [0.0, -0.5, float("nan")])
def test_a_voxel_size_that_is_not_positive_is_refused(tmp_path, value):
    """SimpleITK reads a zero pixdim as 1 mm and a negative one as a flipped axis, without an error."""
    path = _nifti_with_pixdim(tmp_path, value)
    with pytest.raises(InputError, match=r"voxel sizes \(pixdim\) of .* x 0.6 x 3 mm; every voxel size must be"):
        volume_io.read_volume(path)


def test_an_sform_that_disagrees_with_the_voxel_size_is_said(tmp_path, capfd):
    """pixdim 1 mm where the sform says 0.5: ITK falls back to the qform (1 mm voxels) and says so only on its own
    stderr; the library says it in one note, and nothing reaches the terminal."""
    from CohfTSuperResLib.errors import InputNote

    with pytest.warns(InputNote, match=r"t2.nii: its sform's voxel sizes differ .* its qform: 1 x 0.6 x 3 mm"):
        image = volume_io.read_volume(_nifti_with_pixdim(tmp_path, 1.0))
    assert image.GetSpacing()[0] == pytest.approx(1.0)
    assert capfd.readouterr().err == ""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # header and sform that agree: no note
        assert volume_io.read_volume(_nifti_with_pixdim(tmp_path, 1.0, sform_agrees=True)).GetSpacing()[0] == \
            pytest.approx(1.0)


def test_a_folder_without_a_dicom_series_is_one_error_and_nothing_else(tmp_path, capfd):
    (tmp_path / "notes.txt").write_text("not DICOM")
    with pytest.raises(InputError, match="folder without a DICOM series"):
        volume_io.read_volume(tmp_path)
    assert capfd.readouterr().err == ""  # GDCM's own warnings are kept from the terminal


# ---------- outputs ----------


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_written_volume_reads_back_with_its_geometry(tmp_path, suffix):
    image = _image()
    path = volume_io.write_volume(image, tmp_path / f"sr{suffix}")
    back = sitk.ReadImage(str(path))
    assert back.GetSize() == image.GetSize()
    np.testing.assert_allclose(back.GetSpacing(), image.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_png_and_unknown_formats_are_refused_before_any_work(tmp_path):
    for name in ("sr.png", "sr.jpg", "sr.tif"):
        with pytest.raises(InputError, match="cannot write"):
            volume_io.check_output(tmp_path / name, [], overwrite=True)


def test_output_that_is_an_input_is_refused_even_with_overwrite(tmp_path, monkeypatch):
    t2 = tmp_path / "t2.nii.gz"
    volume_io.write_volume(_image(), t2)
    (tmp_path / "link.nii.gz").symlink_to(t2)
    os.link(t2, tmp_path / "hard.nii.gz")
    monkeypatch.chdir(tmp_path)
    for output in (t2, tmp_path / "link.nii.gz", tmp_path / "hard.nii.gz", Path("t2.nii.gz"),
                   tmp_path / "sub" / ".." / "t2.nii.gz"):
        with pytest.raises(InputError, match="is the input"):
            volume_io.check_output(output, [t2, None], overwrite=True)
    with pytest.raises(InputError, match="exists; pass --overwrite"):
        volume_io.check_output(tmp_path / "t2.nii.gz", [tmp_path / "other.nii.gz"], overwrite=False)
    volume_io.check_output(tmp_path / "new.nii.gz", [t2], overwrite=False)


def test_second_run_on_the_same_output_is_refused_and_the_lock_is_released(tmp_path):
    output = tmp_path / "sr.nii.gz"
    with volume_io.OutputLock(output):
        with pytest.raises(InputError, match="another run is writing"):
            with volume_io.OutputLock(output):
                pass
    with volume_io.OutputLock(output):  # released: free again
        pass
    assert list(tmp_path.iterdir()) == []  # the lock file goes with the lock


def test_an_output_folder_that_can_not_be_written_names_the_output(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(InputError, match=f"cannot write {blocker}/sub/sr.nii.gz: its folder can not be created"):
        with volume_io.OutputLock(blocker / "sub" / "sr.nii.gz"):
            pass
    with pytest.raises(InputError, match=r"cannot write /proc/sr.nii.gz: .* in its folder /proc"):
        with volume_io.OutputLock(Path("/proc/sr.nii.gz")):
            pass


def test_stale_temporaries_of_killed_runs_are_removed(tmp_path):
    ended = subprocess.Popen(["true"])
    ended.wait()  # its pid now belongs to no process
    stale = tmp_path / f".sr.{ended.pid}.partial.nii.gz"
    stale.write_bytes(b"left by a killed run")
    volume_io.write_volume(_image(), tmp_path / "sr.nii.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sr.nii.gz"]


def test_verification_catches_a_truncated_write_and_keeps_the_old_file(tmp_path, monkeypatch):
    """The full-disk case: the writer reports success but the gzip stream is cut short."""
    target = tmp_path / "sr.nii.gz"
    target.write_bytes(b"the user's earlier result")
    real_write = sitk.WriteImage

    def short_write(image, path, useCompression=False):
        real_write(image, path, useCompression)
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: len(data) // 2])

    monkeypatch.setattr(volume_io.sitk, "WriteImage", short_write)
    with pytest.raises(InputError, match=r"cannot write .*MiB free there.*truncated"):
        volume_io.write_volume(_image(), target)
    assert target.read_bytes() == b"the user's earlier result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sr.nii.gz"]


def test_verification_catches_a_header_that_lost_the_geometry(tmp_path, monkeypatch):
    real_write = sitk.WriteImage

    def shifted_write(image, path, useCompression=False):
        moved = sitk.Image(image)
        moved.SetOrigin(tuple(x + 5.0 for x in image.GetOrigin()))
        real_write(moved, path, useCompression)

    monkeypatch.setattr(volume_io.sitk, "WriteImage", shifted_write)
    with pytest.raises(InputError, match="does not keep the volume's geometry"):
        volume_io.write_volume(_image(), tmp_path / "sr.nii.gz")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KiB tmpfs (a real full disk); skipped where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if shutil.which("mount") is None or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                                                       capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_full_disk_keeps_the_old_output_and_leaves_nothing_behind(tiny_disk, capfd):
    target = tiny_disk / "sr.nii.gz"
    target.write_bytes(b"the user's earlier result")
    big = sitk.GetImageFromArray(np.random.default_rng(0).random((30, 64, 64)).astype(np.float32))
    with pytest.raises(InputError, match=r"cannot write .*sr\.nii\.gz \(0 MiB free there\)"):
        volume_io.write_volume(big, target)
    assert target.read_bytes() == b"the user's earlier result"
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["sr.nii.gz"]
    assert "NWAD" not in capfd.readouterr().err  # the NIfTI library's own complaint is in the message, not stray


def test_png_figures_are_written_atomically(tmp_path):
    pixels = (np.arange(12 * 20) % 256).astype(np.uint8).reshape(12, 20)
    path = volume_io.write_png(pixels, tmp_path / "figure.png")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(path))), pixels)
    assert [p.name for p in tmp_path.iterdir()] == ["figure.png"]
