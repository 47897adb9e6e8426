"""Errors the library raises on purpose; each message says what is wrong and what to do."""

from __future__ import annotations

from .weights import WeightsError

__all__ = ["InferenceCancelled", "InputError", "WeightsError"]


class InputError(ValueError):
    """An input image, volume, path or option that cannot be processed as given."""


class InferenceCancelled(RuntimeError):
    """The caller asked to stop; nothing was written."""
