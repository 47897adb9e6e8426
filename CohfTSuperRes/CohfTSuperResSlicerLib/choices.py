"""What the GUI offers and whether a choice can run, decided before Apply and without torch.

The shipped models come from the library's models.json (``models_registry.available_models``); a
weights file of the user's is described by its own header: the network configuration that the
library stores in every .safetensors file (and in every exported .onnx file), read here as JSON
without loading the tensors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from CohfTSuperResLib.weights import registry as models_registry
from CohfTSuperResLib.errors import WeightsError
from CohfTSuperResLib.options import SCALES, VARIANTS
from CohfTSuperResLib.weights.header import CONFIG_KEY, read_metadata, stored_config


@dataclass(frozen=True)
class Offer:
    """The shipped models as GUI choices: variants, scales, the scales with a no-T1 model, and the
    problem with the model list (None when it could be read)."""

    models: tuple[tuple[str, int, bool], ...]
    variants: tuple[str, ...]
    scales: tuple[int, ...]
    noT1Scales: tuple[int, ...]
    problem: str | None = None

    def describe(self) -> str:
        """The shipped models in words, e.g. 'S x2, S x3, S x4 (with T1); S x4 (without T1)'."""
        withT1 = [f"{v} x{s}" for v, s, t1 in self.models if t1]
        withoutT1 = [f"{v} x{s}" for v, s, t1 in self.models if not t1]
        parts = [f"{', '.join(withT1)} (with T1)"] if withT1 else []
        parts += [f"{', '.join(withoutT1)} (without T1)"] if withoutT1 else []
        return "; ".join(parts) or "none"


def offer() -> Offer:
    """The shipped models from models.json; an empty offer with the reason when the list is damaged."""
    try:
        models = tuple(models_registry.available_models())
    except WeightsError as error:
        return Offer((), (), (), (), str(error))
    return Offer(
        models,
        tuple(v for v in VARIANTS if any(m[0] == v for m in models)),
        tuple(s for s in SCALES if any(m[1] == s for m in models)),
        tuple(s for s in SCALES if any(m[1] == s and not m[2] for m in models)),
    )


@dataclass(frozen=True)
class WeightsFileInfo:
    """What a weights file's header says: its scale and whether it needs the T1 guide."""

    scale: int
    useT1: bool


def _safetensorsConfig(path: Path) -> dict:
    return stored_config(read_metadata(path), path.name)


def _onnxConfig(path: Path) -> dict | None:
    """The configuration stored in an exported ONNX model, or None when onnxruntime is not installed yet."""
    try:
        import onnxruntime
    except ImportError:
        return None
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return json.loads(session.get_modelmeta().custom_metadata_map[CONFIG_KEY])
    except Exception as error:  # onnxruntime raises its own exception types for unreadable models
        raise WeightsError(f"{path.name} is not a CohfTSuperRes ONNX model ({type(error).__name__}: {error})") \
            from error


def describeWeightsFile(path: str | Path) -> WeightsFileInfo | None:
    """Scale and T1 use from a .safetensors or .onnx file's header; None for an .onnx file while onnxruntime
    is missing. WeightsError with the reason when the file can not be one of this library's models."""
    path = Path(path)
    if path.suffix not in (".safetensors", ".onnx"):
        raise WeightsError(f"{path.name} is not a weights file: choose a .safetensors file (or .onnx for ONNX)")
    if not path.is_file():
        raise WeightsError(f"the weights file {path} does not exist")
    config = _safetensorsConfig(path) if path.suffix == ".safetensors" else _onnxConfig(path)
    if config is None:
        return None
    if not isinstance(config, dict) or not isinstance(config.get("scale"), int) or \
            not isinstance(config.get("use_t1"), bool):
        raise WeightsError(f"{path.name} describes no Cohf-T network scale and T1 use; it is not a weights file of "
                           "this library")
    return WeightsFileInfo(config["scale"], config["use_t1"])


def isUserModel(modelPath) -> bool:
    """True when a weights file was chosen (an empty path or '.', as an empty path field gives, means none)."""
    return modelPath is not None and str(modelPath) not in ("", ".")


def modelProblem(variant: str, scale: int, useT1: bool, modelPath=None, backend: str = "torch") -> str | None:
    """Why no model can run for this choice (one sentence saying what to change), or None when one can."""
    if isUserModel(modelPath):
        path = Path(modelPath)
        if path.suffix == ".onnx" and backend != "onnx":
            return f"{path.name} is an ONNX model: choose the onnx backend, or a .safetensors weights file."
        try:
            info = describeWeightsFile(path)
        except WeightsError as error:
            return str(error)[0].upper() + str(error)[1:] + "."
        if info is None:
            return None  # an ONNX model is described once onnxruntime is installed (before the run)
        if info.scale != scale:
            return f"{path.name} super-resolves x{info.scale}: choose scale {info.scale}."
        if info.useT1 != useT1:
            return (f"{path.name} needs the T1 guide: tick 'Use the T1 guide'." if info.useT1 else
                    f"{path.name} was trained without a T1: untick 'Use the T1 guide'.")
        return None
    shipped = offer()
    if shipped.problem:
        return shipped.problem[0].upper() + shipped.problem[1:] + "."
    if (variant, scale, useT1) in shipped.models:
        return None
    guide = "with" if useT1 else "without"
    return (f"No shipped model for variant {variant} at x{scale} {guide} the T1 guide (shipped: {shipped.describe()}); "
            "change the choice or pick a weights file.")
