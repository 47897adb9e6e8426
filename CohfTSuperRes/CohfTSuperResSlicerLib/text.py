"""Slicer's translation functions for the module's user-facing strings (identity where Slicer has none): `_` in the
module's own context, `translate` in another (e.g. Slicer's module categories)."""

from __future__ import annotations

try:
    from slicer.i18n import tr as _
    from slicer.i18n import translate
except ImportError:  # slicer-core, used by the tests, has no translation support

    def _(text: str) -> str:
        return text

    def translate(context: str, text: str) -> str:
        return text


__all__ = ["_", "translate"]
