"""Where ONNX exports of weights files are kept, and how a cached export is trusted (no torch, no onnx needed).

An export of a weights file is cached as ``<cache>/onnx/<sha256 of the weights>-<graph code>.onnx``
(the graph code: a digest of the library sources that define the exported graph, so a new release
of the network code exports again instead of running an old graph) with the sha256 of the ONNX
file itself beside it (``.onnx.sha256``), written after a complete export. A
cached file whose digest is missing or differs (damaged, replaced, half written) is not used: it is
exported again. ``$COHFT_SR_CACHE`` moves the cache (default ``~/.cache/CohfTSuperRes``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from CohfTSuperResLib.imageio.file_integrity import sha256_of

CACHE_ENV = "COHFT_SR_CACHE"
RUNTIME_PACKAGES = ("onnxruntime",)  # what running an .onnx model needs
EXPORT_PACKAGES = ("onnx", "onnxscript")  # what exporting one needs besides torch
GRAPH_SOURCES = ("model/*.py", "inference/onnx_export.py", "inference/batching.py")  # what shapes the graph


def cache_dir() -> Path:
    """Folder for ONNX files exported from weights files: $COHFT_SR_CACHE/onnx, else ~/.cache/CohfTSuperRes/onnx."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "CohfTSuperRes") / "onnx"


def graph_code_digest() -> str:
    """First 16 hex digits of the sha256 of the sources that shape the exported graph (GRAPH_SOURCES)."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for pattern in GRAPH_SOURCES:
        for source in sorted(package.glob(pattern)):
            digest.update(source.name.encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()[:16]


def cached_path(weights_sha256: str) -> Path:
    """Where the export of the weights with this sha256 by this version of the network code lives."""
    return cache_dir() / f"{weights_sha256}-{graph_code_digest()}.onnx"


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def record(path: Path) -> None:
    """Write the digest of a complete export beside it."""
    _digest_path(path).write_text(sha256_of(path) + "\n")


def is_trusted(path: Path) -> bool:
    """True when the cached export exists and matches the digest recorded when it was written."""
    digest = _digest_path(path)
    if not (path.is_file() and digest.is_file()):
        return False
    return digest.read_text().strip() == sha256_of(path)
