"""The guide check on held-out subjects with good and bad T1s: its verdict, and what each policy gives.

Usage: PYTHONPATH=. python bench/guide_check_cases.py [--scale 4] [--every 4] [--guided W] [--no-t1 W]
       [--cases all|distributed] [--source reporting|selection|clinical] [--register] [--json out.json] [--threads 2]
Protocol of CohfTSuperResLib/evaluation/guide_cases.py (every --every-th slice, LR by k-space truncation, PSNR over
the brain slices against the HR T2) on open_ms mni/patient26 and BraTS-GLI-00000-000 (--source selection: on the
selection source, templates/mni152_fsl, where a threshold may be chosen; clinical: the open_ms clinical studies, real
2-D T2 with their session's T1). Per guide case: the check's
proxy benefit and verdict (inference/guide_check.py: the guided network, --guided or the shipped one, against the
shipped no-T1 network, each reduced back onto the LR grid and compared with the LR), the PSNR of the guided model
with that guide and of the no-T1 model (the networks themselves, check off), and the PSNR the default policy
'auto' gives (the guided result where the check says the T1 helps, else the no-T1 result), and the T1's apparent
shift (inference/guide_check.estimate_shift, the norm in mm). Cases: the T1 as
distributed; moved 1 / 2 / 3 / 5 mm along each voxel axis; rotated 2 / 5 / 10 degrees about the T1's centre (about
the slice axis); flipped left-right; another subject's T1; the T1 of another slab (moved 40 mm along the slice
axis). --register: also the 3 mm / 5 degree case registered first (check off). The last line: what 'auto' gives at
other proxy thresholds (mean and worst of auto - no-T1), from which the threshold is chosen on the selection source,
what the check before 2026-12-06 gave (the reduced-input proxy at +0.6 dB), and what a limit on the apparent shift
would add to the shipped threshold (docs/benchmarks.md, "A second condition, the T1's apparent shift").
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from CohfTSuperResLib.data.patches import brain_slices
from CohfTSuperResLib.data.synthetic_volumes import lr_volume, trim_in_plane
from CohfTSuperResLib.evaluation.evaluate import score
from CohfTSuperResLib.evaluation.guide_cases import AXIS, SOURCES, evaluation_subjects, foreign_guide, foreign_t1
from CohfTSuperResLib.imageio.normalize import robust_scale
from CohfTSuperResLib.inference import super_resolve
from CohfTSuperResLib.inference.geometry import image_stack, translated
from CohfTSuperResLib.inference.guide_check import THRESHOLDS_DB, apparent_shift, check_guide, reduced_input_benefit
from CohfTSuperResLib.inference.input_checks import check_inputs
from CohfTSuperResLib.inference.registration import moved_by, register_t1
from CohfTSuperResLib.options import RunOptions
from CohfTSuperResLib.weights.registry import find_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SWEPT_THRESHOLDS_DB = tuple(np.round(np.arange(0.0, 1.55, 0.1), 1))  # the proxy thresholds the last line compares
WORST_ALLOWED_DB = -0.1  # the rule choosing a threshold: no case of the source below the no-T1 model by more
REDUCED_INPUT_THRESHOLD_DB = 0.6  # the in-plane check's rule before 2026-12-06, compared on the last line
SWEPT_SHIFT_LIMITS_MM = (1.5, 2.0, 2.5, 3.0, float("inf"))  # apparent shifts from which the last line declines a T1


def rotated(image: sitk.Image, degrees: float) -> sitk.Image:
    """The image's content turned by `degrees` about its centre, around its slice axis (geometry only)."""
    centre = image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()])
    axis = np.asarray(image.GetDirection()).reshape(3, 3)[:, AXIS]
    turn = sitk.VersorRigid3DTransform()
    turn.SetCenter(centre)
    turn.SetRotation(tuple(axis), float(np.radians(degrees)))
    return moved_by(image, turn.GetInverse())


def flipped(image: sitk.Image) -> sitk.Image:
    """The image's content mirrored along its voxel axis 0 (left-right), on the same grid."""
    mirrored = sitk.GetImageFromArray(sitk.GetArrayFromImage(image)[:, :, ::-1].copy())
    mirrored.CopyInformation(image)
    return mirrored


