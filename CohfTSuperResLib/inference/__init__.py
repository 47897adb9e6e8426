"""Inference: the engine behind ``super_resolve`` and what it needs (input checks, geometry, batching, backends).

``from CohfTSuperResLib.inference import super_resolve`` is the public entry point; it is loaded on first use,
so importing a torch-free module of this package (``input_checks``, ``onnx_cache``) does not import torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["super_resolve", "super_resolve_checked"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from CohfTSuperResLib.inference import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
