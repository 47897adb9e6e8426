"""The shipped models: `Resources/Models/models.json` and the safetensors files beside it."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .model import CohfTNet
from .weights import WeightsError, load_model

MODELS_ENV = "COHFT_SR_MODELS"
MANIFEST_NAME = "models.json"


def models_dir() -> Path:
    """Folder of the shipped models: $COHFT_SR_MODELS, else Resources/Models beside the
    library (source tree and Slicer install), else <prefix>/share/CohfTSuperRes/Models (pip install)."""
    candidates = [Path(os.environ[MODELS_ENV])] if os.environ.get(MODELS_ENV) else []
    candidates += [
        Path(__file__).resolve().parent.parent / "Resources" / "Models",
        Path(sys.prefix) / "share" / "CohfTSuperRes" / "Models",
    ]
    for folder in candidates:
        if (folder / MANIFEST_NAME).is_file():
            return folder
    return candidates[0]


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

    def load(self, device: str | torch.device = "cpu") -> CohfTNet:
        """Load the weights after checking their sha256."""
        return load_model(self.path, self.sha256, device)


def shipped_models() -> list[ShippedModel]:
    """Every model in the manifest (empty when none is shipped)."""
    manifest = models_dir() / MANIFEST_NAME
    if not manifest.is_file():
        return []
    entries = json.loads(manifest.read_text())["models"]
    return [
        ShippedModel(
            variant=entry["variant"], scale=int(entry["scale"]), use_t1=bool(entry["use_t1"]),
            file=entry["file"], sha256=entry["sha256"], info=entry,
        )
        for entry in entries
    ]


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
