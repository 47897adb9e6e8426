"""Training checkpoints without pickle: safetensors for tensors (model, Adam state, torch RNG) + JSON for the rest.

A checkpoint is a folder holding ``model.safetensors``, ``optimizer.safetensors`` and ``state.json``;
it is written to a temporary sibling folder and renamed into place, so a crash never leaves a
half-written checkpoint behind.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file


def snapshot_path(run: str | Path, iteration: int) -> Path:
    """Where ``cohft-sr train --keep-snapshots`` keeps the weights of the run's checkpoint at `iteration`."""
    return Path(run) / "snapshots" / f"it{iteration:06d}.safetensors"


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def save_checkpoint(folder: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    state: dict[str, Any]) -> Path:
    """Write model, optimizer and `state` (JSON-able: iteration, best metric, ...) plus the torch RNG state."""
    folder = Path(folder)
    temporary = folder.with_name(folder.name + ".partial")
    if temporary.exists():
        shutil.rmtree(temporary)
    temporary.mkdir(parents=True)
    model_state = {name: value.detach().cpu().contiguous() for name, value in model.state_dict().items()}
    save_file(model_state, str(temporary / "model.safetensors"))
    tensors, meta = _optimizer_tensors(optimizer)
    tensors["__torch_rng__"] = torch.get_rng_state()
    save_file(tensors, str(temporary / "optimizer.safetensors"))
    (temporary / "state.json").write_text(json.dumps({**state, "optimizer": meta}, indent=1))
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        if old.exists():
            shutil.rmtree(old)
        folder.rename(old)
    temporary.rename(folder)
    if old.exists():
        shutil.rmtree(old)
    return folder


def load_checkpoint(folder: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore model, optimizer and torch RNG from a checkpoint folder; return its state dict."""
    folder = Path(folder)
    if not (folder / "state.json").is_file():
        raise FileNotFoundError(f"no checkpoint in {folder}")
    state = json.loads((folder / "state.json").read_text())
    device = next(model.parameters()).device
    model.load_state_dict({k: v.to(device) for k, v in load_file(str(folder / "model.safetensors")).items()})
    tensors = load_file(str(folder / "optimizer.safetensors"))
    torch.set_rng_state(tensors.pop("__torch_rng__"))
    meta = state.pop("optimizer")
    per_param: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        # Adam keeps `step` on the CPU; moments live with the parameters.
        per_param.setdefault(int(index), {})[key] = value if key == "step" else value.to(device)
    for name, value in meta["scalars"].items():
        index, key = name.split(".", 1)
        per_param.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": per_param, "param_groups": meta["param_groups"]})
    return state
