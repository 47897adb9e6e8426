"""How well each pair's T1 agrees with its T2 in fine structure, without a network: can the T1 show the T2's edges?

Usage: PYTHONPATH=. python bench/guide_agreement.py [--data ../shared/data] [--block 24] [--search 2]
Per pair of ../shared/data (both volumes / their robust scale, the same 1 mm grid): the in-plane band-pass magnitude
of every axial slice (difference of Gaussians, sigma 0.7 and 2 voxels: the detail a guided network adds at x2-x4),
correlated between T1 and T2 over the brain both hold (eroded by 4 voxels). For scale, the same pair with the T1
moved 1 voxel in x and y (1.4 mm, the guards' moved guide), 2 voxels along z, and made of 5 mm axial slices (box
averages along z). Then per block of `block` voxels inside the brain: the median correlation, and how much the best
of the block's integer shifts up to `search` voxels along each axis raises it (median; near 0 when no local shift
explains a low agreement).
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from CohfTSuperResLib.imageio.normalize import robust_scale
from CohfTSuperResLib.imageio.volumes import read_volume

FINE_SIGMA = 0.7
COARSE_SIGMA = 2.0
EROSION = 4
TISSUE_LEVEL = 0.1
MIN_BRAIN_SHARE = 0.8


def band_magnitude(voxels: np.ndarray) -> np.ndarray:
    """|difference of Gaussians| of each axial slice (numpy axis 0 is z)."""
    fine = ndimage.gaussian_filter(voxels, (0, FINE_SIGMA, FINE_SIGMA))
    return np.abs(fine - ndimage.gaussian_filter(voxels, (0, COARSE_SIGMA, COARSE_SIGMA)))


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def normalised(path: Path) -> np.ndarray:
    voxels = sitk.GetArrayFromImage(read_volume(path, float32=True)).astype(np.float64)
    return voxels / robust_scale(voxels)


def block_statistics(t1_band: np.ndarray, t2_band: np.ndarray, brain: np.ndarray, block: int,
                     search: int) -> tuple[float, float, int]:
    """(median block correlation, median gain of the best local shift, blocks) over blocks mostly inside the brain."""
    correlations, gains = [], []
    shifts = list(itertools.product(range(-search, search + 1), repeat=3))
    starts = [range(search, n - block - search + 1, block) for n in brain.shape]
    for z, y, x in itertools.product(*starts):
        inside = (slice(z, z + block), slice(y, y + block), slice(x, x + block))
        mask = brain[inside]
        if mask.mean() < MIN_BRAIN_SHARE:
            continue
        target = t2_band[inside][mask]
        here = correlation(t1_band[inside][mask], target)
        best = max(correlation(t1_band[z + dz:z + dz + block, y + dy:y + dy + block, x + dx:x + dx + block][mask],
                               target) for dz, dy, dx in shifts)
        correlations.append(here)
        gains.append(best - here)
    return float(np.median(correlations)), float(np.median(gains)), len(correlations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--block", type=int, default=24)
    parser.add_argument("--search", type=int, default=2)
    args = parser.parse_args()
    print("| pair | T1 as distributed | moved 1 mm in x and y | moved 2 mm in z | 5 mm axial slices | "
          "block median | best local shift adds (median) | blocks |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for folder in sorted(path.parent for path in args.data.rglob("t2.nii.gz")):
        if not (folder / "t1.nii.gz").is_file():
            continue
        t1, t2 = normalised(folder / "t1.nii.gz"), normalised(folder / "t2.nii.gz")
        brain = ndimage.binary_erosion((t1 > TISSUE_LEVEL) & (t2 > TISSUE_LEVEL), iterations=EROSION)
        t1_band, t2_band = band_magnitude(t1), band_magnitude(t2)
        variants = (t1_band, np.roll(t1_band, (1, 1), axis=(1, 2)), np.roll(t1_band, 2, axis=0),
                    band_magnitude(ndimage.uniform_filter1d(t1, 5, axis=0)))
        whole = [correlation(variant[brain], t2_band[brain]) for variant in variants]
        median, shift_gain, blocks = block_statistics(t1_band, t2_band, brain, args.block, args.search)
        print(f"| {folder.relative_to(args.data)} | " + " | ".join(f"{value:.3f}" for value in whole)
              + f" | {median:.3f} | {shift_gain:+.3f} | {blocks} |", flush=True)


if __name__ == "__main__":
    main()
