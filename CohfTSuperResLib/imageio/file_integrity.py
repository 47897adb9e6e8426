"""Checks of volume files that SimpleITK does not make: complete gzip streams, complete NIfTI data, finite floats.

SimpleITK (ITK 5) reads a truncated ``.nii`` or ``.nii.gz`` without an error, filling the missing
voxels with zeros, and reads NaN / Inf voxels of a NIfTI file as 0; it can also write a truncated
gzip stream on a full disk and report success. ``check_volume_file`` catches all of these before a
file is used (inputs) or trusted (outputs), with an ``InputError`` that says what is wrong:
- a gzip-compressed file (``.gz``) must hold a complete stream (end-of-stream marker, CRC and length);
- a NIfTI-1 or NIfTI-2 file (``.nii``, ``.nii.gz``) must hold all the voxels its header promises, and give a
  positive voxel size (pixdim) along each spatial axis of more than one voxel;
- the float voxels of a NIfTI file must be finite (counted, with the first bad voxel's index).
NRRD and MetaImage files are checked by ITK's own readers, which refuse truncated data and keep
NaN / Inf (caught later by ``inference.input_checks.volume_array``).
"""

from __future__ import annotations

import gzip
import hashlib
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from CohfTSuperResLib.errors import InputError

NIFTI_FLOATS = {16: "f4", 64: "f8"}  # NIfTI datatype code -> numpy float type


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks (weights, ONNX exports, sample data)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class NiftiLayout:
    """Where a NIfTI file's voxels are and how many bytes they take."""

    shape: tuple[int, ...]  # dim[1..ndim], fastest first
    spacing: tuple[float, ...]  # pixdim[1..ndim] (voxel sizes, mm for the spatial axes)
    datatype: int
    bitpix: int
    offset: int
    byte_order: str  # '<' or '>'

    @property
    def data_bytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.bitpix // 8


def _file_bytes(path: Path) -> bytes:
    """The file's content, decompressed when it is gzip; InputError when the gzip stream is incomplete or corrupt."""
    raw = path.read_bytes()
    if not path.name.lower().endswith(".gz"):
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError as error:
        raise InputError(f"cannot read {path}: it is truncated, its gzip stream ends before the end-of-stream marker "
                         "(an interrupted copy or download, or a full disk when it was written)") from error
    except (OSError, zlib.error) as error:
        raise InputError(f"cannot read {path}: it is corrupt, its gzip stream can not be decompressed ({error})") \
            from error


def nifti_layout(header: bytes, name: str) -> NiftiLayout | None:
    """The voxel layout a NIfTI-1 / NIfTI-2 header describes (None when the bytes are not a NIfTI header)."""
    for order in ("<", ">"):
        if len(header) >= 348 and struct.unpack(order + "i", header[:4])[0] == 348:
            ndim, *dims = struct.unpack(order + "8h", header[40:56])
            datatype, bitpix = struct.unpack(order + "2h", header[70:74])
            _qfac, *pixdim = struct.unpack(order + "8f", header[76:108])
            offset = int(struct.unpack(order + "f", header[108:112])[0])
            break
        if len(header) >= 540 and struct.unpack(order + "i", header[:4])[0] == 540:
            datatype, bitpix = struct.unpack(order + "2h", header[12:16])
            ndim, *dims = struct.unpack(order + "8q", header[16:80])
            _qfac, *pixdim = struct.unpack(order + "8d", header[104:168])
            offset = int(struct.unpack(order + "q", header[168:176])[0])
            break
    else:
        return None
    if not 1 <= ndim <= 7 or any(d < 1 for d in dims[:ndim]) or bitpix <= 0 or bitpix % 8:
        raise InputError(f"cannot read {name}: impossible NIfTI header (dimensions {dims[:ndim]}, {bitpix} bits "
                         "a voxel)")
    return NiftiLayout(tuple(int(d) for d in dims[:ndim]), tuple(float(p) for p in pixdim[:ndim]), int(datatype),
                       int(bitpix), max(offset, 0), order)


def check_volume_file(path: str | Path) -> None:
    """InputError when a volume file is truncated or corrupt, or when its NIfTI float voxels are not all finite."""
    path = Path(path)
    name = path.name.lower()
    if not (name.endswith(".gz") or name.endswith(".nii")):
        return
    content = _file_bytes(path)
    if not (name.endswith(".nii") or name.endswith(".nii.gz")):
        return
    layout = nifti_layout(content[:540], str(path))
    if layout is None:
        raise InputError(f"cannot read {path}: not a NIfTI file (its header size field is neither 348 nor 540)")
    spatial = [(size, spacing) for size, spacing in zip(layout.shape[:3], layout.spacing[:3], strict=True)]
    if any(size > 1 and not (np.isfinite(spacing) and spacing > 0) for size, spacing in spatial):
        # SimpleITK would put 1 mm in place of a zero and flip the axis of a negative one, without an error
        raise InputError(f"cannot read {path}: its header gives voxel sizes (pixdim) of "
                         f"{' x '.join(f'{spacing:g}' for _, spacing in spatial)} mm; every voxel size must be "
                         "positive: the header is damaged, rewrite the file with its true voxel size")
    end = layout.offset + layout.data_bytes
    if len(content) < end:
        raise InputError(f"cannot read {path}: it is truncated, its header promises {layout.data_bytes:,} bytes of "
                         f"voxels, the file holds {max(len(content) - layout.offset, 0):,} "
                         "(an interrupted copy or write)")
    kind = NIFTI_FLOATS.get(layout.datatype)
    if kind is None:
        return
    voxels = np.frombuffer(content, dtype=layout.byte_order + kind, count=int(np.prod(layout.shape)),
                           offset=layout.offset)
    bad = np.flatnonzero(~np.isfinite(voxels))
    if bad.size:
        first = np.unravel_index(int(bad[0]), layout.shape, order="F")
        raise InputError(f"{path} has {bad.size:,} NaN or Inf voxel(s) (the first at voxel index "
                         f"{tuple(int(i) for i in first)}); SimpleITK would read them as 0: fix or mask them first")
