"""`cohft-sr evaluate`: PSNR / SSIM of Cohf-T against bicubic and zero-filled k-space on real HR T2 volumes.

Protocol (one HR T2 volume with its T1; ``--slice-axis`` is the acquisition axis, 2 by default):

1. The HR T2 is read as float32 and its two in-plane axes are trimmed at the end to a multiple
   of the scale s (origin unchanged).
2. LR synthesis, the paper's k-space protocol, slice by slice along the slice axis and in the
   T2's own units: 2-D FFT of the whole HR slice, keep the central (H/s) x (W/s) block, inverse
   FFT, magnitude, level-preserving factor (``degradations.degrade``). The LR volume lives on the
   DFT grid: HR origin and direction, in-plane spacing x s, in-plane size / s.
3. Cohf-T: the LR volume and the T1 go through ``inference.super_resolve`` (the public path users
   call; it normalises each input by its own robust scale, resamples the T1 onto the output grid
   and returns T2 units on the DFT output grid, which is the trimmed HR grid). A T1 with a
   ``t1_to_t2`` transform (manifest) is first resampled onto the HR grid with it.
   Optionally a model trained without the T1 (``--no-t1-model``) is run the same way. The guide check is off:
   the networks are measured as they are (the check would run the no-T1 model in place of a T1 it finds unhelpful).
4. Baselines on the same LR slices: bicubic = ``upsample.upsample_cubic`` (Keys cubic on the DFT
   grid, edge replicated); zero-fill = ``degradations.zero_fill_upsample`` (LR spectrum zero-padded,
   magnitude).
5. Scoring: every result and the HR are divided by the HR T2's robust scale (99.5th percentile of
   its positive voxels, ``normalize.robust_scale``); no clipping. Slices with brain are those of
   ``data.brain_slices`` on the normalised HR (at least 5% of the voxels above 0.1). Metrics use
   whole slices and data range 1: ``psnr`` pools the squared error of all brain slices of the
   volume (one MSE), ``psnr_slice_mean`` averages per-slice PSNR, ``ssim`` averages the per-slice
   SSIM (``metrics.ssim``: Gaussian 11 x 11, sigma 1.5, valid region).

Outputs in ``--out``: ``metrics.json`` (protocol, models, per-subject metrics, their mean) and one
PNG per subject for the central brain slice: top row LR (nearest, to HR size) | bicubic | Cohf-T |
HR, bottom row |zero-fill - HR| | |bicubic - HR| | |Cohf-T - HR| | T1 guide; images shown on
[0, 1] of the normalised scale, error maps on [0, 0.2] (bright = error of 0.2 or more).
A ``--manifest`` (the training manifest format, ``data.read_manifest``) evaluates every row.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from CohfTSuperResLib.data.degradations import zero_fill_upsample
from CohfTSuperResLib.inference.geometry import Grid, output_grid
from CohfTSuperResLib.inference.engine import super_resolve
from CohfTSuperResLib.evaluation.metrics import psnr, ssim
from CohfTSuperResLib.imageio.normalize import robust_scale
from CohfTSuperResLib.options import SCALES, SLICE_AXES, VARIANTS
from CohfTSuperResLib.data.pairs import PairSpec, read_manifest, t1_on_t2_grid, t1_to_t2_transform
from CohfTSuperResLib.inference.geometry import image_stack
from CohfTSuperResLib.data.patches import brain_slices
from CohfTSuperResLib.data.synthetic_volumes import bicubic_stack, lr_volume, trim_in_plane
from CohfTSuperResLib.imageio.volumes import read_volume, write_png
from CohfTSuperResLib.weights.storage import sha256_of

ERROR_WINDOW = 0.2  # |error| shown white at this value (normalised units)
METHODS = ("zero_fill", "bicubic", "cohft_no_t1", "cohft")


def baselines(lr_stack: np.ndarray, scale: int) -> dict[str, np.ndarray]:
    """Bicubic (DFT-grid Keys cubic) and zero-filled k-space upsampling of an (N, h, w) LR stack."""
    return {"bicubic": bicubic_stack(lr_stack, scale),
            "zero_fill": zero_fill_upsample(lr_stack, scale).astype(np.float32)}


def score(prediction: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """PSNR (pooled over slices and per-slice mean) and mean SSIM of (N, H, W) stacks, data range 1."""
    per_slice = [psnr(p, t, 1.0) for p, t in zip(prediction, target)]
    return {"psnr": psnr(prediction, target, 1.0), "psnr_slice_mean": float(np.mean(per_slice)),
            "ssim": ssim(prediction, target, 1.0)}


def _gray(image: np.ndarray, top: float) -> np.ndarray:
    return (np.clip(np.nan_to_num(image) / top, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def figure(panels_top: list[np.ndarray], panels_bottom: list[np.ndarray], path: Path, gap: int = 2) -> None:
    """Write two rows of equally sized panels (already uint8) as a grayscale PNG with SimpleITK."""
    height, width = panels_top[0].shape
    columns = max(len(panels_top), len(panels_bottom))
    mosaic = np.zeros((2 * height + gap, columns * width + (columns - 1) * gap), dtype=np.uint8)
    for row, panels in enumerate((panels_top, panels_bottom)):
        for column, panel in enumerate(panels):
            y, x = row * (height + gap), column * (width + gap)
            mosaic[y:y + height, x:x + width] = panel
    write_png(mosaic, path)


def evaluate_pair(spec: PairSpec, scale: int, slice_axis: int, model: Path | None, variant: str,
                  no_t1_model: Path | None, device: str, figure_path: Path | None,
                  log: Any = None) -> dict[str, Any]:
    """Metrics of one (HR T2, T1) pair under the module's protocol; writes its figure when asked."""
    log = log or (lambda _message: None)
    axis = spec.slice_axis if spec.slice_axis is not None else slice_axis
    hr = trim_in_plane(read_volume(spec.t2, float32=True), scale, axis)
    lr = lr_volume(hr, scale, axis)
    if Grid.of(hr) != output_grid(Grid.of(lr), scale, axis):
        raise RuntimeError("internal error: the SR output grid differs from the HR grid")
    t1 = None
    if spec.t1 is not None:
        t1 = read_volume(spec.t1, float32=True)
        transform = t1_to_t2_transform(spec)
        if transform is not None:
            t1 = t1_on_t2_grid(t1, hr, transform)
    hr_stack = image_stack(hr, axis)
    lr_stack = image_stack(lr, axis)
    results = baselines(lr_stack, scale)
    started = time.time()
    if t1 is None and no_t1_model is None:
        raise ValueError(f"{spec.subject}: no T1 and no --no-t1-model: nothing to evaluate")
    seconds = {}
    if t1 is not None:
        sr = super_resolve(lr, t1, scale, variant=variant, model_path=model, device=device, slice_axis=axis,
                           guide_check="off")  # the guided network itself, never swapped for the no-T1 one
        results["cohft"] = image_stack(sr, axis)
        seconds["cohft"] = round(time.time() - started, 2)
    if no_t1_model is not None:
        started = time.time()
        sr = super_resolve(lr, None, scale, variant=variant, model_path=no_t1_model, device=device, slice_axis=axis,
                           guide_check="off")
        results["cohft_no_t1"] = image_stack(sr, axis)
        seconds["cohft_no_t1"] = round(time.time() - started, 2)
    reference = robust_scale(hr_stack)
    target = hr_stack / reference
    brain = brain_slices(target)
    if brain.size == 0:
        raise ValueError(f"{spec.subject}: no slice with brain (>= 5% of voxels above 10% of the 99.5th percentile)")
    metrics = {name: score(results[name][brain] / reference, target[brain]) for name in METHODS if name in results}
    log(f"{spec.subject}: " + ", ".join(f"{name} {value['psnr']:.2f} dB / {value['ssim']:.4f}"
                                        for name, value in metrics.items()))
    central = int(brain[len(brain) // 2])
    if figure_path is not None:
        shown = {name: results[name][central] / reference for name in results}
        best = "cohft" if "cohft" in shown else "cohft_no_t1"
        lr_view = np.kron(lr_stack[central] / reference, np.ones((scale, scale), dtype=np.float32))
        t1_view = np.zeros_like(target[central])
        if t1 is not None:
            t1_hr = image_stack(t1_on_t2_grid(t1, hr, None), axis)[central]
            t1_view = t1_hr / robust_scale(t1_hr) if np.any(t1_hr > 0) else t1_hr
        top = [_gray(x, 1.0) for x in (lr_view, shown["bicubic"], shown[best], target[central])]
        bottom = [_gray(np.abs(shown[name] - target[central]), ERROR_WINDOW) for name in ("zero_fill", "bicubic", best)]
        figure(top, bottom + [_gray(t1_view, 1.0)], figure_path)
    return {
        "subject": spec.subject, "t2": str(spec.t2), "t1": None if spec.t1 is None else str(spec.t1),
        "slice_axis": axis, "hr_size": list(hr.GetSize()), "lr_size": list(lr.GetSize()),
        "lr_spacing": list(lr.GetSpacing()), "brain_slices": int(brain.size), "figure_slice": central,
        "figure": None if figure_path is None else figure_path.name, "intensity_scale": reference,
        "inference_seconds": seconds, "metrics": metrics,
    }


def build_parser() -> argparse.ArgumentParser:
    """Arguments of `cohft-sr evaluate`."""
    parser = argparse.ArgumentParser(prog="cohft-sr evaluate", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--t2", type=Path, help="HR T2 volume (the reference)")
    source.add_argument("--manifest", type=Path,
                        help="CSV/JSON manifest of (t2, t1[, transforms]) pairs (see data/pairs.py)")
    parser.add_argument("--t1", type=Path, help="T1 of the same subject (registered, or in physical alignment)")
    parser.add_argument("--scale", type=int, choices=SCALES, required=True)
    parser.add_argument("--model", type=Path, help="Cohf-T weights with T1 (default: the shipped model of --variant)")
    parser.add_argument("--variant", choices=VARIANTS, default="S")
    parser.add_argument("--no-t1-model", type=Path, help="also evaluate these weights of a model without T1")
    parser.add_argument("--out", type=Path, required=True, help="folder for metrics.json and the figure(s)")
    parser.add_argument("--slice-axis", type=int, choices=SLICE_AXES, default=2, help="acquisition (voxel) axis")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps")
    parser.add_argument("--no-figure", action="store_true")
    return parser


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "subject"


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Run the protocol on every pair; write and return the metrics.json content."""
    if args.t2 is not None:
        subject = f"{args.t2.parent.name}/{args.t2.name}" if args.t2.parent.name else args.t2.name
        specs = [PairSpec(t2=args.t2, t1=args.t1, subject=subject, slice_axis=args.slice_axis)]
    else:
        if args.t1 is not None:
            raise SystemExit("cohft-sr evaluate: error: --t1 goes with --t2, not with --manifest")
        specs = read_manifest(args.manifest)
    args.out.mkdir(parents=True, exist_ok=True)
    subjects = []
    for number, spec in enumerate(specs):
        name = "figure.png" if len(specs) == 1 else f"figure_{number:02d}_{_slug(spec.subject)}.png"
        subjects.append(evaluate_pair(spec, args.scale, args.slice_axis, args.model, args.variant, args.no_t1_model,
                                      args.device, None if args.no_figure else args.out / name, _log))
    methods = [m for m in METHODS if all(m in s["metrics"] for s in subjects)]
    mean = {m: {key: float(np.mean([s["metrics"][m][key] for s in subjects])) for key in ("psnr", "psnr_slice_mean",
                                                                                           "ssim")} for m in methods}
    models = {}
    if args.model is not None:
        models["cohft"] = {"path": str(args.model), "sha256": sha256_of(args.model)}
    elif any(spec.t1 is not None for spec in specs):
        models["cohft"] = {"shipped": args.variant}
    if args.no_t1_model is not None:
        models["cohft_no_t1"] = {"path": str(args.no_t1_model), "sha256": sha256_of(args.no_t1_model)}
    report = {
        "protocol": {"lr_synthesis": "k-space central-block truncation per slice, magnitude (degradations.degrade)",
                     "grid": "DFT: LR sample j at HR sample s*j; origin kept, in-plane spacing x s",
                     "intensity": "divided by the HR T2's 99.5th percentile of positive voxels; no clipping",
                     "slices": "brain slices (>= 5% of voxels above 0.1 normalised), whole slices",
                     "psnr": "data range 1; psnr pools all brain slices, psnr_slice_mean averages per slice",
                     "ssim": "Gaussian 11x11 sigma 1.5, valid region, mean over brain slices",
                     "bicubic": "Keys cubic (a=-0.5) on the DFT grid", "zero_fill": "zero-padded k-space, magnitude",
                     "guide_check": "off: the guided network always runs with the T1"},
        "scale": args.scale, "variant": args.variant, "models": models, "subjects": subjects, "mean": mean,
    }
    text = json.dumps(report, indent=1, allow_nan=True)
    (args.out / "metrics.json").write_text(text)
    for method, value in mean.items():
        _log(f"mean {method}: PSNR {value['psnr']:.3f} dB, SSIM {value['ssim']:.4f}")
    return report


def main(argv: list[str] | None = None) -> int:
    """Entry point of `cohft-sr evaluate` (and `python -m CohfTSuperResLib.evaluation.evaluate`)."""
    args = build_parser().parse_args(argv)
    if args.t2 is not None and args.t1 is None and args.no_t1_model is None:
        build_parser().error("--t1 is required unless only --no-t1-model is evaluated")
    evaluate(args)
    return 0


if __name__ == "__main__":  # `python -m`: the command line's one-line errors
    from CohfTSuperResLib.cli import main as command_line

    raise SystemExit(command_line(["evaluate", *sys.argv[1:]]))
