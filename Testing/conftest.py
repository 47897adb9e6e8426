"""Shared pytest fixtures: location of the real MR data and real-slice loaders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

OPEN_MS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "open_ms"


@pytest.fixture(scope="session")
def open_ms() -> Path:
    """Root of the shared open_ms data; skips the test where it is absent."""
    if not OPEN_MS.is_dir():
        pytest.skip(f"real MR data not found at {OPEN_MS}")
    return OPEN_MS


@pytest.fixture(scope="session")
def mni_slices(open_ms: Path) -> dict[str, np.ndarray]:
    """Axial slice 90 of mni/patient07 T1 and T2 (218 rows x 182 columns, float32, raw units)."""
    import SimpleITK as sitk

    out = {}
    for name in ("t1", "t2"):
        volume = sitk.GetArrayFromImage(sitk.ReadImage(str(open_ms / "mni" / "patient07" / f"{name}.nii.gz")))
        out[name] = np.ascontiguousarray(volume[90].astype(np.float32))
    return out
