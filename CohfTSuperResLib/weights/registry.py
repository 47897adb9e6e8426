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
from CohfTSuperResLib.options import SCALES, VARIANTS

if TYPE_CHECKING:
    import torch

    from CohfTSuperResLib.model import CohfTNet

MODELS_ENV = "COHFT_SR_MODELS"
MANIFEST_NAME = "models.json"


def installed_folder(name: str, manifest: str, environment: str) -> Path:
    """The first folder holding `manifest` of: $environment, Resources/<name> beside the library (source tree and
    Slicer install), <prefix>/share/CohfTSuperRes/<name> (pip install); the first candidate when none has it."""
    candidates = [Path(os.environ[environment])] if os.environ.get(environment) else []
    candidates += [
        Path(__file__).resolve().parents[2] / "Resources" / name,
        Path(sys.prefix) / "share" / "CohfTSuperRes" / name,
    ]
    for folder in candidates:
        if (folder / manifest).is_file():
            return folder
    return candidates[0]


def models_dir() -> Path:
    """Folder of the shipped models: $COHFT_SR_MODELS, Resources/Models or <prefix>/share/CohfTSuperRes/Models."""
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
    unknown = [m.file for m in models if m.variant not in VARIANTS or m.scale not in SCALES]
    if unknown:
        raise WeightsError(f"the model list {manifest} names models this library cannot run: {', '.join(unknown)}")
    return models


def available_models() -> list[tuple[str, int, bool]]:
    """(variant, scale, use_t1) of every shipped model, in the manifest's order: the choices a user has."""
    return [model.key for model in shipped_models()]


def find_model(variant: str, scale: int, use_t1: bool = True) -> ShippedModel:
    """The shipped model for (variant, scale, with/without T1); WeightsError naming what exists otherwise."""
    models = shipped_models()
    for model in models:
        if (model.variant, model.scale, model.use_t1) == (variant, scale, use_t1):
            return model
    available = ", ".join(f"{m.variant} x{m.scale}{'' if m.use_t1 else ' (no T1)'}" for m in models) or "none"
    guide = "with" if use_t1 else "without"
    raise WeightsError(
        f"no shipped model for variant {variant} at scale x{scale} {guide} the T1 guide "
        f"(shipped: {available}; folder {models_dir()})"
    )
