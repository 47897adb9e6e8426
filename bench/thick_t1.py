"""What a T1 acquired in thick axial slices leaves of the T1's benefit, in-plane and through-plane.

Usage: PYTHONPATH=.:bench python bench/thick_t1.py [--subject NAME] [--thickness-mm 3 5 7] [--moved]
       [--oracle-registration] [--scales 3 4] [--factor 4] [--every 8] [--threads 1] [--json out.json]
The BraTS case's native T1 (`t1n`) was acquired in thick axial slices (bench/axis_detail.py: little of its
in-plane detail along z) and gives the guided models little there. This asks whether that alone explains it: each
reporting subject's T1 as distributed and the same T1 made thick-sliced along z (box averages of n mm, the 1 mm grid
restored by linear interpolation: a 2-D T1 resampled onto the T2's grid), each measured beside the no-T1 model in
the same run, the guide check off (the networks themselves); with --moved, each of these T1s also moved 1 mm in x and
in y (a physical translation, as evaluation/guide_cases.py moves it: the data README's registration puts the BraTS T1
about a millimetre off its T2); with --oracle-registration, one more guide: the T1 as distributed registered rigidly
(inference/registration.py) to the subject's 1 mm T2, the truth no user has (is the pair's own alignment the limit?):
- in-plane, the protocol of evaluation/guide_cases.py (every `every`-th axial slice, k-space LR at each scale);
- through-plane, the protocol of evaluation/through_plane_cases.py (axial box slices of `factor` mm, coronal
  reformat), with the networks of that factor.
Each row also gives the T1's detail along z (bench/axis_detail.py's ratio z / mean(x, y)) and, per mode, whether
the default guide check keeps that T1 ('kept') or runs the no-T1 model ('declined'): the in-plane check on the same
LR volume (inference/guide_check.py), the through-plane one on the same thick volume
(inference/through_plane_guide_check.py). PSNR in dB.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from axis_detail import second_difference_energy
from through_plane_quality import ORACLE

from CohfTSuperResLib.data.synthetic_volumes import lr_volume, thick_slice_volume, trim_in_plane
from CohfTSuperResLib.evaluation.guide_cases import (
    AXIS,
    IN_PLANE_MOVES,
    MOVED_1MM,
    NO_T1,
    Subject,
    evaluate_subject,
    reporting_subjects,
)
from CohfTSuperResLib.evaluation.through_plane_cases import (
    THICK_AXIS,
    evaluate_through_plane,
)
from CohfTSuperResLib.imageio.normalize import robust_scale
from CohfTSuperResLib.inference.geometry import translated
from CohfTSuperResLib.inference.guide_check import check_guide
from CohfTSuperResLib.inference.input_checks import check_inputs
from CohfTSuperResLib.inference.registration import register_t1
from CohfTSuperResLib.inference.through_plane import network_factor
from CohfTSuperResLib.inference.through_plane_guide_check import check_through_plane_guide
from CohfTSuperResLib.options import THROUGH_PLANE_SCALE, RunOptions
from CohfTSuperResLib.weights.registry import find_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
AS_DISTRIBUTED = "as distributed"


def thick_axial(t1: sitk.Image, thickness_mm: int) -> sitk.Image:
    """The T1 averaged into axial slices of `thickness_mm` voxels (1 mm grids) and put back on its own grid,
    linearly between slice centres (the nearest slice beyond the first and last centre)."""
    thick = thick_slice_volume(t1, thickness_mm, THICK_AXIS)
    return sitk.Resample(thick, t1, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32, True)


def z_detail(image: sitk.Image) -> float:
    """Detail along z as a ratio to the mean of x and y (about 1 for a volume acquired in thin slices)."""
    x, y, z = second_difference_energy(sitk.GetArrayFromImage(image).astype(np.float64))
    return z / ((x + y) / 2)


def measure(subject: Subject, thicknesses: list[int], moved: bool, oracle: bool, scales: list[int], factor: int,
            every: int) -> dict:
    """{guide name: {'z detail', 'x<s>' and 'through-plane': {no-T1, guided, kept}}} of one subject."""
    t1, t2 = subject.read("t1"), subject.read("t2")
    guides = {AS_DISTRIBUTED: t1, **{f"{mm} mm axial slices": thick_axial(t1, mm) for mm in thicknesses}}
    if moved:
        guides.update({f"{name}, {MOVED_1MM}": translated(guide, IN_PLANE_MOVES[MOVED_1MM])
                       for name, guide in list(guides.items())})
    if oracle:
        guides[ORACLE] = register_t1(t2, t1, robust_scale(sitk.GetArrayViewFromImage(t2))).t1
    rows: dict[str, dict] = {name: {"z detail": z_detail(guide)} for name, guide in guides.items()}
    for scale in scales:
        psnr = {case: value["psnr"] for case, value in evaluate_subject(
            subject, scale, guides, find_model("S", scale, True).path, find_model("S", scale, False).path, every,
            log=print).items()}
        lr = lr_volume(trim_in_plane(t2, scale, AXIS)[:, :, ::every], scale, AXIS)  # evaluate_subject's input
        for name, guide in guides.items():
            kept = check_guide(check_inputs(lr, guide, scale, AXIS), RunOptions(scale=scale, device="cpu")).helps
            rows[name][f"x{scale}"] = {"no-T1": psnr[NO_T1], "guided": psnr[name], "kept": kept}
    guided, unguided = (find_model("S", THROUGH_PLANE_SCALE, use_t1, network_factor(factor)).path
                        for use_t1 in (True, False))
    psnr = {case: value["psnr"] for case, value in evaluate_through_plane(
        subject, factor, guides, guided, unguided, log=print).items()}
    thick = thick_slice_volume(t2, factor, THICK_AXIS)  # evaluate_through_plane's input
    options = RunOptions(device="cpu", mode="through-plane", slice_spacing=1.0)
    for name, guide in guides.items():
        verdict = check_through_plane_guide(check_inputs(thick, guide, 2, THICK_AXIS, options.mode, 1.0), options)
        rows[name]["through-plane"] = {"no-T1": psnr[NO_T1], "guided": psnr[name], "kept": verdict.helps}
    return rows


def table(results: dict[str, dict], scales: list[int], factor: int) -> str:
    columns = [f"x{scale}" for scale in scales] + ["through-plane"]
    titles = [f"in-plane x{scale}" for scale in scales] + [f"through-plane {factor} mm"]
    lines = ["| subject | T1 | z detail | " + " | ".join(f"{title}: no-T1 / guided / T1 adds (check)"
                                                         for title in titles)
             + " |", "| --- | --- | --- | " + " | ".join("---" for _ in titles) + " |"]
    for subject, rows in results.items():
        for name, row in rows.items():
            cells = [f"{row[c]['no-T1']:.3f} / {row[c]['guided']:.3f} / {row[c]['guided'] - row[c]['no-T1']:+.3f} "
                     f"({'kept' if row[c]['kept'] else 'declined'})" for c in columns]
            lines.append(f"| {subject.split('/')[-1]} | {name} | {row['z detail']:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subject", default="", help="only the reporting subjects whose name contains this")
    parser.add_argument("--thickness-mm", type=int, nargs="+", default=[3, 5, 7])
    parser.add_argument("--moved", action="store_true", help="also each T1 moved 1 mm in x and in y")
    parser.add_argument("--oracle-registration", action="store_true",
                        help="also the T1 registered to the subject's 1 mm T2 (the truth)")
    parser.add_argument("--scales", type=int, nargs="+", default=[3, 4])
    parser.add_argument("--factor", type=int, default=4)
    parser.add_argument("--every", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    subjects = [s for s in reporting_subjects(DATA) if args.subject in s.name]
    if not subjects:
        parser.error(f"no reporting subject matching {args.subject!r} under {DATA}")
    results = {s.name: measure(s, args.thickness_mm, args.moved, args.oracle_registration, args.scales, args.factor,
                               args.every) for s in subjects}
    print(table(results, args.scales, args.factor))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
