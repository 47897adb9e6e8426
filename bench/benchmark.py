"""Speed, memory and FLOPs of volume super-resolution, side by side, on real volumes.

Usage (from the repository root):
    PYTHONPATH=. python bench/benchmark.py [--slices 3] [--threads 2] [--cases clinical-x2 mni240-x4 big512-x4]

Each method runs in its own child process (so peak RSS is its own) on the
first --slices slices of the case (the middle ones for non-clinical cases);
seconds per volume are extrapolated linearly to all slices and marked so.
Methods: bicubic (SimpleITK cubic B-spline resampling onto the output grid),
torch fp32, torch bf16 (autocast), ONNX Runtime CPU (the model is exported
first, outside the timing). The network is Cohf-T S with random weights (speed
and memory do not depend on the weights' values). Also prints the model's
FLOPs per volume (torch.utils.flop_counter on one slice), the machine's
measured conv2d throughput, and where the time goes (torch.profiler, top ops).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from CohfTSuperResLib.geometry import Grid, output_grid, resample_to
from CohfTSuperResLib.inference import super_resolve
from CohfTSuperResLib.model import build_model
from CohfTSuperResLib.weights import save_weights

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "open_ms"
METHODS = ("bicubic", "torch-fp32", "torch-bf16", "onnx-cpu")


def _pad_in_plane(image: sitk.Image, size: int) -> sitk.Image:
    """Zero-pad (or crop) axes 0 and 1 symmetrically to size x size, keeping physical positions."""
    lower = [(size - n) // 2 if axis < 2 else 0 for axis, n in enumerate(image.GetSize())]
    upper = [size - n - low if axis < 2 else 0 for axis, (n, low) in enumerate(zip(image.GetSize(), lower, strict=True))]
    return sitk.ConstantPad(image, [max(v, 0) for v in lower], [max(v, 0) for v in upper])


def load_case(name: str) -> tuple[sitk.Image, sitk.Image, int]:
    """(LR T2, T1, scale) of a benchmark case."""
    if name == "clinical-x2":  # 348 x 384 x 44 thick-slice clinical T2, T1 on its own grid
        study = DATA / "clinical" / "patient01_study2"
        return sitk.ReadImage(str(study / "t2w.nii.gz")), sitk.ReadImage(str(study / "t1w.nii.gz")), 2
    t2, t1 = (sitk.ReadImage(str(DATA / "mni" / "patient07" / f"{n}.nii.gz")) for n in ("t2", "t1"))
    if name == "mni240-x4":  # 240 x 240 x 155 (BraTS-like size), x4
        return _pad_in_plane(t2, 240)[:, :, 14:169], t1, 4
    if name == "big512-x4":  # 512 x 512 x 120 at x4: a 2048 x 2048 output slice, tiled
        return _pad_in_plane(t2, 512)[:, :, 30:150], t1, 4
    raise SystemExit(f"unknown case {name}")


def sub_range(t2: sitk.Image, slices: int) -> sitk.Image:
    """`slices` consecutive slices from the middle of the volume."""
    start = max(t2.GetSize()[2] // 2 - slices // 2, 0)
    return t2[:, :, start : start + slices]


def peak_rss() -> int:
    """This process's peak resident set size in bytes (VmHWM: unlike ru_maxrss it is not inherited across exec)."""
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) * 1024 for line in handle if line.startswith("VmHWM:"))


def child(method: str, case: str, slices: int, weights: str) -> dict:
    """Run one method in this process; report seconds for the sub-range and peak RSS."""
    t2, t1, scale = load_case(case)
    part = sub_range(t2, slices)
    baseline = peak_rss()
    start = time.perf_counter()
    if method == "bicubic":
        out = resample_to(part, output_grid(Grid.of(part), scale), sitk.sitkBSpline)
    else:
        backend, precision = ("onnx", "fp32") if method == "onnx-cpu" else ("torch", method.split("-")[1])
        model = weights.replace(".safetensors", ".onnx") if backend == "onnx" else weights
        out = sitk.GetArrayViewFromImage(
            super_resolve(part, t1, scale, model_path=model, device="cpu", backend=backend, precision=precision,
                          slice_axis=2)
        )
    seconds = time.perf_counter() - start
    peak = peak_rss()
    arrays = int(np.prod(part.GetSize())) * 4 + out.nbytes  # float32 input voxels and output
    return {"seconds": seconds, "peak": peak, "baseline": baseline, "arrays": arrays, "total_slices": t2.GetSize()[2]}


