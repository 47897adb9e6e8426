"""The documents' claims point at tests that exist: every test docs/reliability.md names is defined in its file."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RELIABILITY = ROOT / "docs" / "reliability.md"


def _letters() -> dict[str, Path]:
    """The test-file letters the document defines (e.g. `V` = `Testing/test_volume_io.py`)."""
    text = RELIABILITY.read_text()
    return {letter: ROOT / path for letter, path in re.findall(r"`([A-Z])` = `(Testing/test_\w+\.py)`", text)}


def _claims() -> list[tuple[str, str]]:
    """(letter, test name) of every test cited in a table row (parametrised ids and '...' shorthands dropped)."""
    claims = []
    for row in RELIABILITY.read_text().splitlines():
        if not row.startswith("|") or row.startswith("| ---"):
            continue
        cell = row.rstrip("|").split("|")[-1]
        for part in cell.split(";"):
            match = re.match(r"\s*([A-Z])\s", part)
            if not match:
                continue
            for name in re.findall(r"`([^`]+)`", part):
                name = name.split("[")[0].strip()
                if name.startswith("test_"):
                    claims.append((match.group(1), name))
    return claims


def test_every_test_the_fault_table_names_exists() -> None:
    letters = _letters()
    claims = _claims()
    assert len(claims) > 60 and letters
    missing = [f"{letter} {name}" for letter, name in claims
               if letter not in letters or not re.search(rf"^def {name}\(", letters[letter].read_text(), re.MULTILINE)]
    assert not missing, f"docs/reliability.md names tests that do not exist: {missing}"
