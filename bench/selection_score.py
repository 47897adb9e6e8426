"""Score in-plane checkpoints on the whole selection volume, the number a candidate is chosen by.

Usage: PYTHONPATH=. python bench/selection_score.py W.safetensors ... [--every 4] [--threads 1] [--json out.json]

The selection source (``data/pairs.SELECTION_SOURCE``, a template never trained on) through the protocol of
``evaluation/guide_cases.evaluate_subject`` (k-space LR of every ``--every``-th axial slice, the guide check off).
A guided checkpoint scores the mean PSNR of the registered T1 and the T1 moved 1 mm in x and y (the two guides the
pack validation uses too); a no-T1 checkpoint its PSNR without a guide. Scale and T1 use come from each file's header;
the shipped model of the same kind is scored first, as the number to beat. No reporting subject is read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from CohfTSuperResLib.evaluation.guide_cases import (MOVED_1MM, NO_T1, REGISTERED, Subject, evaluate_subject,
                                                     evaluation_subjects, guide_cases)
from CohfTSuperResLib.weights.registry import find_model
from CohfTSuperResLib.weights.storage import load_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def selection_score(subject: Subject, weights: Path, every: int) -> dict[str, float]:
    """{case: PSNR} of one checkpoint on the selection volume, with its 'score'."""
    config = load_model(weights).config
    if not config.use_t1:
        metrics = evaluate_subject(subject, config.scale, {}, None, weights, every)
        return {NO_T1: metrics[NO_T1]["psnr"], "score": metrics[NO_T1]["psnr"]}
    guides = guide_cases(subject.read("t1"), subject.read("t2"), None)
    guides = {name: guides[name] for name in (REGISTERED, MOVED_1MM)}
    metrics = evaluate_subject(subject, config.scale, guides, weights, find_model("S", config.scale, False).path, every)
    psnr = {name: metrics[name]["psnr"] for name in guides}
    return {**psnr, "score": sum(psnr.values()) / len(psnr)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", type=Path, nargs="+")
    parser.add_argument("--every", type=int, default=4, help="keep every n-th slice (1: all)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    subjects = evaluation_subjects("selection", DATA)
    if not subjects:
        raise SystemExit(f"the selection source is not under {DATA}")
    subject = subjects[0]
    first = load_model(args.weights[0]).config
    shipped = find_model("S", first.scale, first.use_t1).path
    rows = []
    for weights in [shipped, *[path for path in args.weights if path.resolve() != shipped.resolve()]]:
        result = selection_score(subject, weights, args.every)
        rows.append({"weights": str(weights), "every": args.every, **result})
        cases = ", ".join(f"{name} {value:.3f}" for name, value in result.items() if name != "score")
        print(f"{weights}: score {result['score']:.3f} dB ({cases})", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
