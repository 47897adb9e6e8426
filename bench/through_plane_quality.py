"""Through-plane quality per held-out subject: B-spline, the no-T1 model and the guided model with good and bad T1s.

Usage: PYTHONPATH=. python bench/through_plane_quality.py [--guided W] [--no-t1 W] [--factors 4] [--threads 2]
       [--selection [--all-guides] | --registered-only | --clinical] [--adapt-steps 0 300] [--self-ensemble 1 4]
       [--subject NAME] [--oracle-registration] [--thick-axis x|y|z] [--json out.json]
Protocol of CohfTSuperResLib/evaluation/through_plane_cases.py on open_ms mni/patient26 and BraTS-GLI-00000-000
(never trained or selected on): axial thick slices of n mm (box, no gap) from the 1 mm HR T2, restored onto the 1 mm
grid, scored on the coronal reformat over its slices with brain. Default weights: the shipped through-plane models a
run of each factor uses (weights.registry.find_model).
--clinical: the six open_ms clinical studies (real 2-D T2 of 3.3-4 mm axial slices reduced in-plane to 1 mm
pixels, their session's T1; never trained on by the through-plane networks), registered T1 only; their slices are
thick along z already, so the thick slices are simulated in-plane (--thick-axis x or y) and the scored plane is the
axial one: a source of real images for the large factors, where the template below is no yardstick.
--selection: the same on the selection source (templates/mni152_fsl: never trained on, chooses between checkpoints)
with the registered T1 only; with --all-guides also with the moved T1s and another subject's (to choose a network
for how it takes a bad guide too). --registered-only: the reporting subjects with their registered T1 only (the other
slice thicknesses). --adapt-steps: one row per value, each network adapted to the thick T2 for that many steps
first (inference/subject_adaptation.py; 0: as shipped), side by side in one run. --self-ensemble: one row per
value (and adaptation), every network run as a self-ensemble of that many copies (inference/self_ensemble.py; 1:
off). --subject: only the reporting subjects whose name contains NAME. --oracle-registration: one more guide, the T1
registered (inference/registration.py) to the subject's 1 mm T2, the truth, which a user never has: how much the
guided model gives where the T1 sits where the truth says (a diagnostic of the pair's own misregistration, not a
result a run can reach; registering to the thick T2 is what ``register=True`` does). --thick-axis: the voxel axis the
thick slices are simulated along (default z, axial; x: sagittal, y: coronal thick slices): every volume is read with
its axes permuted so that this axis is the last (the same physical images), the guides' moves stay in physical x, y,
z, and the scored reformat is the plane across the first of the other two axes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk
import torch

from CohfTSuperResLib.data.pairs import SELECTION_SOURCE
from CohfTSuperResLib.evaluation.guide_cases import (
    FOREIGN_SOURCE,
    REGISTERED,
    Subject,
    clinical_studies,
    guide_cases,
    reporting_subjects,
)
from CohfTSuperResLib.evaluation.through_plane_cases import (
    BSPLINE,
    NO_T1,
    evaluate_through_plane,
    THROUGH_PLANE_MOVES,
)
from CohfTSuperResLib.imageio.normalize import robust_scale
from CohfTSuperResLib.inference.registration import register_t1
from CohfTSuperResLib.inference.through_plane import network_factor, thick_axis_last
from CohfTSuperResLib.options import THROUGH_PLANE_SCALE
from CohfTSuperResLib.weights.registry import find_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ORACLE = "registered to the 1 mm truth (oracle)"
AXES = ("x", "y", "z")


@dataclass(frozen=True)
class Resliced:
    """A subject whose volumes are read with voxel axis `thick_axis` moved last, where the thick slices are made."""

    subject: Subject
    thick_axis: int = 2

    @property
    def name(self) -> str:
        return self.subject.name

    def read(self, modality: str) -> sitk.Image:
        return sitk.PermuteAxes(self.subject.read(modality), thick_axis_last(self.thick_axis)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guided", type=Path)
    parser.add_argument("--no-t1", type=Path)
    parser.add_argument("--factors", type=int, nargs="+", default=[4])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--selection", action="store_true",
                        help="the selection source (registered T1 only unless --all-guides)")
    parser.add_argument("--all-guides", action="store_true", help="with --selection: the bad guides too")
    parser.add_argument("--registered-only", action="store_true", help="the reporting subjects, registered T1 only")
    parser.add_argument("--clinical", action="store_true",
                        help="the open_ms clinical studies, registered T1 only (with --thick-axis x or y)")
    parser.add_argument("--adapt-steps", type=int, nargs="+", default=[0])
    parser.add_argument("--self-ensemble", type=int, nargs="+", default=[1])
    parser.add_argument("--subject", default="", help="only the reporting subjects whose name contains this")
    parser.add_argument("--oracle-registration", action="store_true",
                        help="add the T1 registered to the 1 mm truth (a diagnostic)")
    parser.add_argument("--thick-axis", choices=AXES, default="z", help="the axis of the simulated thick slices")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    rows = []
    subjects = ([Subject(SELECTION_SOURCE, DATA / SELECTION_SOURCE)] if args.selection
                else clinical_studies(DATA) if args.clinical else reporting_subjects(DATA))
    axis = AXES.index(args.thick_axis)
    subjects = [Resliced(subject, axis) for subject in subjects if args.subject in subject.name]
    for subject in subjects:
        t2, t1 = subject.read("t2"), subject.read("t1")
        if (args.selection and not args.all_guides) or args.registered_only or args.clinical:
            guides = {REGISTERED: t1}
        else:
            name = FOREIGN_SOURCE[subject.name]
            foreign = Resliced(Subject(name, DATA / name), axis).read("t1")
            guides = guide_cases(t1, t2, foreign, THROUGH_PLANE_MOVES)
        if args.oracle_registration:
            guides[ORACLE] = register_t1(t2, t1, robust_scale(sitk.GetArrayViewFromImage(t2))).t1
        for factor in args.factors:
            guided, unguided = (given or find_model("S", THROUGH_PLANE_SCALE, use_t1, network_factor(factor)).path
                                for given, use_t1 in ((args.guided, True), (args.no_t1, False)))
            for steps, copies in itertools.product(args.adapt_steps, args.self_ensemble):
                started = time.time()
                results = evaluate_through_plane(subject, factor, guides, guided, unguided,
                                                 log=lambda line: print(line, flush=True), adapt_steps=steps,
                                                 self_ensemble=copies)
                rows.append({"subject": subject.name, "factor": factor, "thick_axis": args.thick_axis,
                             "adapt_steps": steps, "self_ensemble": copies,
                             "seconds": round(time.time() - started, 1), "guided": str(guided),
                             "no_t1": str(unguided), "results": results})
    names = list(rows[0]["results"])
    print("\n| subject | slices | adapted | self-ensemble | " + " | ".join(names)
          + " | T1 adds | guided - B-spline | seconds |")
    print("|" + " --- |" * (len(names) + 7))
    for row in rows:
        psnr = {name: row["results"][name]["psnr"] for name in names}
        cells = " | ".join(f"{psnr[n]:.3f} / {row['results'][n]['ssim']:.4f}" for n in names)
        print(f"| {row['subject']} | {row['factor']} mm along {row['thick_axis']} | {row['adapt_steps'] or 'no'} | "
              f"{row['self_ensemble']} | {cells} | "
              f"{psnr['registered'] - psnr[NO_T1]:+.3f} | {psnr['registered'] - psnr[BSPLINE]:+.3f} | "
              f"{row['seconds']:.0f} |")
    if args.json:
        first = rows[0]  # the weights of every row where given
        args.json.write_text(json.dumps({"guided": first["guided"], "no_t1": first["no_t1"], "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