def flops_per_slice(variant: str, scale: int, height: int, width: int) -> int:
    """Forward FLOPs of one LR slice (padded to the network's multiple of 30), by torch's flop counter."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model(variant, scale).eval()
    pad = lambda n: -(-n // 30) * 30  # noqa: E731
    lr, t1 = torch.rand(1, 1, pad(height), pad(width)), torch.rand(1, 1, scale * pad(height), scale * pad(width))
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(lr, t1)
    return counter.get_total_flops()


def conv_throughput() -> float:
    """Measured FLOP/s of a 16->16-channel 3x3 conv2d on a 512 x 512 map (the network's commonest op)."""
    conv = torch.nn.Conv2d(16, 16, 3, padding=1).eval()
    x = torch.rand(1, 16, 512, 512)
    flops = 2 * 16 * 16 * 9 * 512 * 512
    with torch.inference_mode():
        conv(x)
        start = time.perf_counter()
        for _ in range(10):
            conv(x)
    return 10 * flops / (time.perf_counter() - start)


def profile_top(scale: int, height: int, width: int, rows: int = 8) -> str:
    """torch.profiler table of one slice's forward, top ops by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    model = build_model("S", scale).eval()
    lr, t1 = torch.rand(1, 1, height, width), torch.rand(1, 1, scale * height, scale * width)
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        model(lr, t1)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=3, help="slices actually run per case (time extrapolated)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cases", nargs="+", default=["clinical-x2", "mni240-x4", "big512-x4"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--child", nargs=3, metavar=("METHOD", "CASE", "WEIGHTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.slices, args.child[2])))
        return
    rate = conv_throughput()
    print(f"# torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} logical cores; "
          f"conv2d 16->16 3x3 throughput {rate / 1e9:.1f} GFLOP/s")
    with tempfile.TemporaryDirectory() as folder:
        for case in args.cases:
            t2, _t1, scale = load_case(case)
            weights = Path(folder) / f"s_x{scale}.safetensors"
            if not weights.is_file():
                torch.manual_seed(0)
                network = build_model("S", scale)
                save_weights(network, weights)
                if "onnx-cpu" in args.methods:
                    from CohfTSuperResLib.onnx_backend import export_onnx

                    export_onnx(network, weights.with_suffix(".onnx"))
            height, width = t2.GetSize()[1], t2.GetSize()[0]
            flops = flops_per_slice("S", scale, height, width) * t2.GetSize()[2]
            print(f"\n## {case}: LR {t2.GetSize()} at x{scale}; Cohf-T S {flops / 1e12:.2f} TFLOP per volume; "
                  f"{args.slices} of {t2.GetSize()[2]} slices run, time per volume extrapolated")
            print("| method | s / volume (extrapolated) | x bicubic | peak RSS GiB | RSS after imports and reading GiB | "
                  "peak RSS above in/out arrays GiB | achieved GFLOP/s | fraction of conv throughput |")
            print("|---|---|---|---|---|---|---|---|")
            bicubic_seconds = None
            for method in args.methods:
                command = [sys.executable, __file__, "--child", method, case, str(weights),
                           "--slices", str(args.slices), "--threads", str(args.threads)]
                report = subprocess.run(command, check=True, capture_output=True, text=True).stdout
                result = json.loads(report.splitlines()[-1])
                per_volume = result["seconds"] * result["total_slices"] / args.slices
                bicubic_seconds = per_volume if method == "bicubic" else bicubic_seconds
                ratio = f"{per_volume / bicubic_seconds:.0f}" if bicubic_seconds else "-"
                achieved = "-" if method == "bicubic" else f"{flops / per_volume / 1e9:.1f}"
                fraction = "-" if method == "bicubic" else f"{flops / per_volume / rate:.2f}"
                above = (result["peak"] - result["arrays"]) / 2**30
                print(f"| {method} | {per_volume:.1f} | {ratio} | {result['peak'] / 2**30:.2f} | "
                      f"{result['baseline'] / 2**30:.2f} | {above:.2f} | "
                      f"{achieved} | {fraction} |", flush=True)
    print("\n## where the time goes: clinical-x2 slice (LR 360 x 390 padded), torch fp32, top ops by self CPU time")
    print(profile_top(2, 360, 390))


if __name__ == "__main__":
    main()
