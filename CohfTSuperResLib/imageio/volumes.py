"""Reading volumes (any file SimpleITK reads, or a DICOM series folder) and writing them atomically and verified.

Reading checks what SimpleITK lets through (``file_integrity``: truncated or corrupt gzip / NIfTI data,
NaN / Inf in NIfTI floats). Writing never loses what was there: the volume goes to a temporary file
in the target folder, is flushed to disk, read back (complete file, header geometry, pixel type) and
only then renamed over the target in one step; on any failure the old file is untouched and the
temporary file removed (``cli`` turns SIGTERM / SIGHUP into that path too; a temporary file left by a
process that was killed outright is removed by the next write to the same output). An output that
is one of the inputs is refused whatever ``overwrite`` says, and ``OutputLock`` keeps two runs from
writing the same output.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from CohfTSuperResLib.errors import InputError, InputNote
from CohfTSuperResLib.imageio.file_integrity import check_volume_file
from CohfTSuperResLib.options import OUTPUT_SUFFIXES

try:
    import fcntl
except ImportError:  # Windows: msvcrt's byte-range lock instead (not tested on this project's Linux machines)
    fcntl = None
    import msvcrt

# metadata the library keeps with an output: the model that ran, the guide check's numbers (NRRD keys; NIfTI keeps
# a one-line summary in its description, ITK's ITK_FileNotes)
RECORD_KEYS = ("cohft_model", "cohft_guide_check")
SFORM_IGNORED = "unexpected scales in sform"  # ITK's NIfTI reader, when it falls back to the qform
GEOMETRY_TOLERANCE_MM = 1e-3  # origin / spacing agreement of a written header with the intended grid
DIRECTION_TOLERANCE = 1e-4


@contextlib.contextmanager
def native_stderr_captured() -> Iterator[list[str]]:
    """Collect what C libraries (ITK, NIfTI, GDCM) print on file descriptor 2 during the block, instead of letting
    it reach the user's terminal as stray lines; the yielded list holds the captured lines afterwards."""
    captured: list[str] = []
    sys.stderr.flush()
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.extend(line.strip() for line in sink.read().decode(errors="replace").splitlines() if line.strip())


def read_volume(path: str | Path, float32: bool = False) -> sitk.Image:
    """The image in a file, or the single DICOM series in a folder (cast to float32 when asked);
    InputError with the reason otherwise."""
    path = Path(path)
    if path.is_dir():
        image = _read_dicom_series(path)
    elif not path.is_file():
        raise InputError(f"input not found: {path}")
    else:
        check_volume_file(path)
        try:
            with native_stderr_captured() as native:
                image = sitk.ReadImage(str(path))
        except RuntimeError as error:
            raise InputError(f"cannot read {path}: {_itk_reason(error)}") from error
        if any(SFORM_IGNORED in line for line in native):
            warnings.warn(f"{path.name}: its sform's voxel sizes differ from its header's (pixdim), so it was read "
                          f"with its qform: {' x '.join(f'{s:g}' for s in image.GetSpacing())} mm voxels; check the "
                          "result's geometry", InputNote, stacklevel=2)
    return sitk.Cast(image, sitk.sitkFloat32) if float32 else image


def _read_dicom_series(folder: Path) -> sitk.Image:
    """The one DICOM series stored in a folder."""
    with native_stderr_captured():  # GDCM's warnings about the folder's other files
        series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise InputError(f"{folder} is a folder without a DICOM series")
    if len(series) > 1:
        raise InputError(f"{folder} holds {len(series)} DICOM series; give a folder with only the one to process")
    reader = sitk.ImageSeriesReader()
    try:
        with native_stderr_captured():
            reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0]))
            return reader.Execute()
    except RuntimeError as error:
        raise InputError(f"cannot read the DICOM series in {folder}: {_itk_reason(error)}") from error


def output_suffix(path: str | Path) -> str:
    """The format suffix of an output path (.nii.gz, .nii, .nrrd, .mha); InputError for others."""
    name = Path(path).name.lower()
    for suffix in OUTPUT_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    raise InputError(
        f"cannot write {Path(path).name}: use one of {', '.join(OUTPUT_SUFFIXES)} "
        "(single files that hold a float32 3-D volume with its geometry)"
    )


def check_output(path: str | Path, inputs: Iterable[str | Path | None], overwrite: bool) -> None:
    """InputError, before any work, when `path` can not or must not be written.

    Refused: an unsupported format; a path that is one of the inputs (same file through any link or
    relative path), whatever `overwrite` says; an existing file without `overwrite`; a folder.
    """
    path = Path(path)
    output_suffix(path)
    if path.is_dir():
        raise InputError(f"the output {path} is a folder; give a file name")
    resolved = path.resolve()  # symlinks and '..' (also through folders that do not exist yet)
    for source in inputs:
        if source is None:
            continue
        source_resolved = Path(source).resolve()
        if resolved == source_resolved or (resolved.exists() and source_resolved.exists()
                                           and os.path.samefile(resolved, source_resolved)):
            raise InputError(f"the output {path} is the input {source}: writing it would destroy the input; "
                             "choose another output")
    if path.exists() and not overwrite:
        raise InputError(f"{path} exists; pass --overwrite to replace it")


