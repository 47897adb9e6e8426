"""How much fine detail each volume of ../shared/data holds along each voxel axis: was it acquired thin along it?

Usage: PYTHONPATH=. python bench/axis_detail.py [--data ../shared/data]
Per volume (every pair's t1 and t2, 1 mm grids): intensities / the volume's robust scale, the mean squared second
difference along each voxel axis over the brain (voxels above 10 % of the scale, eroded by 3 voxels so that the brain's
edge does not count). A volume acquired in thin slices (3-D, or the templates, averages of 3-D scans) has about the
same energy along every axis; one made of thick slices resampled onto 1 mm has little along the slice axis (its
ratio to the mean of the other two axes far below 1). Through-plane, a T1 guide can only add detail along an axis on
which it has some, and a truth without detail along the slice axis rewards smooth restorations.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from CohfTSuperResLib.imageio.normalize import robust_scale
from CohfTSuperResLib.imageio.volumes import read_volume

TISSUE_LEVEL = 0.1
EROSION = 3


def second_difference_energy(voxels: np.ndarray) -> list[float]:
    """Mean squared second difference along voxel axes x, y, z (numpy axes 2, 1, 0) over the eroded brain."""
    normalised = voxels / robust_scale(voxels)
    brain = ndimage.binary_erosion(normalised > TISSUE_LEVEL, iterations=EROSION)
    energies = []
    for axis in (2, 1, 0):
        inner = [slice(None)] * 3
        inner[axis] = slice(1, -1)
        difference = np.diff(normalised, 2, axis=axis)
        energies.append(float(np.mean(difference[brain[tuple(inner)]] ** 2)))
    return energies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = parser.parse_args()
    print("| volume | x | y | z | z / mean(x, y) | x / mean(y, z) | y / mean(x, z) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for path in sorted(args.data.rglob("t[12].nii.gz")):
        voxels = sitk.GetArrayFromImage(read_volume(path, float32=True)).astype(np.float64)
        x, y, z = second_difference_energy(voxels)
        print(f"| {path.parent.relative_to(args.data)}/{path.name} | {x:.5f} | {y:.5f} | {z:.5f} | "
              f"{z / ((x + y) / 2):.2f} | {x / ((y + z) / 2):.2f} | {y / ((x + z) / 2):.2f} |")


if __name__ == "__main__":
    main()
