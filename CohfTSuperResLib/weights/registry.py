"""The shipped models: `Resources/Models/models.json` and the safetensors files beside it.

Importing this module needs neither torch nor SimpleITK (only loading a model does), so the command
line and the 3D Slicer module can offer exactly the (variant, scale, T1) models that exist before
any heavy dependency is installed.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from CohfTSuperResLib.errors import WeightsError
from CohfTSuperResLib.options import SCALES, THROUGH_PLANE_SCALE, VARIANTS

if TYPE_CHECKING:
    import torch

    from CohfTSuperResLib.model import CohfTNet

MODELS_ENV = "COHFT_SR_MODELS"
MANIFEST_NAME = "models.json"


def installed_folder(name: str, manifest: str, environment: str) -> Path:
    """The first folder holding `manifest` of: $environment, Resources/<name> inside the library's folder (3D Slicer
    install), Resources/<name> beside it (source tree), <prefix>/share/CohfTSuperRes/<name> (pip install); the
    first candidate when none has it."""
    package = Path(__file__).resolve().parents[1]
    candidates = [Path(os.environ[environment])] if os.environ.get(environment) else []
    candidates += [
        package / "Resources" / name,
        package.parent / "Resources" / name,
        Path(sys.prefix) / "share" / "CohfTSuperRes" / name,
    ]
    for folder in candidates:
        if (folder / manifest).is_file():
            return folder
    return candidates[0]


def models_dir() -> Path:
    """Folder of the shipped models (installed_folder: $COHFT_SR_MODELS, the Slicer install, the source tree or a
    pip install)."""
    return installed_folder("Models", MANIFEST_NAME, MODELS_ENV)


@dataclass(frozen=True)
class ShippedModel:
    """One manifest entry: which network, at which scale, in which file, with which checksum."""

    variant: str
    scale: int
    use_t1: bool
    file: str
    sha256: str
    info: dict[str, Any]

    @property
    def path(self) -> Path:
        return models_dir() / self.file

    @property
    def key(self) -> tuple[str, int, bool]:
        """(variant, scale, use_t1): what a caller chooses."""
        return self.variant, self.scale, self.use_t1

    def load(self, device: str | torch.device = "cpu") -> CohfTNet:
        """Load the weights after checking their sha256."""
        from CohfTSuperResLib.weights.storage import load_model

        return load_model(self.path, self.sha256, device)


def shipped_models() -> list[ShippedModel]:
    """Every model in the manifest (empty when none is shipped); WeightsError when the manifest is damaged."""
    manifest = models_dir() / MANIFEST_NAME
    if not manifest.is_file():
        return []
    try:
        entries = json.loads(manifest.read_text())["models"]
        models = [
            ShippedModel(
                variant=str(entry["variant"]), scale=int(entry["scale"]), use_t1=bool(entry["use_t1"]),
                file=str(entry["file"]), sha256=str(entry["sha256"]), info=entry,
            )
            for entry in entries
        ]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise WeightsError(f"the model list {manifest} is damaged ({type(error).__name__}: {error}); reinstall") \
            from error
    unknown = [m.file for m in models if m.variant not in VARIANTS or m.scale not in (*SCALES, THROUGH_PLANE_SCALE)]
    if unknown:
        raise WeightsError(f"the model list {manifest} names models this library cannot run: {', '.join(unknown)}")
    return models


def model_name(variant: str, scale: int) -> str:
    """'S x2' for an in-plane model, 'S through-plane' for the through-plane one (network scale 1)."""
    return f"{variant} through-plane" if scale == THROUGH_PLANE_SCALE else f"{variant} x{scale}"


def describe_models(keys: list[tuple[str, int, bool]]) -> str:
    """Models in words, those with the T1 guide first: e.g. 'S x2, S x4 (with T1); S x4 (without T1)', or 'none'."""
    parts = [f"{', '.join(model_name(v, s) for v, s, t1 in keys if t1 == guided)} "
             f"({'with' if guided else 'without'} T1)"
             for guided in (True, False) if any(t1 == guided for _v, _s, t1 in keys)]
    return "; ".join(parts) or "none"


def available_models() -> list[tuple[str, int, bool]]:
    """(variant, scale, use_t1) of every shipped model, in the manifest's order: the choices a user has."""
    return [model.key for model in shipped_models()]


def find_model(variant: str, scale: int, use_t1: bool = True) -> ShippedModel:
    """The shipped model for (variant, scale, with/without T1); WeightsError naming what exists otherwise."""
    models = shipped_models()
    for model in models:
        if (model.variant, model.scale, model.use_t1) == (variant, scale, use_t1):
            return model
    guide = "with" if use_t1 else "without"
    raise WeightsError(
        f"no shipped {model_name(variant, scale)} model {guide} the T1 guide "
        f"(shipped: {describe_models([m.key for m in models])}; folder {models_dir()})"
    )
