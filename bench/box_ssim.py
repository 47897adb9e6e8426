"""Where the content box changes the held-out SSIM: inside the head or in the background around it.

Usage (from the repository root):
    PYTHONPATH=. python bench/box_ssim.py [--scales 2 3 4] [--central K] [--dilate 8] [--threads 2]

The held-out subject of bench/held_out_parity.py (mni/patient26, k-space LR synthesis, axial
slices; --central K keeps the K central slices, for time), the shipped S model with its T1 run
through `super_resolve` twice: on the content box (the default) and on whole slices. The SSIM map
of each brain slice (Gaussian window, sigma 1.5, data range 1, as pytorch-msssim's) is averaged
separately inside the head (HR T2 above 2 % of its robust scale, dilated by --dilate HR samples) and
outside it; the max abs difference of the two runs is given inside and outside the head, in the
same normalised units.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from held_out_parity import AXIS, held_out_stacks
from scipy import ndimage
from skimage.metrics import structural_similarity

from CohfTSuperResLib.inference.engine import super_resolve
from CohfTSuperResLib.imageio.normalize import robust_scale
from CohfTSuperResLib.inference.geometry import image_stack
from CohfTSuperResLib.data.patches import brain_slices

HEAD_LEVEL = 0.02  # the content box's threshold (inference/cropping.py), here on the HR target


def ssim_inside_outside(result: np.ndarray, target: np.ndarray, heads: np.ndarray) -> tuple[float, float]:
    """Mean SSIM-map value inside and outside the head masks over the (N, H, W) stacks."""
    inside, outside = [], []
    for prediction, truth, head in zip(result, target, heads, strict=True):
        _mean, ssim_map = structural_similarity(prediction, truth, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                                use_sample_covariance=False, full=True)
        inside.append(ssim_map[head])
        outside.append(ssim_map[~head])
    return float(np.concatenate(inside).mean()), float(np.concatenate(outside).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", nargs="+", type=int, default=[2, 3, 4])
    parser.add_argument("--central", type=int, help="keep only this many central axial slices")
    parser.add_argument("--dilate", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("| scale | SSIM in the head, box | whole slices | SSIM outside, box | whole slices | "
          "max abs diff in the head | outside |")
    print("|---|---|---|---|---|---|---|")
    for scale in args.scales:
        lr, t1, hr, (rows, cols) = held_out_stacks(scale, 0, args.central)
        reference = robust_scale(hr)
        target = hr / reference
        brain = brain_slices(target)
        results = [image_stack(super_resolve(lr, t1, scale, device="cpu", slice_axis=AXIS, whole_slices=whole),
                            AXIS)[:, rows, cols][brain] / reference for whole in (False, True)]
        target = target[brain]
        heads = np.stack([ndimage.binary_dilation(truth > HEAD_LEVEL, iterations=args.dilate) for truth in target])
        (box_in, box_out), (whole_in, whole_out) = (ssim_inside_outside(result, target, heads) for result in results)
        difference = np.abs(results[0] - results[1])
        print(f"| x{scale} | {box_in:.5f} | {whole_in:.5f} | {box_out:.5f} | {whole_out:.5f} | "
              f"{difference[heads].max():.1e} | {difference[~heads].max():.1e} |", flush=True)


if __name__ == "__main__":
    main()
