"""How much the shipped guided models use their T1: held-out PSNR with the right T1 and with wrong guides.

Usage: PYTHONPATH=. python bench/t1_reliance.py [--every 1] [--threads 2]
Protocol of `cohft-sr evaluate` on mni/patient26 (held out): LR by k-space truncation, the public
`super_resolve`, brain slices (every n-th with --every), intensities / the HR T2's 99.5th percentile.
Guides: the registered T1; the same T1 shifted 3 mm (misregistration); the T1 of another subject
(patient07, same MNI grid: plausible but wrong anatomy); the HR T2 itself (an oracle guide that no
user has: it shows whether the network can exploit a guide at all). If a model ignored its guide,
every row would give the same PSNR. The last columns compare each result with the registered-T1
one (normalised units); 'detail' is the mean |SR - bicubic| of the registered-T1 result.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from CohfTSuperResLib.data import brain_slices, read_volume, to_stack
from CohfTSuperResLib.evaluate import baselines, score, synthesise_lr, trim_in_plane
from CohfTSuperResLib.inference import super_resolve
from CohfTSuperResLib.models_registry import shipped_models
from CohfTSuperResLib.normalize import robust_scale

MNI = Path(__file__).resolve().parents[2] / "shared" / "data" / "open_ms" / "mni"
AXIS = 2
SHIFT_MM = 3.0


def read(subject: str, name: str) -> sitk.Image:
    return read_volume(MNI / subject / f"{name}.nii.gz")


def shifted(image: sitk.Image, millimetres: float) -> sitk.Image:
    """The image translated by millimetres along its first voxel axis (a misregistration)."""
    moved = sitk.Image(image)
    direction = image.GetDirection()
    moved.SetOrigin(tuple(o + millimetres * direction[3 * i] for i, o in enumerate(image.GetOrigin())))
    return moved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=int, default=1, help="use every n-th brain slice")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("| scale | guide | PSNR dB | SSIM | max abs change | mean abs change | mean change / detail |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    t1 = read("patient26", "t1")
    wrong_guides = {f"T1 shifted {SHIFT_MM:g} mm": shifted(t1, SHIFT_MM),
                    "T1 of another subject": read("patient07", "t1")}
    for model in [m for m in shipped_models() if m.use_t1]:
        scale = model.scale
        hr = trim_in_plane(read("patient26", "t2"), scale, AXIS)
        hr_stack = to_stack(hr, AXIS)
        reference = robust_scale(hr_stack)
        keep = [int(k) for k in brain_slices(hr_stack / reference)[:: args.every]]
        lr = synthesise_lr(hr, scale, AXIS)
        rows = {"bicubic (no network)": baselines(to_stack(lr, AXIS)[keep], scale)["bicubic"]}
        guides = {"registered T1": t1, **wrong_guides, "HR T2 as guide (oracle)": hr}
        for name, guide in guides.items():
            # one call per slice: each 1-slice LR image keeps its physical position, so the guide is
            # resampled where that slice lies
            rows[name] = np.stack([to_stack(super_resolve(lr[:, :, k:k + 1], guide, scale, variant=model.variant,
                                                          device="cpu"), AXIS)[0] for k in keep])
        target = hr_stack[keep] / reference
        guided = rows["registered T1"] / reference
        detail = float(np.abs(guided - rows["bicubic (no network)"] / reference).mean())
        for name, stack in rows.items():
            metrics = score(stack / reference, target)
            change = np.abs(stack / reference - guided)
            print(f"| x{scale} | {name} | {metrics['psnr']:.3f} | {metrics['ssim']:.4f} | {change.max():.2g} | "
                  f"{change.mean():.2g} | {change.mean() / detail:.2g} |", flush=True)


if __name__ == "__main__":
    main()
