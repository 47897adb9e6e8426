"""Model weights on disk: safetensors only (no pickle), with the network config and a sha256 check."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from .errors import WeightsError
from .model import CohfTConfig, CohfTNet

__all__ = ["CONFIG_KEY", "WeightsError", "config_of", "load_model", "read_metadata", "save_weights", "sha256_of"]

CONFIG_KEY = "cohft_config"


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_weights(
    model: CohfTNet, path: str | Path, metadata: dict[str, Any] | None = None, dtype: torch.dtype = torch.float32
) -> str:
    """Write the model's state as safetensors (config in the header metadata); return the file's sha256."""
    header = {CONFIG_KEY: json.dumps(model.config.to_dict())}
    header.update({key: json.dumps(value) for key, value in (metadata or {}).items()})
    tensors = {name: value.detach().to("cpu", dtype).contiguous() for name, value in model.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".partial")
    save_file(tensors, str(temporary), metadata=header)
    temporary.replace(path)
    return sha256_of(path)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON metadata stored in a weights file's header (config and anything saved with it)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise WeightsError(f"cannot read model weights {path}: {error}") from error
    return {key: _json_or_text(value) for key, value in raw.items()}


def _json_or_text(value: str) -> Any:
    """A header value as this library writes it (JSON), or the raw text other writers store."""
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def config_of(metadata: dict[str, Any], name: str) -> CohfTConfig:
    """The network configuration stored in a weights (or ONNX) file's metadata; WeightsError when absent or impossible."""
    if CONFIG_KEY not in metadata:
        raise WeightsError(f"{name} holds no Cohf-T configuration; it is not a CohfTSuperRes weights file")
    if isinstance(metadata[CONFIG_KEY], str):
        raise WeightsError(f"{name} has a Cohf-T configuration that is not CohfTSuperRes metadata (not JSON)")
    try:
        return CohfTConfig.from_dict(metadata[CONFIG_KEY])
    except (TypeError, ValueError) as error:
        raise WeightsError(f"{name} describes an impossible Cohf-T network: {error}") from error


def load_model(path: str | Path, expected_sha256: str | None = None, device: str | torch.device = "cpu") -> CohfTNet:
    """Build the network described in a weights file and load its float32 weights, in eval mode.

    Raises WeightsError for a missing file, a sha256 that differs from the expected
    one, a file that is not valid safetensors, or tensors that do not fit the config.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"model weights not found: {path}")
    if expected_sha256 is not None:
        actual = sha256_of(path)
        if actual != expected_sha256:
            raise WeightsError(
                f"model weights {path.name} fail their checksum (sha256 {actual[:12]}..., expected "
                f"{expected_sha256[:12]}...): the file is corrupt or was changed; reinstall it"
            )
    config = config_of(read_metadata(path), path.name)
    try:
        model = CohfTNet(config)
        state = load_file(str(path))
        model.load_state_dict({name: tensor.float() for name, tensor in state.items()}, strict=True)
    except (SafetensorError, RuntimeError, TypeError, ValueError) as error:
        raise WeightsError(f"model weights {path.name} do not fit the Cohf-T network: {error}") from error
    broken = [name for name, tensor in state.items() if not torch.isfinite(tensor).all()]
    if broken:
        raise WeightsError(
            f"model weights {path.name} hold NaN or Inf values in {len(broken)} tensor(s) ({broken[0]}, ...): "
            "the file is damaged or the training diverged; use another weights file"
        )
    return model.to(device).eval()
