"""How much guided models use their T1: held-out PSNR with the right T1, with wrong guides and without a T1.

Usage: PYTHONPATH=. python bench/t1_reliance.py [--model W.safetensors ...] [--no-t1-model W.safetensors ...]
       [--json out.json] [--threads 2]
Without --model: every shipped guided model, with the shipped no-T1 model of the same scale.
Protocol of `cohft-sr evaluate` on mni/patient26 (held out): LR by k-space truncation of the whole
volume, the public `super_resolve` on the whole LR volume, brain slices, intensities / the HR T2's
99.5th percentile, PSNR pooled over the brain slices. Guides: the registered T1; the same T1
shifted 3 mm (misregistration); the T1 of another subject (patient07, same MNI grid: plausible but
wrong anatomy); the HR T2 itself (an oracle guide that no user has: it shows whether the network can
exploit a guide at all). A model that ignored its guide would give the same PSNR in every row. The
change columns compare each result with the registered-T1 one (normalised units); 'detail' is the
mean |SR - bicubic| of the registered-T1 result.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from CohfTSuperResLib.evaluation.evaluate import baselines, score
from CohfTSuperResLib.inference.engine import super_resolve
from CohfTSuperResLib.weights.registry import find_model, shipped_models
from CohfTSuperResLib.imageio.normalize import robust_scale
from CohfTSuperResLib.inference.geometry import image_stack
from CohfTSuperResLib.data.patches import brain_slices
from CohfTSuperResLib.data.synthetic_volumes import lr_volume, trim_in_plane
from CohfTSuperResLib.imageio.volumes import read_volume
from CohfTSuperResLib.weights.storage import WeightsError, load_model

MNI = Path(__file__).resolve().parents[2] / "shared" / "data" / "open_ms" / "mni"
AXIS = 2
SHIFT_MM = 3.0
REGISTERED = "registered T1"


def read(subject: str, name: str) -> sitk.Image:
    return read_volume(MNI / subject / f"{name}.nii.gz", float32=True)


def shifted(image: sitk.Image, millimetres: float) -> sitk.Image:
    """The image translated by millimetres along its first voxel axis (a misregistration)."""
    moved = sitk.Image(image)
    direction = image.GetDirection()
    moved.SetOrigin(tuple(o + millimetres * direction[3 * i] for i, o in enumerate(image.GetOrigin())))
    return moved


def reliance(model: Path | None, scale: int, no_t1_model: Path | None, guides: dict[str, sitk.Image]) -> list[dict]:
    """Rows (guide, PSNR, SSIM, changes) of one guided model (None: the shipped one) on patient26 at `scale`."""
    hr = trim_in_plane(read("patient26", "t2"), scale, AXIS)
    hr_stack = image_stack(hr, AXIS)
    reference = robust_scale(hr_stack)
    brain = brain_slices(hr_stack / reference)
    lr = lr_volume(hr, scale, AXIS)
    target = hr_stack[brain] / reference
    results = {"bicubic (no network)": baselines(image_stack(lr, AXIS)[brain], scale)["bicubic"] / reference}
    for name, guide in {**guides, "HR T2 as guide (oracle)": hr}.items():
        sr = super_resolve(lr, guide, scale, model_path=model, device="cpu", slice_axis=AXIS)
        results[name] = image_stack(sr, AXIS)[brain] / reference
    if no_t1_model is not None:
        results["no T1 (model trained without)"] = image_stack(
            super_resolve(lr, None, scale, model_path=no_t1_model, device="cpu", slice_axis=AXIS),
            AXIS)[brain] / reference
    guided = results[REGISTERED]
    detail = float(np.abs(guided - results["bicubic (no network)"]).mean())
    rows = []
    for name, stack in results.items():
        metrics = score(stack, target)
        change = np.abs(stack - guided)
        rows.append({"scale": scale, "guide": name, "psnr": metrics["psnr"], "ssim": metrics["ssim"],
                     "max_change": float(change.max()), "mean_change": float(change.mean()),
                     "change_per_detail": float(change.mean() / detail)})
    return rows


def _no_t1_for(scale: int) -> Path | None:
    try:
        return find_model("S", scale, use_t1=False).path
    except WeightsError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, action="append", help="guided weights (repeat); default: shipped")
    parser.add_argument("--no-t1-model", type=Path, action="append", help="unguided weights, one per --model")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.model:
        runs = [(path, load_model(path).config.scale) for path in args.model]
        unguided = args.no_t1_model or [None] * len(runs)
        if len(unguided) != len(runs):
            parser.error("give one --no-t1-model per --model, or none")
    else:
        runs = [(None, m.scale) for m in shipped_models() if m.use_t1]
        unguided = [_no_t1_for(scale) for _path, scale in runs]
    t1 = read("patient26", "t1")
    guides = {REGISTERED: t1, f"T1 shifted {SHIFT_MM:g} mm": shifted(t1, SHIFT_MM),
              "T1 of another subject": read("patient07", "t1")}
    print("| scale | guide | PSNR dB | SSIM | max abs change | mean abs change | mean change / detail |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    everything = []
    for (path, scale), no_t1 in zip(runs, unguided):
        rows = reliance(path, scale, no_t1, guides)
        everything.append({"model": None if path is None else str(path), "rows": rows})
        for row in rows:
            print(f"| x{scale} | {row['guide']} | {row['psnr']:.3f} | {row['ssim']:.4f} | {row['max_change']:.2g} | "
                  f"{row['mean_change']:.2g} | {row['change_per_detail']:.2g} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(everything, indent=1))


if __name__ == "__main__":
    main()
