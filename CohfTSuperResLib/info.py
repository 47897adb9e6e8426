"""What `cohft-sr info` reports: shipped models, devices, backends and package versions."""

from __future__ import annotations

import importlib.metadata

from CohfTSuperResLib import __version__
from CohfTSuperResLib.options import THROUGH_PLANE_FACTORS
from CohfTSuperResLib.weights.registry import SUPER_RESOLUTION, describe_models, models_dir, shipped_models

PACKAGES = ("torch", "numpy", "SimpleITK", "safetensors", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxscript")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _factors(factors: tuple[int, ...]) -> str:
    """'; thick-slice factors 4' for a through-plane network of some factors only, '' otherwise."""
    return f"; thick-slice factors {', '.join(map(str, factors))}" if factors and factors != THROUGH_PLANE_FACTORS \
        else ""


def _role(role: str) -> str:
    """'; used by the guide check' for a model of the guide check, '' for a super-resolution one."""
    return "" if role == SUPER_RESOLUTION else f"; used by the {role.replace('-', ' ')}"


def info_lines() -> list[str]:
    """Human-readable report, one fact a line."""
    from CohfTSuperResLib.inference.devices import device_summary  # imports torch

    lines = [f"CohfTSuperResLib {__version__}", f"models folder: {models_dir()}"]
    models = shipped_models()
    lines.append(f"  shipped: {describe_models([m.key for m in models if m.role == SUPER_RESOLUTION])}")
    lines += [f"  {m.file} (sha256 {m.sha256[:12]}{_factors(m.factors)}{_role(m.role)})" for m in models] \
        or ["  pass --model PATH to run / demo"]
    lines.append("devices:")
    lines += [f"  {line}" for line in device_summary()]
    lines.append("backends:")
    lines.append("  torch: fp32, bf16, fp16 (autocast)")
    try:
        import onnxruntime

        lines.append(f"  onnx: onnxruntime providers {', '.join(onnxruntime.get_available_providers())}")
    except ImportError:
        lines.append("  onnx: not installed (pip install 'CohfTSuperResLib[onnx]')")
    lines.append("versions:")
    lines += [f"  {name} {version}" for name in PACKAGES if (version := _version(name)) is not None]
    return lines
