"""How much of each slice the network runs on, for content-box settings: the work the box saves.

Usage (from the repository root):
    PYTHONPATH=. python bench/content_area.py [--cases clinical-x2 mni240-x4] [--settings 0:16:30 0.02:8:30 0.02:8]

For each benchmark case (bench/benchmark.py) and each THRESHOLD:MARGIN[:MULTIPLE] setting (inference/cropping.py:
normalised LR samples above THRESHOLD, MARGIN LR samples of context, sides grown to a multiple of MULTIPLE,
by default the network's input multiple, and to at least its size multiple, inference/batching.py), the mean over the
slices with content of the box area as a fraction of the slice padded to the size multiple (what a whole-slice
run costs, the work bench/benchmark.py counts): with one slice per batch (the CPU default) and with one box
for the whole volume. No network runs; the network's
time on a volume is about proportional to this fraction.
"""

from __future__ import annotations

import argparse

import numpy as np
import SimpleITK as sitk
import torch

from benchmark import load_case

from CohfTSuperResLib.inference.batching import input_multiple, size_multiple
from CohfTSuperResLib.inference.cropping import content_box
from CohfTSuperResLib.model import build_model
from CohfTSuperResLib.imageio.normalize import normalize, robust_scale


def box_fraction(slices: torch.Tensor, multiple: int, minimum: int, threshold: float, margin: int) -> float:
    """Area of the content box of the (N, 1, h, w) slices (sides multiples of `multiple`, at least `minimum`) over
    the area of one slice padded to `minimum`."""
    height, width = (-(-n // minimum) * minimum for n in slices.shape[-2:])
    box = content_box(slices, multiple, minimum, threshold=threshold, margin=margin)
    return 1.0 if box is None else box.height * box.width / (height * width)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=["clinical-x2", "mni240-x4"])
    parser.add_argument("--settings", nargs="+", default=["0:16:30", "0.02:8:30", "0.02:8"])
    args = parser.parse_args()
    print("| case | threshold | margin | side multiple | fraction run, one slice per batch | fraction run, one box "
          "per volume |")
    print("|---|---|---|---|---|---|")
    for case in args.cases:
        t2, _t1, scale = load_case(case)
        voxels = sitk.GetArrayFromImage(t2).astype(np.float32)
        stack = torch.from_numpy(normalize(voxels, robust_scale(voxels)))[:, None]
        stack = stack[[index for index in range(stack.shape[0]) if bool(stack[index].any())]]
        config = build_model("S", scale).config
        minimum = size_multiple(config)
        for setting in args.settings:
            fields = setting.split(":")
            threshold, margin = float(fields[0]), int(fields[1])
            multiple = int(fields[2]) if len(fields) > 2 else input_multiple(config)
            per_slice = np.mean([box_fraction(stack[i : i + 1], multiple, minimum, threshold, margin)
                                 for i in range(stack.shape[0])])
            whole = box_fraction(stack, multiple, minimum, threshold, margin)
            print(f"| {case} | {threshold:g} | {margin} | {multiple} | {per_slice:.3f} | {whole:.3f} |")


if __name__ == "__main__":
    main()
