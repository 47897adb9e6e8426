"""What the guide check says on the open_ms clinical studies, and what it and the registration cost.

Usage: PYTHONPATH=. python bench/guide_check_clinical.py [--scale 2 | --through-plane] [--threads 2]
For each clinical study (thick-slice T2 of 0.6 x 0.6 x 3.3 mm or 0.5 x 0.5 x 4 mm, T1 of the same session with
3 mm slices, no ground truth): the check's proxy benefit and verdict with the T1 as distributed (the files' own
geometry), with the T1 put onto the T2 through the study's two transforms to its FLAIR (the registration that
ships with the data), and after `register=True` (this library's rigid registration), each with the check's and the
registration's seconds. --through-plane: the through-plane mode's check (inference/through_plane_guide_check.py)
instead of the in-plane one. Prints the CPU and the torch threads.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import SimpleITK as sitk
import torch

from CohfTSuperResLib.data.pairs import PairSpec, t1_to_t2_transform
from CohfTSuperResLib.inference.guide_check import check_guide
from CohfTSuperResLib.inference.input_checks import check_inputs
from CohfTSuperResLib.inference.registration import register_t1
from CohfTSuperResLib.inference.through_plane_guide_check import check_through_plane_guide
from CohfTSuperResLib.options import RunOptions

CLINICAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "open_ms" / "clinical"


def main() -> None:
    from benchmark import cpu_name

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--through-plane", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# CPU: {cpu_name()}; {args.threads} torch threads; torch {torch.__version__}\n")
    print("| study | T2 size | T1 | proxy benefit dB | T1 used (auto) | apparent offset mm | check s | "
          "registration s |")
    print("|" + " --- |" * 8)
    mode = "through-plane" if args.through_plane else "in-plane"
    options = RunOptions(scale=args.scale, device="cpu", mode=mode)
    check = check_through_plane_guide if args.through_plane else check_guide
    for folder in sorted(CLINICAL.glob("patient*")):
        t2 = sitk.ReadImage(str(folder / "t2w.nii.gz"), sitk.sitkFloat32)
        t1 = sitk.ReadImage(str(folder / "t1w.nii.gz"), sitk.sitkFloat32)
        spec = PairSpec(t2=folder / "t2w.nii.gz", t1=folder / "t1w.nii.gz", t1_to_ref=folder / "t1w_to_flair.tfm",
                        t2_to_ref=folder / "t2w_to_flair.tfm")
        guides = {"as distributed": (t1, None)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            checked = check_inputs(t2, t1, args.scale, mode=mode)
            started = time.monotonic()
            registration = register_t1(checked.t2, checked.t1, checked.t2_scale)
            guides["registered (register=True)"] = (registration.t1, time.monotonic() - started)
            composed = sitk.Resample(t1, t2, t1_to_t2_transform(spec), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
            guides["through the FLAIR transforms (resampled)"] = (composed, None)
            for name, (guide, seconds) in guides.items():
                verdict = check(check_inputs(t2, guide, args.scale, mode=mode), options)
                offset = "-" if verdict.shift_mm is None else f"{verdict.shift_size_mm:.1f}"
                print(f"| {folder.name} | {' x '.join(map(str, t2.GetSize()))} | {name} | {verdict.benefit_db:+.2f} | "
                      f"{'yes' if verdict.helps else 'no'} | {offset} | {verdict.seconds:.1f} | "
                      f"{'-' if seconds is None else f'{seconds:.1f}'} |", flush=True)


if __name__ == "__main__":
    main()
