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

from CohfTSuperResLib.errors import ModelNotShipped, WeightsError
from CohfTSuperResLib.options import SCALES, THROUGH_PLANE_FACTORS, THROUGH_PLANE_SCALE, VARIANTS

if TYPE_CHECKING:
    import torch

    from CohfTSuperResLib.model import CohfTNet

MODELS_ENV = "COHFT_SR_MODELS"
MANIFEST_NAME = "models.json"
SUPER_RESOLUTION = "super-resolution"  # a model the user's runs use
GUIDE_CHECK = "guide-check"  # a frozen copy the reduced-input proxy runs (inference/guide_check.py), never the user's
ROLES = (SUPER_RESOLUTION, GUIDE_CHECK)


def installed_folder(name: str, manifest: str, environment: str) -> Path:
    """$environment where it is set (the user's choice, used even when it lacks `manifest`, so that a mistyped folder
    is reported rather than passed over); else the first folder holding `manifest` of: Resources/<name> inside the
    library's folder (3D Slicer install), Resources/<name> beside it (source tree),
    <prefix>/share/CohfTSuperRes/<name> (pip install); the first of these when none has it."""
    if os.environ.get(environment):
        return Path(os.environ[environment])
    package = Path(__file__).resolve().parents[1]
    candidates = [
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
    """One manifest entry: which network, at which scale, in which file, with which checksum. factors: the thick-slice
    factors a through-plane network was trained for (its entry's "factors"; all of THROUGH_PLANE_FACTORS when the
    entry names none), () for an in-plane one. role (its entry's "role", SUPER_RESOLUTION when it names none):
    GUIDE_CHECK for the pair of the guide check's reduced-input proxy (the through-plane check's in-plane part), kept
    apart so that shipping better super-resolution models leaves that calibration as it was."""

    variant: str
    scale: int
    use_t1: bool
    file: str
    sha256: str
    info: dict[str, Any]
    factors: tuple[int, ...] = ()
    role: str = SUPER_RESOLUTION

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
                factors=tuple(int(f) for f in entry.get("factors", THROUGH_PLANE_FACTORS))
                if int(entry["scale"]) == THROUGH_PLANE_SCALE else (),
                role=str(entry.get("role", SUPER_RESOLUTION)),
            )
            for entry in entries
        ]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise WeightsError(f"the model list {manifest} is damaged ({type(error).__name__}: {error}); reinstall") \
            from error
    unknown = [m.file for m in models if m.variant not in VARIANTS or m.scale not in (*SCALES, THROUGH_PLANE_SCALE)
               or not set(m.factors) <= set(THROUGH_PLANE_FACTORS)
               or (m.scale == THROUGH_PLANE_SCALE and not m.factors) or m.role not in ROLES]
    if unknown:
        raise WeightsError(f"the model list {manifest} names models this library cannot run: {', '.join(unknown)}")
    return models


def model_name(variant: str, scale: int) -> str:
    """'S x2' for an in-plane model, 'S through-plane' for the through-plane one (network scale 1)."""
    return f"{variant} through-plane" if scale == THROUGH_PLANE_SCALE else f"{variant} x{scale}"


def describe_models(keys: list[tuple[str, int, bool]]) -> str:
    """Models in words, those with the T1 guide first: e.g. 'S x2, S x4 (with T1); S x4 (without T1)', or 'none'."""
    keys = list(dict.fromkeys(keys))  # a through-plane model per factor is one choice
    parts = [f"{', '.join(model_name(v, s) for v, s, t1 in keys if t1 == guided)} "
             f"({'with' if guided else 'without'} T1)"
             for guided in (True, False) if any(t1 == guided for _v, _s, t1 in keys)]
    return "; ".join(parts) or "none"


def super_resolution_models() -> list[ShippedModel]:
    """The shipped models a user's run may use (role SUPER_RESOLUTION), in the manifest's order."""
    return [model for model in shipped_models() if model.role == SUPER_RESOLUTION]


def available_models() -> list[tuple[str, int, bool]]:
    """(variant, scale, use_t1) of the shipped super-resolution models, each once, in the manifest's order: the
    choices a user has (the through-plane network of each factor is chosen by the run, not the user)."""
    return list(dict.fromkeys(model.key for model in super_resolution_models()))


def find_model(variant: str, scale: int, use_t1: bool = True, factor: int | None = None,
               role: str = SUPER_RESOLUTION) -> ShippedModel:
    """The shipped model for (variant, scale, with/without T1) in `role`; WeightsError naming what exists otherwise.

    factor (through-plane only): the thick-slice factor the network will run at. Of the through-plane models that
    were trained for it, the one trained for the fewest factors (a network of that factor alone before the one of
    every factor); without a factor, the one trained for the most."""
    models = [model for model in shipped_models() if model.role == role]
    fitting = [model for model in models if (model.variant, model.scale, model.use_t1) == (variant, scale, use_t1)
               and (factor is None or factor in model.factors)]
    if fitting:
        return min(fitting, key=lambda model: len(model.factors) if factor is not None else -len(model.factors))
    guide = "with" if use_t1 else "without"
    kind = model_name(variant, scale) + ("" if factor is None else f" x{factor}")
    purpose = "" if role == SUPER_RESOLUTION else f" for the {role.replace('-', ' ')}"
    raise ModelNotShipped(
        f"no shipped {kind} model{purpose} {guide} the T1 guide "
        f"(shipped: {describe_models([m.key for m in models])}; folder {models_dir()})"
    )
