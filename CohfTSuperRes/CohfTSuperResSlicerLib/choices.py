"""What the GUI offers and whether a choice can run, decided before Apply and without torch.

The shipped models come from the library's models.json (``weights.registry.available_models``); a
weights file of the user's is described by its own header: the network configuration that the
library stores in every .safetensors file (and in every exported .onnx file), read here as JSON
without loading the tensors. Both are read once per file version (size and modification time), not at
every GUI event.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from CohfTSuperResLib.errors import WeightsError
from CohfTSuperResLib.options import SCALES, THROUGH_PLANE_SCALE, VARIANTS, RunOptions
from CohfTSuperResLib.weights import registry as models_registry
from CohfTSuperResLib.weights.header import CONFIG_KEY, fit_problem, read_metadata, stored_config

from .text import _


@dataclass(frozen=True)
class Offer:
    """The shipped models as GUI choices: variants, in-plane scales, the scales with a no-T1 model, the modes
    (in-plane, through-plane) and the problem with the model list (None when it could be read)."""

    models: tuple[tuple[str, int, bool], ...]
    variants: tuple[str, ...]
    scales: tuple[int, ...]
    noT1Scales: tuple[int, ...]
    problem: str | None = None
    modes: tuple[str, ...] = ()

    def describe(self) -> str:
        """The shipped models in words (weights.registry.describe_models)."""
        return models_registry.describe_models(list(self.models))


def _stamp(path: Path) -> tuple[int, int] | None:
    """(size, modification time) of a file, None when it is absent: what the caches below are keyed by."""
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_size, status.st_mtime_ns


def offer() -> Offer:
    """The shipped models from models.json; an empty offer with the reason when the list is damaged."""
    manifest = models_registry.models_dir() / models_registry.MANIFEST_NAME
    return _offer(manifest, _stamp(manifest))


@functools.lru_cache(maxsize=4)
def _offer(manifest: Path, stamp: tuple[int, int] | None) -> Offer:
    del manifest, stamp  # the cache key: read again when the file changes
    try:
        models = tuple(models_registry.available_models())
    except WeightsError as error:
        return Offer((), (), (), (), str(error))
    return Offer(
        models,
        tuple(v for v in VARIANTS if any(m[0] == v for m in models)),
        tuple(s for s in SCALES if any(m[1] == s for m in models)),
        tuple(s for s in SCALES if any(m[1] == s and not m[2] for m in models)),
        modes=tuple(mode for mode, present in (("in-plane", any(m[1] in SCALES for m in models)),
                                                ("through-plane", any(m[1] == THROUGH_PLANE_SCALE for m in models)))
                    if present),
    )


@dataclass(frozen=True)
class WeightsFileInfo:
    """What a weights file's header says: its scale and whether it needs the T1 guide."""

    scale: int
    useT1: bool


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
        raise WeightsError(_("{name} is not a CohfTSuperRes ONNX model ({kind}: {error})").format(
            name=path.name, kind=type(error).__name__, error=error)) from error


def describeWeightsFile(path: str | Path) -> WeightsFileInfo | None:
    """Scale and T1 use from a .safetensors or .onnx file's header; None for an .onnx file while onnxruntime
    is missing. WeightsError with the reason when the file can not be one of this library's models."""
    path = Path(path)
    if path.suffix not in (".safetensors", ".onnx"):
        raise WeightsError(_("{name} is not a weights file: choose a .safetensors file (or .onnx for ONNX)").format(
            name=path.name))
    stamp = _stamp(path)
    if stamp is None:
        raise WeightsError(_("the weights file {path} does not exist").format(path=path))
    return _describe(path, stamp)


@functools.lru_cache(maxsize=16)
def _describe(path: Path, stamp: tuple[int, int]) -> WeightsFileInfo | None:
    del stamp  # part of the cache key: read again when the file changes
    config = stored_config(read_metadata(path), path.name) if path.suffix == ".safetensors" else _onnxConfig(path)
    if config is None:
        return None
    if not isinstance(config, dict) or not isinstance(config.get("scale"), int) or \
            not isinstance(config.get("use_t1"), bool):
        raise WeightsError(_("{name} describes no Cohf-T network scale and T1 use; it is not a weights file of this "
                             "library").format(name=path.name))
    return WeightsFileInfo(config["scale"], config["use_t1"])


def _sentence(text: str) -> str:
    return text[0].upper() + text[1:] + "."


def modelProblem(options: RunOptions, useT1: bool) -> str | None:
    """Why no model can run for these options with or without the T1 (one sentence saying what to change), or None."""
    path = options.model_path
    if path is not None:
        if path.suffix == ".onnx" and options.backend != "onnx":
            return _("{name} is an ONNX model: choose the onnx backend, or a .safetensors weights file.").format(
                name=path.name)
        try:
            info = describeWeightsFile(path)
        except WeightsError as error:
            return _sentence(str(error))
        if info is None:
            return None  # an ONNX model is described once onnxruntime is installed (before the run)
        problem = fit_problem(path.name, info.scale, info.useT1, options.network_scale, useT1)
        if problem is None:
            return None
        hint = (_("choose the through-plane mode") if info.scale == THROUGH_PLANE_SCALE != options.network_scale else
                _("choose the in-plane mode, scale {scale}").format(scale=info.scale)
                if options.network_scale == THROUGH_PLANE_SCALE != info.scale else
                _("choose scale {scale}").format(scale=info.scale) if info.scale != options.scale else
                _("tick 'Use the T1 guide'") if info.useT1 else _("untick 'Use the T1 guide'"))
        return f"{problem}: {hint}."
    shipped = offer()
    if shipped.problem:
        return _sentence(shipped.problem)
    if (options.variant, options.network_scale, useT1) in shipped.models:
        return None
    text = (_("No shipped {model} model with the T1 guide (shipped: {shipped}); change the choice or pick a weights "
              "file.") if useT1 else
            _("No shipped {model} model without the T1 guide (shipped: {shipped}); change the choice or pick a weights "
              "file."))
    return text.format(model=models_registry.model_name(options.variant, options.network_scale),
                       shipped=shipped.describe())
