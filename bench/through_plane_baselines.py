"""Through-plane baselines on held-out subjects: thick slices simulated from 1 mm data, restored by interpolation.

Usage: PYTHONPATH=. python bench/through_plane_baselines.py [--factors 2 3 4 5 6] [--json out.json]
Per reporting subject (open_ms mni/patient26, BraTS-GLI-00000-000: never trained or selected on) and factor n:
the HR T2 (1 mm) is averaged into axial slices of n mm (data/degradations.py thick_slices: box profile without
gap, and at 4 mm also a Gaussian profile and a box with a 20 % gap), then brought back onto the 1 mm grid
(inference/geometry.py thin_slice_grid) by linear and by cubic B-spline interpolation along the slice axis.
Scored against the HR T2 on the coronal reformat (the through-plane direction), over the coronal slices with
brain, intensities / the HR T2's 99.5th percentile, PSNR pooled (data range 1) and mean SSIM (Gaussian 11 x 11,
sigma 1.5). These are the baselines the through-plane network has to beat.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import SimpleITK as sitk

from CohfTSuperResLib.data.patches import brain_slices
from CohfTSuperResLib.data.synthetic_volumes import slice_interpolation, thick_slice_volume
from CohfTSuperResLib.evaluation.evaluate import score
from CohfTSuperResLib.evaluation.guide_cases import reporting_subjects
from CohfTSuperResLib.imageio.normalize import robust_scale
from CohfTSuperResLib.inference.geometry import image_stack

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SLICE_AXIS = 2  # axial slices (SimpleITK axis order)
CORONAL = 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factors", type=int, nargs="+", default=[2, 3, 4, 5, 6])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    cases = [(n, "box", 0.0) for n in args.factors] + [(4, "gaussian", 0.0), (4, "box", 0.2)]
    rows = []
    print("| subject | slices | profile | gap | linear PSNR / SSIM | cubic B-spline PSNR / SSIM |")
    print("|" + " --- |" * 6)
    for subject in reporting_subjects(DATA):
        hr = subject.read("t2")
        reference = robust_scale(sitk.GetArrayViewFromImage(hr))
        for factor, profile, gap in cases:
            thick = thick_slice_volume(hr, factor, SLICE_AXIS, profile, gap)
            kept = factor * thick.GetSize()[SLICE_AXIS]
            truth = image_stack(sitk.RegionOfInterest(hr, [*hr.GetSize()[:2], kept], [0, 0, 0]), CORONAL) / reference
            brain = brain_slices(truth)
            scores = {name: score(image_stack(slice_interpolation(thick, factor, SLICE_AXIS, interpolator), CORONAL)
                                  [brain] / reference, truth[brain])
                      for name, interpolator in (("linear", sitk.sitkLinear), ("bspline", sitk.sitkBSpline))}
            rows.append({"subject": subject.name, "factor": factor, "profile": profile, "gap": gap, **scores})
            print(f"| {subject.name} | {factor} mm | {profile} | {gap:.0%} | {scores['linear']['psnr']:.3f} / "
                  f"{scores['linear']['ssim']:.4f} | {scores['bspline']['psnr']:.3f} / "
                  f"{scores['bspline']['ssim']:.4f} |",
                  flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
