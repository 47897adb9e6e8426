"""Reading volumes (any file SimpleITK reads, or a DICOM series folder) and writing them atomically."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import SimpleITK as sitk

from .errors import InputError

WRITABLE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".png")


def read_volume(path: str | Path, float32: bool = False) -> sitk.Image:
    """The image in a file, or the single DICOM series in a folder (cast to float32 when asked);
    InputError with the reason otherwise."""
    path = Path(path)
    if path.is_dir():
        image = _read_dicom_series(path)
    elif not path.is_file():
        raise InputError(f"input not found: {path}")
    else:
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError as error:
            raise InputError(f"cannot read {path}: {_itk_reason(error)}") from error
    return sitk.Cast(image, sitk.sitkFloat32) if float32 else image


def _read_dicom_series(folder: Path) -> sitk.Image:
    """The one DICOM series stored in a folder."""
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise InputError(f"{folder} is a folder without a DICOM series")
    if len(series) > 1:
        raise InputError(f"{folder} holds {len(series)} DICOM series; give a folder with only the one to process")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0]))
    try:
        return reader.Execute()
    except RuntimeError as error:
        raise InputError(f"cannot read the DICOM series in {folder}: {_itk_reason(error)}") from error


def output_suffix(path: str | Path) -> str:
    """The format suffix of an output path (.nii.gz, .nii, .nrrd, .mha); InputError for others."""
    name = Path(path).name.lower()
    for suffix in WRITABLE_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    raise InputError(
        f"cannot write {Path(path).name}: use one of {', '.join(WRITABLE_SUFFIXES)} "
        "(single-file formats, so the output appears complete or not at all)"
    )


def write_volume(image: sitk.Image, path: str | Path) -> Path:
    """Write to a temporary name beside `path`, then rename: the output is complete or absent."""
    path = Path(path)
    suffix = output_suffix(path)
    temporary = path.with_name(f".{path.name[: -len(suffix)]}.{os.getpid()}.partial{suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(image, str(temporary), useCompression=suffix != ".png")
        temporary.replace(path)
    except RuntimeError as error:
        raise InputError(f"cannot write {path}: {_itk_reason(error)}") from error
    except OSError as error:
        raise InputError(f"cannot write {path}: {error.strerror or error}") from error
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
    return path


def _itk_reason(error: BaseException) -> str:
    """The informative last non-empty line of an ITK error (its first lines are source locations)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
