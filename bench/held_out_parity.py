"""Does this tree give the same results as another checkout? Held-out PSNR / SSIM and max abs difference, side by side.

Usage (from the repository root):
    PYTHONPATH=. python bench/held_out_parity.py --baseline-tree DIR [--scales 2 3 4] [--threads 2]
        [--pad 120 --central 40] [--whole-slices]

The protocol of `cohft-sr evaluate` (CohfTSuperResLib/evaluation/evaluate.py) on the held-out subject
mni/patient26: k-space LR synthesis of its HR T2 at each scale, every brain slice, PSNR pooled over
the brain slices and mean SSIM, data range 1 after division by the HR T2's robust scale. Each tree
runs the shipped S models with and without the T1 through `super_resolve` (torch, CPU) in its own
child process; the table gives both trees' metrics, their difference, and the max abs difference of
the two SR volumes in the same normalised units.

--pad N zero-pads the LR T2 by N voxels on each in-plane side after the LR synthesis (an exactly
zero background around the slice, as in a BraTS volume or a masked clinical one, which the engine's
content box leaves out) and scores only the original extent; --central K keeps the K central axial
slices (for time). Without --pad the content box (LR samples above 2 % of the tissue scale)
applies only where the k-space synthesis's ringing around the brain stays below that level.
--whole-slices runs both trees on whole slices (`whole_slices=True`, no content box).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SUBJECT = ROOT.parent / "shared" / "data" / "open_ms" / "mni" / "patient26"
AXIS = 2


def held_out_stacks(scale: int, pad: int, central: int | None) -> tuple[object, object, np.ndarray, tuple]:
    """(LR T2 image, T1 image, HR T2 stack, (rows, cols) slices of the HR extent in the SR output) of the
    held-out subject at `scale`, as `cohft-sr evaluate` makes them, after the optional slab cut and LR padding."""
    import SimpleITK as sitk

    from CohfTSuperResLib.inference.geometry import image_stack
    from CohfTSuperResLib.data.synthetic_volumes import lr_volume, trim_in_plane
    from CohfTSuperResLib.imageio.volumes import read_volume

    hr = read_volume(SUBJECT / "t2.nii.gz", float32=True)
    if central is not None:
        depth = hr.GetSize()[2]
        hr = hr[:, :, (depth - central) // 2 : (depth + central) // 2]
    hr = trim_in_plane(hr, scale, AXIS)
    lr = sitk.ConstantPad(lr_volume(hr, scale, AXIS), [pad, pad, 0], [pad, pad, 0])
    t1 = read_volume(SUBJECT / "t1.nii.gz", float32=True)
    width, height = hr.GetSize()[:2]
    extent = (slice(scale * pad, scale * pad + height), slice(scale * pad, scale * pad + width))
    return lr, t1, image_stack(hr, AXIS), extent


def child(scale: int, folder: Path, pad: int, central: int | None, whole_slices: bool) -> None:
    """SR stacks of this process's library, with and without the T1, saved as .npy in folder."""
    import torch

    from CohfTSuperResLib.inference.engine import super_resolve
    from CohfTSuperResLib.inference.geometry import image_stack

    torch.set_num_threads(int(os.environ.get("PARITY_THREADS", "2")))
    lr, t1, _hr, _extent = held_out_stacks(scale, pad, central)
    options = {"whole_slices": True} if whole_slices else {}  # a tree from before the content box runs too
    for name, guide in (("t1", t1), ("no_t1", None)):
        np.save(folder / f"x{scale}_{name}.npy", image_stack(super_resolve(lr, guide, scale, device="cpu",
                                                                         slice_axis=AXIS, **options), AXIS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline-tree", type=Path, required=True)
    parser.add_argument("--scales", nargs="+", type=int, default=[2, 3, 4])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pad", type=int, default=0, help="zero voxels added on each in-plane side of the LR T2")
    parser.add_argument("--whole-slices", action="store_true", help="run the network on whole slices in both trees")
    parser.add_argument("--central", type=int, help="keep only this many central axial slices")
    parser.add_argument("--child", nargs=2, metavar=("SCALE", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(int(args.child[0]), Path(args.child[1]), args.pad, args.central, args.whole_slices)
        return
    from CohfTSuperResLib.evaluation.evaluate import score
    from CohfTSuperResLib.imageio.normalize import robust_scale
    from CohfTSuperResLib.data.patches import brain_slices

    trees = {"this tree": ROOT, "baseline": args.baseline_tree.resolve()}
    print("| scale | model | PSNR this tree | PSNR baseline | difference dB | SSIM this tree | SSIM baseline | "
          "max abs diff |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as temporary:
        for scale in args.scales:
            folders = {}
            for label, tree in trees.items():
                folders[label] = Path(temporary) / f"{label.replace(' ', '_')}_x{scale}"
                folders[label].mkdir()
                environment = {**os.environ, "PYTHONPATH": str(tree), "PARITY_THREADS": str(args.threads)}
                options = ["--pad", str(args.pad)] + ([] if args.central is None else ["--central", str(args.central)])
                options += ["--whole-slices"] if args.whole_slices else []
                subprocess.run([sys.executable, __file__, "--baseline-tree", str(tree), "--child", str(scale),
                                str(folders[label]), *options], check=True, env=environment, cwd=tree,
                               capture_output=True)
            _lr, _t1, hr_stack, (rows, cols) = held_out_stacks(scale, args.pad, args.central)
            reference = robust_scale(hr_stack)
            target = hr_stack / reference
            brain = brain_slices(target)
            for name in ("t1", "no_t1"):
                results = {label: np.load(folder / f"x{scale}_{name}.npy")[:, rows, cols] / reference
                           for label, folder in folders.items()}
                metrics = {label: score(result[brain], target[brain]) for label, result in results.items()}
                now, before = metrics["this tree"], metrics["baseline"]
                difference = np.abs(results["this tree"] - results["baseline"]).max()
                print(f"| x{scale} | {'with T1' if name == 't1' else 'without T1'} | {now['psnr']:.4f} | "
                      f"{before['psnr']:.4f} | {now['psnr'] - before['psnr']:+.4f} | {now['ssim']:.5f} | "
                      f"{before['ssim']:.5f} | {difference:.1e} |", flush=True)


if __name__ == "__main__":
    main()
