"""The through-plane guide check on held-out subjects with good and bad T1s: its verdict, and what 'auto' gives.

Usage: PYTHONPATH=.:bench python bench/through_plane_guide_check_cases.py [--factors 4] [--source reporting|selection]
       [--threads 2] [--json out.json]
Protocol of CohfTSuperResLib/evaluation/through_plane_cases.py (axial thick slices of n mm, box profile, from the
1 mm T2 of open_ms mni/patient26 and BraTS-GLI-00000-000, or with --source selection of the selection source,
templates/mni152_fsl, where a threshold may be chosen; PSNR on the coronal reformat over its slices with brain)
with the shipped through-plane models and the guide check off. Per guide case: the check's two proxies (along the
slices, in-plane), their sum and whether 'auto' uses the T1 (inference/through_plane_guide_check.py: where the sum
reaches the threshold, never where the run declines it unchecked), the PSNR of the guided model and of the no-T1
model, and the PSNR 'auto' gives (the guided result where it uses the T1, else the no-T1 result). Cases: the T1 as
distributed; moved 1 mm in z, 1 mm in x and y, 2 mm in z, 2 mm in x; rotated 3 degrees about the slice axis; another
subject's T1. The last line per factor: what 'auto' would give at other thresholds of the summed proxy
(THRESHOLD_DB), and the one the rule of bench/guide_check_cases.py chooses.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import torch
from guide_check_cases import rotated, threshold_choice

from CohfTSuperResLib.evaluation.guide_cases import SOURCES, evaluation_subjects, foreign_t1, guide_cases
from CohfTSuperResLib.evaluation.through_plane_cases import NO_T1, THICK_AXIS, evaluate_through_plane
from CohfTSuperResLib.data.synthetic_volumes import thick_slice_volume
from CohfTSuperResLib.inference.input_checks import check_inputs
from CohfTSuperResLib.inference.through_plane_guide_check import measure_through_plane_guide, unchecked_reason
from CohfTSuperResLib.options import RunOptions

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MOVES = {"moved 1 mm in z": (0.0, 0.0, 1.0), "moved 1 mm in x and y": (1.0, 1.0, 0.0),
         "moved 2 mm in z": (0.0, 0.0, 2.0), "moved 2 mm in x": (2.0, 0.0, 0.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factors", type=int, nargs="+", default=[4])
    parser.add_argument("--source", choices=SOURCES[:2], default="reporting")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    rows = []
    print("| subject | slices | guide | proxy along the slices dB | in-plane proxy dB | sum dB | T1 used (auto) | "
          "guided | no-T1 | auto - no-T1 |")
    print("|" + " --- |" * 10)
    subjects = evaluation_subjects(args.source, DATA)
    for subject in subjects:
        t2, t1 = subject.read("t2"), subject.read("t1")
        guides = guide_cases(t1, t2, foreign_t1(subject, subjects, DATA), MOVES)
        guides["rotated 3 degrees"] = rotated(t1, 3.0)
        for factor in args.factors:
            thick = thick_slice_volume(t2, factor, THICK_AXIS)
            results = evaluate_through_plane(subject, factor, guides, None, None)
            no_t1 = results[NO_T1]["psnr"]
            for name, guide in guides.items():
                options = RunOptions(device="cpu", mode="through-plane", slice_spacing=1.0)
                checked = check_inputs(thick, guide, 2, THICK_AXIS, options.mode, 1.0)
                verdict = measure_through_plane_guide(checked, options)  # also where the run declines it unchecked
                guided = results[name]["psnr"]
                used = verdict.helps and unchecked_reason(checked) is None
                auto = guided if used else no_t1
                along, in_plane = (value for _name, value in verdict.parts)
                rows.append({"subject": subject.name, "factor": factor, "guide": name, "benefit_db": verdict.benefit_db,
                             "along_db": along, "in_plane_db": in_plane, "helps": verdict.helps, "used": used,
                             "guided": guided, "no_t1": no_t1, "auto": auto, "check_seconds": verdict.seconds})
                print(f"| {subject.name} | {factor} mm | {name} | {along:+.2f} | {in_plane:+.2f} | "
                      f"{verdict.benefit_db:+.2f} | {'yes' if used else 'no'} | {guided:.3f} | {no_t1:.3f} | "
                      f"{auto - no_t1:+.3f} |", flush=True)
    for factor in args.factors:
        cases = [row for row in rows if row["factor"] == factor]
        swept, chosen = threshold_choice(np.array([row["guided"] - row["no_t1"] for row in cases]),
                                         np.array([row["benefit_db"] for row in cases]))
        print(f"{factor} mm, auto - no-T1 over {len(cases)} cases, mean (worst): " + "; ".join(swept) + f". {chosen}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
