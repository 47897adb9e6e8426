"""Through-plane figures (coronal and sagittal reformats) and the cost of a run beside the B-spline, side by side.

Usage: PYTHONPATH=. python bench/through_plane_figures.py [--guided W] [--no-t1 W] [--study patient01_study1]
       [--slice-spacing 1.0] [--threads 2] [--out docs/images] [--clinical-only]
Held-out subjects (open_ms mni/patient26, BraTS-GLI-00000-000): axial 4 mm box slices made from the 1 mm T2, the
middle coronal and the middle sagittal slice of: the thick slices (nearest), the cubic B-spline, the no-T1 model, the
guided model (default: the shipped ones a run of that factor uses), the 1 mm truth (through_plane_<subject>.png,
through_plane_<subject>_sagittal.png). One open_ms clinical study (a real 2-D T2 of thick slices and its T1, no
truth): the thick slices, the B-spline and the guided model on the thin grid of --slice-spacing
(through_plane_clinical.png, through_plane_clinical_sagittal.png), with the seconds and peak memory of each. Every
panel on the truth's (clinical: the input's) intensity window. Prints the CPU and the torch threads.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from CohfTSuperResLib.data.synthetic_volumes import slice_interpolation, thick_slice_volume
from CohfTSuperResLib.evaluation.demo import caption
from CohfTSuperResLib.evaluation.guide_cases import reporting_subjects
from CohfTSuperResLib.imageio.normalize import robust_scale
from CohfTSuperResLib.imageio.volumes import write_png
from CohfTSuperResLib.inference.engine import super_resolve
from CohfTSuperResLib.inference.geometry import image_stack
from CohfTSuperResLib.inference.input_checks import through_plane_factor

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SAGITTAL = 0
CORONAL = 1
THICK_AXIS = 2
VIEWS = {"": CORONAL, "_sagittal": SAGITTAL}  # file name suffix: the voxel axis across which the reformat is cut
PANEL_HEIGHT = 300


def panel(image: sitk.Image, view: int, top: float) -> np.ndarray:
    """The middle slice across voxel axis `view` (coronal: 1, sagittal: 0) of an image, in 8 bits on [0, top], rows
    from head to foot, resized to PANEL_HEIGHT rows keeping the physical aspect ratio (nearest neighbour)."""
    pixels = image_stack(image, view)[image.GetSize()[view] // 2][::-1]  # (k, in-plane axis): superior first
    spacing_k, spacing_i = image.GetSpacing()[THICK_AXIS], image.GetSpacing()[1 - view]
    rows = np.linspace(0, pixels.shape[0] - 1, PANEL_HEIGHT).round().astype(int)
    width = int(round(PANEL_HEIGHT * pixels.shape[1] * spacing_i / (pixels.shape[0] * spacing_k)))
    cols = np.linspace(0, pixels.shape[1] - 1, width).round().astype(int)
    return (np.clip(pixels[np.ix_(rows, cols)] / top, 0, 1) * 255).round().astype(np.uint8)


def figure(panels: dict[str, np.ndarray]) -> np.ndarray:
    """The panels side by side, each under its title, separated by grey lines."""
    columns = []
    for title, pixels in panels.items():
        bar = caption([title], pixels.shape[1])
        columns += [np.concatenate([bar, pixels]), np.full((bar.shape[0] + pixels.shape[0], 2), 128, np.uint8)]
    return np.concatenate(columns[:-1], axis=1)


def write_views(panels: dict[str, sitk.Image], top: float, folder: Path, name: str) -> None:
    """One PNG per view of VIEWS: the panels' middle slices side by side."""
    for suffix, view in VIEWS.items():
        path = write_png(figure({title: panel(image, view, top) for title, image in panels.items()}),
                         folder / f"{name}{suffix}.png")
        print(f"wrote {path}")


def timed(run):
    started = time.monotonic()
    result = run()
    return result, time.monotonic() - started


def main() -> None:
    from benchmark import cpu_name, peak_rss

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guided", type=Path)
    parser.add_argument("--no-t1", type=Path)
    parser.add_argument("--study", default="patient01_study1")
    parser.add_argument("--slice-spacing", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    parser.add_argument("--clinical-only", action="store_true", help="only the clinical study")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    guided, unguided = args.guided, args.no_t1  # None: the shipped models a run of that factor uses
    print(f"# CPU: {cpu_name()}; {args.threads} torch threads; torch {torch.__version__}")

    def through_plane(thick: sitk.Image, t1: sitk.Image | None, spacing: float) -> sitk.Image:
        return super_resolve(thick, t1, mode="through-plane", model_path=guided if t1 is not None else unguided,
                             device="cpu", slice_axis=THICK_AXIS, slice_spacing=spacing, guide_check="off")

    for subject in [] if args.clinical_only else reporting_subjects(DATA):
        hr, t1 = subject.read("t2"), subject.read("t1")
        thick = thick_slice_volume(hr, 4, THICK_AXIS)
        top = robust_scale(sitk.GetArrayViewFromImage(hr))
        nearest = slice_interpolation(thick, 4, THICK_AXIS, sitk.sitkNearestNeighbor)
        panels = {"4 mm slices": nearest, "cubic B-spline": slice_interpolation(thick, 4, THICK_AXIS),
                  "Cohf-T, no T1": through_plane(thick, None, 1.0), "Cohf-T with T1": through_plane(thick, t1, 1.0),
                  "1 mm truth": hr}
        write_views(panels, top, args.out, f"through_plane_{subject.name.split('/')[-1]}")

    folder = DATA / "open_ms" / "clinical" / args.study
    t2 = sitk.ReadImage(str(folder / "t2w.nii.gz"), sitk.sitkFloat32)
    t1 = sitk.ReadImage(str(folder / "t1w.nii.gz"), sitk.sitkFloat32)
    factor, _note = through_plane_factor(t2.GetSpacing(), THICK_AXIS, args.slice_spacing)
    bspline, bspline_seconds = timed(lambda: slice_interpolation(t2, factor, THICK_AXIS))
    model, model_seconds = timed(lambda: through_plane(t2, t1, args.slice_spacing))
    size = " x ".join(map(str, t2.GetSize()))
    print(f"| {args.study} | {size}, {t2.GetSpacing()[THICK_AXIS]:g} mm slices | x{factor} -> "
          f"{' x '.join(map(str, model.GetSize()))} | B-spline {bspline_seconds:.1f} s | Cohf-T with T1 "
          f"{model_seconds:.1f} s | ratio {model_seconds / bspline_seconds:.0f} | "
          f"peak RSS {peak_rss() / 2**30:.2f} GiB |")
    top = robust_scale(sitk.GetArrayViewFromImage(t2))
    panels = {f"{t2.GetSpacing()[THICK_AXIS]:g} mm slices": slice_interpolation(t2, factor, THICK_AXIS,
                                                                                 sitk.sitkNearestNeighbor),
              "cubic B-spline": bspline, "Cohf-T with T1": model}
    write_views(panels, top, args.out, "through_plane_clinical")


if __name__ == "__main__":
    main()
