"""Training checkpoints without pickle: safetensors for tensors (model, Adam state, torch RNG) + JSON for the rest.

A checkpoint is a folder holding ``model.safetensors``, ``optimizer.safetensors`` and ``state.json`` (with the
network's configuration and the optimiser's kind, compared with the run's on resuming); it is written to a
temporary sibling folder and renamed into place, so a crash never leaves a half-written checkpoint behind (a crash
between the two renames leaves the previous one as ``checkpoint.old``, which resuming then reads).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from CohfTSuperResLib.errors import InputError
from CohfTSuperResLib.weights.storage import config_differences, state_dict_problem, write_safetensors


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
    write_safetensors(model_state, temporary / "model.safetensors")
    tensors, meta = _optimizer_tensors(optimizer)
    tensors["__torch_rng__"] = torch.get_rng_state()
    write_safetensors(tensors, temporary / "optimizer.safetensors")
    network = {"network": model.config.to_dict()} if hasattr(model, "config") else {}
    (temporary / "state.json").write_text(json.dumps({**state, **network, "optimizer_kind": type(optimizer).__name__,
                                                      "optimizer": meta}, indent=1))
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        if old.exists():
            shutil.rmtree(old)
        folder.rename(old)
    temporary.rename(folder)
    if old.exists():
        shutil.rmtree(old)
    return folder


def checkpoint_folder(folder: str | Path) -> Path | None:
    """The checkpoint to resume from: `folder`, or the previous one left as FOLDER.old by a crash between the two
    renames of save_checkpoint; None when there is neither."""
    folder = Path(folder)
    for candidate in (folder, folder.with_name(folder.name + ".old")):
        if (candidate / "state.json").is_file():
            return candidate
    return None


def load_checkpoint(folder: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore model, optimizer and torch RNG from a checkpoint folder (checkpoint_folder); return its state dict.
    InputError when there is none, when it is damaged, or when it holds another network or optimiser than the
    run's."""
    found = checkpoint_folder(folder)
    if found is None:
        raise InputError(f"no checkpoint in {folder} to resume from: start without --resume")
    try:
        state = json.loads((found / "state.json").read_text())
        network, kind = state.pop("network", None), state.pop("optimizer_kind", None)
        if network is not None and hasattr(model, "config") and network != model.config.to_dict():
            raise InputError(f"the checkpoint in {found} holds another network than the flags describe: "
                             f"{config_differences(network, model.config.to_dict())}; resume with the run's own "
                             "flags")
        if kind is not None and kind != type(optimizer).__name__:
            raise InputError(f"the checkpoint in {found} was trained with {kind}, the flags ask for "
                             f"{type(optimizer).__name__}; resume with the run's own --optimizer")
        device = next(model.parameters()).device
        model.load_state_dict({k: v.to(device) for k, v in load_file(str(found / "model.safetensors")).items()})
        tensors = load_file(str(found / "optimizer.safetensors"))
    except InputError:
        raise
    except (OSError, ValueError, KeyError, SafetensorError) as error:  # JSON errors are ValueErrors
        raise InputError(f"the checkpoint in {found} can not be resumed ({type(error).__name__}: {error}); it is "
                         "damaged or holds another network than the flags describe") from error
    except RuntimeError as error:  # a checkpoint without a recorded configuration: the tensors do not fit
        raise InputError(f"the checkpoint in {found} holds another network than the flags describe "
                         f"({state_dict_problem(error)}); resume with the run's own flags") from error
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