class OutputLock:
    """An exclusive lock on an output path for the duration of a run (a `.NAME.lock` file beside it).

    A second run that wants the same output is refused at once with an InputError instead of both
    writing it. The lock is an flock, released by the kernel when the process ends in any way.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(f".{self.path.name}.lock")
        self._handle: int | None = None

    def __enter__(self) -> OutputLock:
        """Take the lock (the output's missing folders are created first); InputError when another run holds it or
        the output's folder can not be written."""
        try:
            self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InputError(f"cannot write {self.path}: its folder can not be created ({error.strerror})") from error
        while True:
            try:
                handle = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as error:
                raise InputError(f"cannot write {self.path}: {error.strerror} in its folder {self.path.parent}") \
                    from error
            try:
                _lock_now(handle)
            except OSError as error:
                os.close(handle)
                if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES, errno.EDEADLK):
                    raise InputError(f"another run is writing {self.path} right now; wait for it or choose another "
                                     "output") from error
                raise
            # the holder before us may have removed the file after we opened it: lock the file that is there now
            if os.path.exists(self.lock_path) and os.path.samestat(os.fstat(handle), os.stat(self.lock_path)):
                self._handle = handle
                return self
            os.close(handle)

    def __exit__(self, *exc_info: object) -> None:
        if self._handle is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.lock_path)
            os.close(self._handle)
            self._handle = None


def _lock_now(handle: int) -> None:
    """An exclusive lock on an open file, or OSError(EWOULDBLOCK/EACCES) at once when another process holds it."""
    if fcntl is not None:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    else:
        msvcrt.locking(handle, msvcrt.LK_NBLCK, 1)


def _partial_name(path: Path, suffix: str, pid: int) -> Path:
    return path.with_name(f".{path.name[: -len(suffix)]}.{pid}.partial{suffix}")


def _remove_stale_partials(path: Path, suffix: str) -> None:
    """Temporary files of this output left by processes that no longer exist (killed outright)."""
    for candidate in path.parent.glob(f".{path.name[: -len(suffix)]}.*.partial{suffix}"):
        pid = candidate.name[len(path.name) - len(suffix) + 2:].split(".")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _process_exists(int(pid)):
            with contextlib.suppress(OSError):
                candidate.unlink()


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync(path: Path) -> None:
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def verify_written(path: Path, image: sitk.Image) -> None:
    """InputError unless the file at `path` is complete and holds image's size, geometry and pixel type."""
    check_volume_file(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        raise InputError(f"the written file {path} can not be read back: {_itk_reason(error)}") from error
    if tuple(reader.GetSize()) != tuple(image.GetSize()) or reader.GetPixelID() != image.GetPixelID():
        raise InputError(f"the written file {path} holds {reader.GetSize()} {reader.GetPixelIDTypeAsString()} "
                         f"voxels instead of {image.GetSize()} {image.GetPixelIDTypeAsString()}")
    close = (np.allclose(reader.GetOrigin(), image.GetOrigin(), rtol=1e-6, atol=GEOMETRY_TOLERANCE_MM)
             and np.allclose(reader.GetSpacing(), image.GetSpacing(), rtol=1e-6, atol=GEOMETRY_TOLERANCE_MM)
             and np.allclose(reader.GetDirection(), image.GetDirection(), atol=DIRECTION_TOLERANCE))
    if not close:
        raise InputError(f"the written file {path} does not keep the volume's geometry (origin {reader.GetOrigin()} "
                         f"vs {image.GetOrigin()}, spacing {reader.GetSpacing()} vs {image.GetSpacing()}): "
                         "this format can not store it; write .nrrd or .mha")


def _free_space(folder: Path) -> str:
    try:
        return f"{shutil.disk_usage(folder).free / 2**20:,.0f} MiB free there"
    except OSError:
        return "free space unknown"


def write_volume(image: sitk.Image, path: str | Path) -> Path:
    """Write to a temporary file beside `path`, verify it, then rename: the output is complete and right, or the
    old file is untouched; InputError naming the path and the free space otherwise."""
    path = Path(path)
    suffix = output_suffix(path)
    temporary = _partial_name(path, suffix, os.getpid())
    native: list[str] = []  # what the native writer printed
    with _temporary(temporary):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _remove_stale_partials(path, suffix)
            with native_stderr_captured() as native:
                sitk.WriteImage(image, str(temporary), useCompression=True)
            _fsync(temporary)
            verify_written(temporary, image)
            temporary.replace(path)
            _fsync(path.parent)
        except InputError as error:
            said = f" (the writer said: {native[-1]})" if native else ""
            raise InputError(f"cannot write {path} ({_free_space(path.parent)}): {error}{said}") from error
        except RuntimeError as error:
            raise InputError(f"cannot write {path} ({_free_space(path.parent)}): {_itk_reason(error)}") from error
        except OSError as error:
            raise InputError(f"cannot write {path} ({_free_space(path.parent)}): {error.strerror or error}") \
                from error
    return path


@contextlib.contextmanager
def _temporary(path: Path) -> Iterator[None]:
    """Remove the temporary file `path` when the block ends, however it ends (after a rename it is gone already)."""
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


def write_png(pixels: np.ndarray, path: str | Path) -> Path:
    """Write a 2-D uint8 array as a grayscale PNG (a figure, not a volume), complete or not at all."""
    path = Path(path)
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.partial.png")
    with _temporary(temporary):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(sitk.GetImageFromArray(np.ascontiguousarray(pixels, dtype=np.uint8)), str(temporary))
            temporary.replace(path)
        except (RuntimeError, OSError) as error:
            raise InputError(f"cannot write {path} ({_free_space(path.parent)}): {error}") from error
    return path


def _itk_reason(error: BaseException) -> str:
    """The informative last non-empty line of an ITK error (its first lines are source locations)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
