"""The header of a safetensors weights file, read without torch or the safetensors package, and whether the model
it describes fits a request.

A safetensors file starts with the length of its JSON header (8 bytes, little endian) and the header,
whose ``__metadata__`` holds this library's strings: the network configuration under ``CONFIG_KEY``
and the training facts, each JSON-encoded. Reading it needs only the standard library, so the 3D
Slicer module can describe a user's weights file before any dependency is installed.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from CohfTSuperResLib.errors import WeightsError
from CohfTSuperResLib.options import THROUGH_PLANE_SCALE

CONFIG_KEY = "cohft_config"
MAX_HEADER_BYTES = 100 * 2**20


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The header metadata of a safetensors file, each value JSON-decoded where it is JSON (raw text otherwise);
    WeightsError when the file is missing or not safetensors."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            start = handle.read(8)
            if len(start) < 8:
                raise WeightsError(f"cannot read model weights {path}: not a safetensors file ({len(start)} bytes)")
            (length,) = struct.unpack("<Q", start)
            if not 2 <= length <= MAX_HEADER_BYTES:
                raise WeightsError(f"cannot read model weights {path}: not a safetensors file (header length {length})")
            header = handle.read(length)
    except OSError as error:
        raise WeightsError(f"cannot read model weights {path}: {error.strerror or error}") from error
    try:
        metadata = json.loads(header).get("__metadata__") or {}
    except (ValueError, AttributeError) as error:
        raise WeightsError(f"cannot read model weights {path}: its safetensors header is not JSON") from error
    return {key: _json_or_text(value) for key, value in metadata.items()}


def _json_or_text(value: str) -> Any:
    """A header value as this library writes it (JSON), or the raw text other writers store."""
    try:
        return json.loads(value)
    except (json.JSONDecodeError, TypeError):
        return value


def stored_config(metadata: dict[str, Any], name: str) -> dict[str, Any]:
    """The network configuration dict in a file's metadata; WeightsError when there is none or it is not JSON."""
    if CONFIG_KEY not in metadata:
        raise WeightsError(f"{name} holds no Cohf-T configuration; it is not a CohfTSuperRes weights file")
    if isinstance(metadata[CONFIG_KEY], str):
        raise WeightsError(f"{name} has a Cohf-T configuration that is not CohfTSuperRes metadata (not JSON)")
    return metadata[CONFIG_KEY]


def fit_problem(name: str, model_scale: int, model_use_t1: bool, scale: int, use_t1: bool) -> str | None:
    """Why the model `name` (of model_scale, trained with or without the T1) can not serve a run at `scale` (the network
    scale: THROUGH_PLANE_SCALE for a through-plane run) with or without a T1, or None: the one rule the engine and
    the Slicer module apply."""
    if model_scale != scale:
        def task(factor: int) -> str:
            return "through-plane" if factor == THROUGH_PLANE_SCALE else f"in-plane x{factor}"

        return f"{name} is the {task(model_scale)} model, but {task(scale)} super-resolution was asked for"
    if model_use_t1 and not use_t1:
        return f"{name} needs the registered HR T1 guide; none was given"
    if not model_use_t1 and use_t1:
        return f"{name} was trained without a T1 guide: run it without the T1"
    return None
