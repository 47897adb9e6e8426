"""Self-ensemble in-plane, per held-out subject: PSNR / SSIM and time of 1, 4 and 8 copies, side by side in one run.

Usage: PYTHONPATH=. python bench/self_ensemble.py [--scales 2 3 4] [--copies 1 4 8] [--every 4] [--threads 1]
       [--json out.json]
Protocol of CohfTSuperResLib/evaluation/guide_cases.py (open_ms mni/patient26 and BraTS-GLI-00000-000, never trained
or selected on; k-space LR of every n-th axial slice; the guide check off), the shipped models of each scale: bicubic,
the no-T1 model and the guided model with the T1 as distributed, each run as a self-ensemble of every count of
--copies (inference/self_ensemble.py). Seconds: the whole evaluation of the count (reading, LR synthesis, bicubic and
both networks; the networks take most of it), and the ratio to that of the first count.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import torch

from CohfTSuperResLib.evaluation.guide_cases import BICUBIC, NO_T1, REGISTERED, evaluate_subject, reporting_subjects
from CohfTSuperResLib.weights.registry import find_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--copies", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--every", type=int, default=4, help="keep every n-th slice (1: all)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    rows = []
    print("| subject | x | copies | bicubic | no-T1 | with T1 | T1 - bicubic | gain over 1 copy (no-T1 / T1) "
          "| seconds (ratio) |")
    print("|" + " --- |" * 9)
    for scale in args.scales:
        guided, unguided = find_model("S", scale, True).path, find_model("S", scale, False).path
        for subject in reporting_subjects(DATA):
            first = None
            for copies in args.copies:
                started = time.perf_counter()
                metrics = evaluate_subject(subject, scale, {REGISTERED: subject.read("t1")}, guided, unguided,
                                           args.every, self_ensemble=copies)
                seconds = time.perf_counter() - started
                first = first or (metrics, seconds)
                rows.append({"subject": subject.name, "scale": scale, "copies": copies, "every": args.every,
                             "seconds": round(seconds, 1), "metrics": metrics})
                psnr = {name: value["psnr"] for name, value in metrics.items()}
                base = {name: value["psnr"] for name, value in first[0].items()}
                print(f"| {subject.name} | {scale} | {copies} | {psnr[BICUBIC]:.3f} | "
                      f"{psnr[NO_T1]:.3f} / {metrics[NO_T1]['ssim']:.4f} | "
                      f"{psnr[REGISTERED]:.3f} / {metrics[REGISTERED]['ssim']:.4f} | "
                      f"{psnr[REGISTERED] - psnr[BICUBIC]:+.3f} | {psnr[NO_T1] - base[NO_T1]:+.3f} / "
                      f"{psnr[REGISTERED] - base[REGISTERED]:+.3f} | {seconds:.0f} ({seconds / first[1]:.1f}) |",
                      flush=True)
    if args.json:
        args.json.write_text(json.dumps({"cpu_threads": args.threads, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
