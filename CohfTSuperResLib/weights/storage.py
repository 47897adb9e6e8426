"""Model weights on disk: safetensors only (no pickle), with the network config and a sha256 check."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from CohfTSuperResLib.errors import WeightsError
from CohfTSuperResLib.imageio.file_integrity import sha256_of
from CohfTSuperResLib.model import CohfTConfig, CohfTNet
from CohfTSuperResLib.weights.header import CONFIG_KEY, read_metadata, stored_config

__all__ = ["CONFIG_KEY", "WeightsError", "config_of", "load_model", "read_metadata", "save_weights", "sha256_of",
           "weights_config"]


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
    write_safetensors(tensors, temporary, header)
    temporary.replace(path)
    return sha256_of(path)


def state_dict_problem(error: BaseException) -> str:
    """What a failed load_state_dict says, in one line: torch lists every tensor that does not fit, one per line
    under a header; the first of them and a count are what a reader can use."""
    problems = [line.strip() for line in str(error).splitlines()[1:] if line.strip()] or [str(error)]
    return problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")


def config_differences(found: dict[str, Any], wanted: dict[str, Any]) -> str:
    """'NAME STORED (flags: WANTED)' for every setting in which a stored network differs from the flags' one."""
    return ", ".join(f"{name} {found.get(name)} (flags: {wanted[name]})" for name in wanted
                     if found.get(name) != wanted[name])


def write_safetensors(tensors: dict[str, torch.Tensor], path: str | Path,
                      metadata: dict[str, str] | None = None) -> None:
    """safetensors' save_file, with the permissions any new file of this process gets (save_file makes the file
    readable by its owner only, whatever the umask, which locks a shared training folder away from a team)."""
    save_file(tensors, str(path), metadata=metadata)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def config_of(metadata: dict[str, Any], name: str) -> CohfTConfig:
    """The network configuration stored in a weights (or ONNX) file's metadata; WeightsError when absent or
    impossible."""
    stored = stored_config(metadata, name)
    try:
        return CohfTConfig.from_dict(stored)
    except (TypeError, ValueError) as error:
        raise WeightsError(f"{name} describes an impossible Cohf-T network: {error}") from error


def weights_config(path: str | Path) -> CohfTConfig:
    """The network configuration of a weights file, checked as far as it can be without reading the tensors:
    WeightsError for a missing file, one that is not safetensors or is cut short, or one without a Cohf-T
    configuration (the tensors themselves are checked when ``load_model`` reads them)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"model weights not found: {path}")
    config = config_of(read_metadata(path), path.name)
    try:
        with safe_open(str(path), "pt"):  # the header's layout against the file's length
            pass
    except (SafetensorError, OSError) as error:
        raise WeightsError(f"cannot read model weights {path}: it is damaged or cut short ({error})") from error
    return config


def load_model(path: str | Path, expected_sha256: str | None = None, device: str | torch.device = "cpu") -> CohfTNet:
    """Build the network described in a weights file and load its weights (stored in float32 or float16: the shipped
    ones are float16) as float32, in eval mode.

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
    config = weights_config(path)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise WeightsError(f"cannot read model weights {path}: {error}") from error
    try:
        model = CohfTNet(config)
        model.load_state_dict({name: tensor.float() for name, tensor in state.items()}, strict=True)
    except (RuntimeError, TypeError, ValueError) as error:
        raise WeightsError(f"model weights {path.name} do not fit the Cohf-T network their header describes: "
                           f"{state_dict_problem(error)}; the file is damaged or its header was changed") from error
    broken = [name for name, tensor in state.items() if not torch.isfinite(tensor).all()]
    if broken:
        raise WeightsError(
            f"model weights {path.name} hold NaN or Inf values in {len(broken)} tensor(s) ({broken[0]}, ...): "
            "the file is damaged or the training diverged; use another weights file"
        )
    return model.to(device).eval()