def cases(t1: sitk.Image, t2: sitk.Image, foreign: sitk.Image | None, which: str) -> dict[str, sitk.Image]:
    found = {"as distributed": t1}
    if which == "distributed":
        return found
    for millimetres in (1.0, 2.0, 3.0, 5.0):
        for axis, name in enumerate("xyz"):
            move = [0.0, 0.0, 0.0]
            move[axis] = millimetres
            found[f"moved {millimetres:g} mm in {name}"] = translated(t1, tuple(move))
    for degrees in (2.0, 5.0, 10.0):
        found[f"rotated {degrees:g} degrees"] = rotated(t1, degrees)
    found["flipped left-right"] = flipped(t1)
    if foreign is not None:
        found["another subject's T1"] = foreign_guide(foreign, t2)
    move = [0.0, 0.0, 0.0]
    move[AXIS] = 40.0
    found["another slab (40 mm along the slices)"] = translated(t1, tuple(move))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--every", type=int, default=4)
    parser.add_argument("--guided", type=Path)
    parser.add_argument("--no-t1", type=Path)
    parser.add_argument("--cases", choices=("all", "distributed"), default="all")
    parser.add_argument("--source", choices=SOURCES, default="reporting")
    parser.add_argument("--register", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    guided = args.guided or find_model("S", args.scale, True).path
    unguided = args.no_t1 or find_model("S", args.scale, False).path
    rows = []
    print("| subject | guide | proxy benefit dB | T1 used (auto) | guided | no-T1 | auto | auto - no-T1 | "
          "auto - best | reduced-input proxy dB | apparent shift mm |")
    print("|" + " --- |" * 11)
    subjects = evaluation_subjects(args.source, DATA)
    for subject in subjects:
        hr = trim_in_plane(subject.read("t2"), args.scale, AXIS)[:, :, ::args.every]
        hr_stack = image_stack(hr, AXIS)
        reference = robust_scale(hr_stack)
        brain = brain_slices(hr_stack / reference)
        target = hr_stack[brain] / reference
        lr = lr_volume(hr, args.scale, AXIS)

        def psnr_of(guide: sitk.Image | None, weights: Path) -> float:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sr = super_resolve(lr, guide, args.scale, model_path=weights, device="cpu", slice_axis=AXIS,
                                   guide_check="off")
            return score(image_stack(sr, AXIS)[brain] / reference, target)["psnr"]

        no_t1 = psnr_of(None, unguided)
        t1 = subject.read("t1")
        guides = cases(t1, subject.read("t2"), foreign_t1(subject, subjects, DATA), args.cases)
        if args.register:
            move = rotated(translated(t1, (3.0, 0.0, 0.0)), 5.0)
            registration = register_t1(lr, move, robust_scale(sitk.GetArrayViewFromImage(lr)))
            guides["moved 3 mm and rotated 5 degrees, registered"] = registration.t1
            guides["moved 3 mm and rotated 5 degrees"] = move
        for name, guide in guides.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                checked = check_inputs(lr, guide, args.scale, AXIS)
                options = RunOptions(scale=args.scale, device="cpu", model_path=args.guided)
                verdict = check_guide(checked, options)
                reduced, _ = reduced_input_benefit(checked, options)
                shift = float(np.linalg.norm(apparent_shift(checked)))
            with_t1 = psnr_of(guide, guided)
            auto = with_t1 if verdict.helps else no_t1
            best = max(with_t1, no_t1)
            rows.append({"subject": subject.name, "guide": name, "benefit_db": verdict.benefit_db,
                         "helps": verdict.helps, "shift_mm": verdict.shift_mm, "guided": with_t1, "no_t1": no_t1,
                         "auto": auto, "check_seconds": verdict.seconds, "reduced_input_db": reduced,
                         "apparent_shift_mm": shift})
            print(f"| {subject.name} | {name} | {verdict.benefit_db:+.2f} | {'yes' if verdict.helps else 'no'} | "
                  f"{with_t1:.3f} | {no_t1:.3f} | {auto:.3f} | {auto - no_t1:+.3f} | {auto - best:+.3f} | "
                  f"{reduced:+.2f} | {shift:.1f} |", flush=True)
    print(threshold_sweep(rows, args.scale))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


def threshold_sweep(rows: list[dict], scale: int) -> str:
    """What 'auto' would give at other thresholds of the proxy: mean and worst of auto - no-T1 over the cases (dB),
    beside always using the T1 and the better of the two in every case, and the threshold the rule of
    inference/guide_check.THRESHOLDS_DB chooses from them (on the selection source, where it is chosen); then, at
    the shipped threshold of the scale, what a second condition would give: the T1 used only where its apparent
    shift (``guide_check.estimate_shift``, the norm) is under each of SWEPT_SHIFT_LIMITS_MM."""
    gain = np.array([row["guided"] - row["no_t1"] for row in rows])
    proxy = np.array([row["benefit_db"] for row in rows])
    before = np.where(np.array([row["reduced_input_db"] for row in rows]) >= REDUCED_INPUT_THRESHOLD_DB, gain, 0.0)
    cells = [f"always the T1 {gain.mean():+.3f} (worst {gain.min():+.3f})", f"best {np.maximum(gain, 0).mean():+.3f}",
             f"the reduced-input proxy at {REDUCED_INPUT_THRESHOLD_DB:.1f} dB "
             f"{before.mean():+.3f} ({before.min():+.3f})"]
    swept, chosen = threshold_choice(gain, proxy)
    cells += swept
    shift = np.array([row["apparent_shift_mm"] for row in rows])
    kept = proxy >= THRESHOLDS_DB[scale]
    limits = []
    for limit in SWEPT_SHIFT_LIMITS_MM:
        auto = np.where(kept & (shift < limit), gain, 0.0)
        limits.append(f"under {limit:g} mm {auto.mean():+.3f} ({auto.min():+.3f})")
    return (f"auto - no-T1 over {len(rows)} cases, mean (worst): " + "; ".join(cells)
            + f". {chosen} "
            + f"At the shipped threshold (+{THRESHOLDS_DB[scale]:.1f} dB), the T1 used only where its apparent shift "
            + "is " + "; ".join(limits))


def threshold_choice(gain: np.ndarray, proxy: np.ndarray) -> tuple[list[str], str]:
    """Per threshold of SWEPT_THRESHOLDS_DB, the mean and worst of auto - no-T1 over the cases (auto uses the T1 where
    the proxy reaches the threshold; `gain`: guided - no-T1 per case, dB), and the sentence naming the threshold the
    rule chooses: the best mean among those whose worst case is not below WORST_ALLOWED_DB, the highest of equals."""
    cells, allowed = [], []
    for threshold in SWEPT_THRESHOLDS_DB:
        auto = np.where(proxy >= threshold, gain, 0.0)
        cells.append(f"at {threshold:.1f} dB {auto.mean():+.3f} ({auto.min():+.3f})")
        if auto.min() >= WORST_ALLOWED_DB:
            allowed.append((round(float(auto.mean()), 3), threshold))
    chosen = f"{max(allowed)[1]:.1f} dB" if allowed else "none"
    return cells, f"The rule (best mean, worst >= {WORST_ALLOWED_DB} dB, highest of equals) chooses {chosen}."


if __name__ == "__main__":
    main()
