"""Slicer's translation function for the module's user-facing strings (identity where Slicer has none)."""

from __future__ import annotations

try:
    from slicer.i18n import tr as _
except ImportError:  # slicer-core, used by the tests, has no translation support

    def _(text: str) -> str:
        return text


__all__ = ["_"]
