"""A synthetic brain phantom (T1 and T2 on one HR grid), generated in code for the demo.

Axial slices of an ellipsoidal brain with a folded cortex (grey matter with
CSF-filled sulci around white matter), a thin CSF shell, two lateral
ventricles, deep grey nuclei and a few white-matter lesions (as in multiple
sclerosis). Tissue intensities follow the usual contrasts: T2 CSF bright, GM
mid, WM dark, lesions bright; T1 the reverse (lesions dark). Labels are blurred
slightly in-plane (partial volume) and modulated by a random texture, smooth
in-plane; any number of slices works. Background is exactly 0 (skull-stripped).
Deterministic for a given seed. Part of this project (Apache-2.0); no data from
outside the project is used.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

# (T2, T1) intensity of each tissue, arbitrary units
TISSUES = {"csf": (1.0, 0.15), "gm": (0.55, 0.5), "wm": (0.32, 0.8), "lesion": (0.85, 0.35)}
PARTIAL_VOLUME_SIGMA = 0.6  # voxels
TEXTURE_AMPLITUDE = 0.06


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 < 1


def _labels(x: np.ndarray, y: np.ndarray, z: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Boolean maps of each tissue in one axial slice at height z in [-1, 1]."""
    height_scale = np.sqrt(max(1 - z * z, 0.05))
    theta, rho = np.arctan2(y, x), np.hypot(x / 0.78, y / 0.92) / height_scale
    fold = 0.5 * np.sin(9 * theta + 3 * z) + 0.3 * np.sin(14 * theta - 2 * z + 1) + 0.2 * np.sin(23 * theta + 0.5)
    brain = rho < 1
    shell = (rho >= 1) & (rho < 1.05)
    sulci = brain & (rho > 0.8) & (np.abs(fold - 0.55) < 0.08)
    white = brain & (rho < 0.72 + 0.1 * fold)
    ventricles = _ellipse(x, y, -0.12, 0.0, 0.07, 0.3 * height_scale)
    ventricles |= _ellipse(x, y, 0.12, 0.0, 0.07, 0.3 * height_scale)
    nuclei = _ellipse(x, y, -0.3, 0.1, 0.09, 0.14) | _ellipse(x, y, 0.3, 0.1, 0.09, 0.14)
    lesions = np.zeros_like(brain)
    for cx, cy, r in rng.uniform((-0.45, -0.5, 0.02), (0.45, 0.5, 0.05), size=(5, 3)):
        lesions |= _ellipse(x, y, cx, cy, r, 1.4 * r)
    wm = white & ~ventricles & ~nuclei & ~lesions
    return {
        "csf": shell | sulci | (ventricles & white),
        "gm": brain & ~white & ~sulci | (nuclei & white),
        "wm": wm,
        "lesion": lesions & white & ~ventricles & ~nuclei,
    }


def brain_phantom(
    size: int = 192, slices: int = 12, spacing: float = 1.0, seed: int = 0
) -> tuple[sitk.Image, sitk.Image]:
    """(T2, T1) float32 volumes of size x size x slices voxels (axial slices along axis 2), intensities ~[0, 1]."""
    rng = np.random.default_rng(seed)
    axis = (np.arange(size) - (size - 1) / 2) / (size / 2)
    y, x = np.meshgrid(axis, axis, indexing="ij")
    t2 = np.zeros((slices, size, size), dtype=np.float32)
    t1 = np.zeros_like(t2)
    for k, z in enumerate(np.linspace(-0.5, 0.5, slices)):
        for tissue, mask in _labels(x, y, float(z), np.random.default_rng(seed + 1)).items():
            t2[k][mask], t1[k][mask] = TISSUES[tissue]
    texture = 1 + TEXTURE_AMPLITUDE * _smooth_noise(t2.shape, rng)
    return tuple(_to_image(_blur(volume) * texture * (volume > 0), spacing) for volume in (t2, t1))


def _smooth_in_plane(volume: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing of each (slice, row, column) slice in-plane, so any number of slices works."""
    return np.stack([
        sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(sitk.GetImageFromArray(plane), sigma))
        for plane in volume
    ])


def _smooth_noise(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-ish random field, smooth within each slice."""
    smooth = _smooth_in_plane(rng.standard_normal(shape).astype(np.float32), 3.0)
    return smooth / (smooth.std() + 1e-8)


def _blur(volume: np.ndarray) -> np.ndarray:
    """In-plane Gaussian partial-volume blur."""
    return _smooth_in_plane(volume, PARTIAL_VOLUME_SIGMA)


def _to_image(volume: np.ndarray, spacing: float) -> sitk.Image:
    image = sitk.GetImageFromArray(volume.astype(np.float32))
    image.SetSpacing((spacing, spacing, spacing))
    return image
