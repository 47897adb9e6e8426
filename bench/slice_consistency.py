"""Consistency with the thick slices (inference/slice_consistency.py): each slice profile it can assume, against the
slice profile the thick slices were really made with, side by side on the same restorations.

Usage: PYTHONPATH=. python bench/slice_consistency.py [--selection] [--factor 4] [--threads 1] [--json out.json]
Protocol of CohfTSuperResLib/evaluation/through_plane_cases.py (axial thick slices of n mm from the 1 mm HR T2, the
coronal reformat over its slices with brain, the guide check off), once for each true slice profile the networks were
trained with (box and Gaussian, gaps 0 and 0.2 of the spacing). The no-T1 network and the guided one with the
registered T1 run once per true profile without the consistency step ('off'); each assumed profile is then applied
to those same thin slices (``consistent_thin_slices``, the run's last step, so this equals a run with it) and scored.
--selection: the selection source (templates/mni152_fsl), where the default profile is chosen: the one whose worst
gain over 'off' across true profiles and both networks is highest; otherwise the reporting subjects (open_ms
mni/patient26, BraTS-GLI-00000-000), never trained or selected on.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import SimpleITK as sitk
import torch

from CohfTSuperResLib.data.pairs import SELECTION_SOURCE
from CohfTSuperResLib.evaluation.guide_cases import Subject, reporting_subjects
from CohfTSuperResLib.evaluation.through_plane_cases import THICK_AXIS, CoronalScorer
from CohfTSuperResLib.inference.engine import super_resolve
from CohfTSuperResLib.inference.slice_consistency import consistent_thin_slices
from CohfTSuperResLib.inference.through_plane import network_factor
from CohfTSuperResLib.options import THROUGH_PLANE_SCALE
from CohfTSuperResLib.weights.registry import find_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TRUE_PROFILES = (("box", 0.0), ("box", 0.2), ("gaussian", 0.0), ("gaussian", 0.2))
ASSUMED_PROFILES = (("box", 0.0), ("box", 0.2), ("gaussian", 0.0), ("gaussian", 0.2), ("gaussian", 0.3))


def label(profile: str, gap: float) -> str:
    return f"{profile} {gap:g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--selection", action="store_true", help="the selection source instead of the reporting ones")
    parser.add_argument("--factor", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    subjects = [Subject(SELECTION_SOURCE, DATA / SELECTION_SOURCE)] if args.selection else reporting_subjects(DATA)
    rows = []
    for subject in subjects:
        t1 = subject.read("t1")
        for true_profile, true_gap in TRUE_PROFILES:
            case = CoronalScorer(subject, args.factor, true_profile, true_gap)
            thick = sitk.GetArrayFromImage(case.thick)  # (slices, rows, columns): the thick axis first
            for network, guide in (("no-T1", None), ("registered T1", t1)):
                started = time.time()
                weights = find_model("S", THROUGH_PLANE_SCALE, guide is not None, network_factor(args.factor)).path
                thin = super_resolve(case.thick, guide, mode="through-plane", model_path=weights, device="cpu",
                                     slice_axis=THICK_AXIS, slice_spacing=1.0, guide_check="off", slice_profile="off")
                psnr = {"off": case.score("off", thin)["psnr"]}
                for profile, gap in ASSUMED_PROFILES:
                    voxels = consistent_thin_slices(sitk.GetArrayFromImage(thin), thick, profile, gap)
                    image = sitk.GetImageFromArray(voxels)
                    image.CopyInformation(thin)
                    psnr[label(profile, gap)] = case.score(label(profile, gap), image)["psnr"]
                rows.append({"subject": subject.name, "true": label(true_profile, true_gap), "network": network,
                             "psnr": psnr, "seconds": round(time.time() - started, 1)})
                print(json.dumps(rows[-1]), flush=True)
    assumed = [label(*choice) for choice in ASSUMED_PROFILES]
    print(f"\n| subject | true profile | network | off | {' | '.join(assumed)} |")
    print("|" + " --- |" * (len(assumed) + 4))
    for row in rows:
        off = row["psnr"]["off"]
        cells = " | ".join(f"{row['psnr'][name] - off:+.3f}" for name in assumed)
        print(f"| {row['subject']} | {row['true']} | {row['network']} | {off:.3f} | {cells} |")
    worst = {name: min(row["psnr"][name] - row["psnr"]["off"] for row in rows) for name in assumed}
    print("\nworst gain over 'off': " + ", ".join(f"{name} {value:+.3f}" for name, value in worst.items()))
    print(f"highest worst gain: {max(worst, key=worst.__getitem__)}")
    if args.json:
        args.json.write_text(json.dumps({"factor": args.factor, "rows": rows, "worst": worst}, indent=1))


if __name__ == "__main__":
    main()
