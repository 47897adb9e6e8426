"""Tile-vs-whole-slice difference of Cohf-T (the shipped model, else random weights) on real slices.

Usage: python bench/tiling_error.py [--threads 2]
Prints, per case, the max and mean absolute difference in normalised units
(T2 / its 99.5th percentile) between tiled and whole-slice inference, and the
same relative to the mean absolute learned detail |SR - bicubic| of the whole slice.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from CohfTSuperResLib.model.partition import pad_to_multiple
from CohfTSuperResLib.imageio.normalize import normalize, robust_scale
from CohfTSuperResLib.inference.tiling import overlap_for, run_tiled
from CohfTSuperResLib.model.upsample import upsample_cubic

from bench_models import network

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "open_ms"


def real_pair(scale: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised LR T2 (1,1,h,w) and HR T1 (1,1,s*h,s*w): the centre size x size of MNI patient07 slice 90."""
    folder = DATA / "mni" / "patient07"
    volumes = [sitk.GetArrayFromImage(sitk.ReadImage(str(folder / f"{n}.nii.gz"))) for n in ("t2", "t1")]
    hr = []
    for array in volumes:
        plane = np.pad(array[90].astype(np.float32), size)  # room for big slices: zero background around the head
        top, left = (plane.shape[0] - size) // 2, (plane.shape[1] - size) // 2
        hr.append(normalize(plane[top : top + size, left : left + size].copy(), robust_scale(array)))
    lr = torch.from_numpy(hr[0][::scale, ::scale].copy())[None, None]
    return lr, torch.from_numpy(hr[1])[None, None]


def measure(variant: str, scale: int, hr_size: int, tile: int) -> dict[str, float]:
    model, kind = network(variant, scale)
    lr, t1 = real_pair(scale, hr_size)
    lr, t1 = pad_to_multiple(lr, 30), pad_to_multiple(t1, 30 * scale)
    with torch.inference_mode():
        whole = model(lr, t1)[0]
        tiled = run_tiled(lambda a, b: model(a, b)[0], lr, t1, scale, tile, overlap_for(tile))
    detail = (whole - upsample_cubic(lr, scale)).abs().mean()
    difference = (tiled - whole).abs()
    return {
        "lr": tuple(lr.shape[-2:]), "max": float(difference.max()), "mean": float(difference.mean()),
        "mean/detail": float(difference.mean() / detail), "p99": float(difference.quantile(0.99)), "weights": kind,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("variant scale LR(padded) tile overlap | max|diff| mean|diff| p99|diff| mean|diff|/mean|SR-bicubic|")
    for variant, scale, hr_size, tile in [("S", 2, 216, 60), ("S", 2, 432, 120), ("S", 4, 432, 60)]:
        r = measure(variant, scale, hr_size, tile)
        print(f"{variant} x{scale} {r['lr']} {tile} {overlap_for(tile)} | {r['max']:.4f} {r['mean']:.5f} "
              f"{r['p99']:.4f} {r['mean/detail']:.3f} ({r['weights']} weights)")


if __name__ == "__main__":
    main()
