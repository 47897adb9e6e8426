"""Accuracy change of bf16 / fp16 autocast against fp32, on a real clinical slice (for docs/inference.md).

Usage: PYTHONPATH=. python bench/precision_error.py [--threads 2]
Cohf-T S x2: the shipped model (random weights where none is shipped); differences in
the T2's units relative to its robust scale (99.5th percentile), i.e. normalised units.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from CohfTSuperResLib.inference.engine import super_resolve
from CohfTSuperResLib.imageio.normalize import robust_scale
from CohfTSuperResLib.weights.storage import save_weights

from bench_models import network

STUDY = Path(__file__).resolve().parents[2] / "shared" / "data" / "open_ms" / "clinical" / "patient01_study2"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--weights", type=Path, default=Path("/tmp/cohft_s_x2_bench.safetensors"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, kind = network("S", 2)
    save_weights(model, args.weights)
    print(f"Cohf-T S x2, {kind} weights")
    t2 = sitk.ReadImage(str(STUDY / "t2w.nii.gz"))
    t1 = sitk.ReadImage(str(STUDY / "t1w.nii.gz"))
    part = t2[:, :, 22:23]
    scale = robust_scale(sitk.GetArrayFromImage(t2))
    outputs = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for precision in ("fp32", "bf16", "fp16"):
            image = super_resolve(part, t1, 2, model_path=args.weights, device="cpu", precision=precision, slice_axis=2)
            outputs[precision] = sitk.GetArrayFromImage(image) / scale
    for precision in ("bf16", "fp16"):
        difference = np.abs(outputs[precision] - outputs["fp32"])
        print(f"{precision} vs fp32: max {difference.max():.4f}, mean {difference.mean():.5f}, "
              f"99th pct {np.percentile(difference, 99):.4f} (normalised units)")


if __name__ == "__main__":
    main()
