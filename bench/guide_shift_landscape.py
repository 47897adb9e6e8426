"""The guided model's PSNR with its T1 translated over a grid: is there a position where the T1 helps more?

Usage: PYTHONPATH=. python bench/guide_shift_landscape.py [--subject NAME] [--scale 4] [--in-plane-mm -1.5 ... 1.5]
       [--z-mm -3 ... 3] [--every 8] [--threads 1]
The protocol of evaluation/guide_cases.py (every `every`-th axial slice, k-space LR, the guide check off: the network
itself) on each reporting subject, beside bicubic and the no-T1 model of the scale: the T1 as distributed, translated
(a physical move, no interpolation of the T1 itself) over every (x, y) pair of --in-plane-mm and along z by each of
--z-mm. A T1 that is off by a rigid translation peaks away from 0; one whose landscape is flat carries little the
network can use at any position, which no registration would change. PSNR in dB.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import torch

from CohfTSuperResLib.evaluation.guide_cases import BICUBIC, NO_T1, evaluate_subject, reporting_subjects
from CohfTSuperResLib.inference.geometry import translated
from CohfTSuperResLib.weights.registry import find_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subject", default="", help="only the reporting subjects whose name contains this")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--in-plane-mm", type=float, nargs="+", default=[-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5])
    parser.add_argument("--z-mm", type=float, nargs="+", default=[-3.0, -2.0, -1.0, -0.5, 0.5, 1.0, 2.0, 3.0])
    parser.add_argument("--every", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shifts = [(x, y, 0.0) for x, y in itertools.product(args.in_plane_mm, repeat=2)]
    shifts += [(0.0, 0.0, z) for z in args.z_mm if z != 0.0]
    for subject in (s for s in reporting_subjects(DATA) if args.subject in s.name):
        t1 = subject.read("t1")
        guides = {shift: translated(t1, shift) for shift in shifts}
        psnr = {name: value["psnr"] for name, value in evaluate_subject(
            subject, args.scale, guides, find_model("S", args.scale, True).path,
            find_model("S", args.scale, False).path, args.every).items()}
        at_zero = psnr[(0.0, 0.0, 0.0)]
        print(f"\n{subject.name} x{args.scale}: bicubic {psnr[BICUBIC]:.3f}, no-T1 model {psnr[NO_T1]:.3f}, "
              f"T1 as distributed {at_zero:.3f} dB")
        print("| y \\ x (mm) | " + " | ".join(f"{x:+.1f}" for x in args.in_plane_mm) + " |")
        print("| --- " * (len(args.in_plane_mm) + 1) + "|")
        for y in args.in_plane_mm:
            print(f"| {y:+.1f} | " + " | ".join(f"{psnr[(x, y, 0.0)]:.3f}" for x in args.in_plane_mm) + " |")
        print("along z: " + ", ".join(f"{z:+.1f} mm {psnr[(0.0, 0.0, z)]:.3f}" for z in args.z_mm if z != 0.0))
        best = max(shifts, key=lambda shift: psnr[shift])
        print(f"best {best} mm: {psnr[best]:.3f} dB ({psnr[best] - at_zero:+.3f} over the T1 as distributed; "
              f"the T1 as distributed adds {at_zero - psnr[NO_T1]:+.3f} over the no-T1 model)")


if __name__ == "__main__":
    main()
