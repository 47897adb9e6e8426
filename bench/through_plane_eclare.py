"""ECLARE (self-supervised, unguided) beside the cubic B-spline on the through-plane protocol, per held-out subject.

Usage: PYTHONPATH=. python bench/through_plane_eclare.py --eclare /path/to/venv/bin/run-eclare [--n-patches 25600]
       [--factor 4] [--threads 1] [--subject NAME] [--keep DIR] [--json out.json]
ECLARE (PyPI `eclare`, GPL-3.0) is never imported: it runs as its own command from its own environment (it pins
scipy 1.11.4), e.g. `python -m venv eclare-venv && eclare-venv/bin/pip install torch==2.13.0 eclare==1.0.1`.
The protocol of CohfTSuperResLib/evaluation/through_plane_cases.py: axial box slices of n mm (no gap) from the 1 mm
HR T2 of open_ms mni/patient26 and BraTS-GLI-00000-000, written as NIfTI; ECLARE is told the slice profile
(`--relative-slice-thickness n --relative-slice-profile-type boxcar`, so its ESPRESO profile estimation is skipped)
and trains its network on the volume for --n-patches patches (its default, 1,000,000, is 7,813 steps of 128);
its output, resampled onto the 1 mm truth's grid where the grids differ, is scored on the coronal reformat as the
B-spline is.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import SimpleITK as sitk

from CohfTSuperResLib.data.synthetic_volumes import slice_interpolation
from CohfTSuperResLib.evaluation.guide_cases import reporting_subjects
from CohfTSuperResLib.evaluation.through_plane_cases import BSPLINE, THICK_AXIS, CoronalScorer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ECLARE = "ECLARE"


def run_eclare(command: Path, thick: sitk.Image, factor: int, n_patches: int, threads: int, folder: Path) -> sitk.Image:
    """ECLARE's restoration of a thick-slice volume, run as its own process with `threads` torch threads."""
    source = folder / "thick.nii.gz"
    sitk.WriteImage(thick, str(source))
    environment = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    subprocess.run([str(command), "--in-fpath", str(source), "--out-dir", str(folder), "--n-patches", str(n_patches),
                    "--relative-slice-thickness", str(factor), "--relative-slice-profile-type", "boxcar",
                    "--gpu-id", "-1"], check=True, env=environment)
    return sitk.ReadImage(str(folder / "thick_eclare.nii.gz"), sitk.sitkFloat32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eclare", type=Path, required=True, help="the run-eclare command of its own environment")
    parser.add_argument("--n-patches", type=int, default=25600)
    parser.add_argument("--factor", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--subject", default="", help="only the reporting subjects whose name contains this")
    parser.add_argument("--keep", type=Path, help="keep ECLARE's inputs and outputs in this folder")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    for subject in [s for s in reporting_subjects(DATA) if args.subject in s.name]:
        case = CoronalScorer(subject, args.factor, log=lambda line: print(line, flush=True))
        results = {BSPLINE: case.score(BSPLINE, slice_interpolation(case.thick, args.factor, THICK_AXIS))}
        with tempfile.TemporaryDirectory() as scratch:
            folder = args.keep / subject.name.replace("/", "_") if args.keep else Path(scratch)
            folder.mkdir(parents=True, exist_ok=True)
            started = time.time()
            restored = run_eclare(args.eclare, case.thick, args.factor, args.n_patches, args.threads, folder)
            seconds = time.time() - started
        results[ECLARE] = case.score(ECLARE, restored)
        rows.append({"subject": subject.name, "factor": args.factor, "n_patches": args.n_patches,
                     "eclare_seconds": round(seconds, 1), "results": results})
    print(f"\n| subject | slices | ECLARE patches | {BSPLINE} | {ECLARE} | ECLARE - B-spline | ECLARE seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        bspline, eclare = row["results"][BSPLINE], row["results"][ECLARE]
        print(f"| {row['subject']} | {row['factor']} mm | {row['n_patches']:,} | {bspline['psnr']:.3f} / "
              f"{bspline['ssim']:.4f} | {eclare['psnr']:.3f} / {eclare['ssim']:.4f} | "
              f"{eclare['psnr'] - bspline['psnr']:+.3f} | {row['eclare_seconds']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps({"threads": args.threads, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
