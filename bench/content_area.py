"""How much of each slice the network runs on, for content-box settings: the work the box saves.

Usage (from the repository root):
    PYTHONPATH=. python bench/content_area.py [--cases clinical-x2 mni240-x4] [--settings 0:16 0.02:8 0.02:4]

For each benchmark case (bench/benchmark.py) and each THRESHOLD:MARGIN setting (cropping.py: normalised
LR samples above THRESHOLD, MARGIN LR samples of context, grown to the size multiple), the mean over the
slices with content of the box area as a fraction of the slice padded to the size multiple: with one
slice per batch (the CPU default) and with one box for the whole volume. No network runs; the network's
time on a volume is about proportional to this fraction.
"""

from __future__ import annotations

import argparse

import numpy as np
import SimpleITK as sitk
import torch

from benchmark import load_case

from CohfTSuperResLib.batching import size_multiple
from CohfTSuperResLib.cropping import content_box
from CohfTSuperResLib.model import build_model
from CohfTSuperResLib.normalize import normalize, robust_scale


def box_fraction(slices: torch.Tensor, multiple: int, threshold: float, margin: int) -> float:
    """Area of the content box of the (N, 1, h, w) slices over the area of one slice padded to `multiple`."""
    height, width = (-(-n // multiple) * multiple for n in slices.shape[-2:])
    box = content_box(slices, multiple, threshold, margin)
    return 1.0 if box is None else box.height * box.width / (height * width)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=["clinical-x2", "mni240-x4"])
    parser.add_argument("--settings", nargs="+", default=["0:16", "0.02:8", "0.02:4"])
    args = parser.parse_args()
    print("| case | threshold | margin | fraction run, one slice per batch | fraction run, one box per volume |")
    print("|---|---|---|---|---|")
    for case in args.cases:
        t2, _t1, scale = load_case(case)
        voxels = sitk.GetArrayFromImage(t2).astype(np.float32)
        stack = torch.from_numpy(normalize(voxels, robust_scale(voxels)))[:, None]
        stack = stack[[index for index in range(stack.shape[0]) if bool(stack[index].any())]]
        multiple = size_multiple(build_model("S", scale).config)
        for setting in args.settings:
            threshold, margin = float(setting.split(":")[0]), int(setting.split(":")[1])
            per_slice = np.mean([box_fraction(stack[i : i + 1], multiple, threshold, margin)
                                 for i in range(stack.shape[0])])
            whole = box_fraction(stack, multiple, threshold, margin)
            print(f"| {case} | {threshold:g} | {margin} | {per_slice:.3f} | {whole:.3f} |")


if __name__ == "__main__":
    main()
