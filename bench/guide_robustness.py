"""Per held-out subject of other sources: what the T1 guide adds, and what a moved, foreign or absent T1 costs.

Usage: PYTHONPATH=. python bench/guide_robustness.py [--guided W.safetensors ...] [--no-t1 W.safetensors ...]
       [--scales 2 3 4] [--every 1] [--json out.json] [--threads 2] [--source reporting|selection|clinical]
Without --guided: the shipped guided model of each scale; without --no-t1: the shipped no-T1 model of the
same scale. Protocol: CohfTSuperResLib/evaluation/guide_cases.py (subjects never used for training or selection:
open_ms mni/patient26 and BraTS-GLI-00000-000; --source clinical: the six open_ms clinical studies, real 2-D T2 with
the T1 of their session). Prints one row per subject and scale: PSNR of bicubic,
the no-T1 model and each guide case, then the T1's benefit (registered - no-T1) and each case's margin
over the no-T1 model.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from CohfTSuperResLib.evaluation.guide_cases import (BICUBIC, NO_T1, REGISTERED, SOURCES, evaluate_subject,
                                                     evaluation_subjects, foreign_t1, guide_cases)
from CohfTSuperResLib.weights.registry import find_model
from CohfTSuperResLib.weights.storage import load_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guided", type=Path, nargs="*", default=[], help="guided weights (scale from the header)")
    parser.add_argument("--no-t1", type=Path, nargs="*", default=[], help="no-T1 weights (scale from the header)")
    parser.add_argument("--scales", type=int, nargs="*", default=[2, 3, 4])
    parser.add_argument("--every", type=int, default=1, help="keep every n-th slice (1: all)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--source", choices=SOURCES, default="reporting",
                        help="clinical: the open_ms clinical studies (real 2-D T2 reduced to 1 mm pixels, their T1 of "
                             "3 mm slices registered through the FLAIR; evaluation/guide_cases.ClinicalStudy)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    guided = {load_model(path).config.scale: path for path in args.guided}
    unguided = {load_model(path).config.scale: path for path in args.no_t1}
    scales = sorted(guided) if guided else args.scales
    rows = []
    subjects = evaluation_subjects(args.source, DATA)
    print("| subject | x | bicubic | no-T1 | " + " | ".join(["registered", "moved 1 mm x,y", "moved 3 mm x", "foreign"])
          + " | T1 benefit | moved 1 mm vs no-T1 | foreign vs no-T1 |")
    print("|" + " --- |" * 11)
    for scale in scales:
        model = guided.get(scale, find_model("S", scale, True).path)
        no_t1 = unguided.get(scale, find_model("S", scale, False).path)
        for subject in subjects:
            guides = guide_cases(subject.read("t1"), subject.read("t2"), foreign_t1(subject, subjects, DATA))
            metrics = evaluate_subject(subject, scale, guides, model, no_t1, args.every)
            p = {name: value["psnr"] for name, value in metrics.items()}
            cases = [name for name in guides]
            rows.append({"subject": subject.name, "scale": scale, "model": str(model), "no_t1_model": str(no_t1),
                         "every": args.every, "metrics": metrics})
            print(f"| {subject.name} | {scale} | {p[BICUBIC]:.3f} | {p[NO_T1]:.3f} | "
                  + " | ".join(f"{p[name]:.3f}" for name in cases)
                  + f" | {p[REGISTERED] - p[NO_T1]:+.3f} | {p[cases[1]] - p[NO_T1]:+.3f} | "
                  f"{p[cases[-1]] - p[NO_T1]:+.3f} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
