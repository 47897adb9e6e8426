"""Seconds per volume as a ratio to what this CPU does on well-shaped convolutions, side by side.

Usage (from the repository root):
    PYTHONPATH=. python bench/benchmark.py [--cases clinical-x2 mni240-x4] [--methods bicubic torch onnx]
        [--baseline-tree DIR] [--every 4] [--threads 2]

The honest ratio: `seconds / (FLOPs / conv rate)`, where FLOPs are the network's on every whole
slice with content (the work a whole-slice run has to do; skipping background counts as saved
work) and the conv rate is this machine's float32 throughput on a 64 -> 64 3 x 3 convolution of a
256 x 256 map (channels-last), measured in the same child process right before the run, after each
slice (the progress callback; that time is not counted in the run's seconds) and right after it: the
mean of all samples, so the yardstick follows the machine's speed during the run. The ratio with
the mean of the two samples at the ends alone is printed too. A ratio of 1 means the volume took as
long as its FLOPs take on that convolution. The machine's speed varies by tens of percent between
minutes (shared host), so every run is repeated in interleaved rounds (--repeat) and the fastest is
reported, with its own conv rate.

Each method runs in its own child process (so peak RSS is its own) on every --every-th slice of
the volume (SimpleITK's strided slicing keeps their physical positions, so the T1 guide is the
same), through the public `super_resolve` with the shipped model; seconds are scaled to the whole
volume. --baseline-tree DIR adds the same methods run from another checkout of the project (e.g.
a git worktree of the previous release): before and after on the same machine in one run.
Every output is compared with this tree's torch output: max abs difference in units of the
T2's robust scale (imageio/normalize.py; tissue about 0 .. 1).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "open_ms"
METHODS = ("bicubic", "torch", "onnx")


def cpu_name() -> str:
    """The CPU's model name and its vector extensions that matter for float32 convolutions."""
    name, flags = platform.processor() or "unknown CPU", set()
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    extensions = [label for flag, label in (("avx2", "AVX2"), ("avx512f", "AVX-512"), ("amx_tile", "AMX"))
                  if flag in flags]
    return f"{name} ({', '.join(extensions) or 'no AVX2'})"


@functools.cache
def _yardstick() -> tuple[torch.nn.Conv2d, torch.Tensor]:
    """The convolution of `conv_rate` and its input, made once per process."""
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).eval().to(memory_format=torch.channels_last)
    return conv, torch.rand(1, 64, 256, 256).contiguous(memory_format=torch.channels_last)


def conv_rate(repeats: int = 8) -> float:
    """FLOP/s of a 64 -> 64 3 x 3 float32 convolution on a 1 x 64 x 256 x 256 channels-last map."""
    conv, x = _yardstick()
    with torch.inference_mode():
        conv(x)
        start = time.perf_counter()
        for _ in range(repeats):
            conv(x)
    return repeats * 2 * 64 * 64 * 9 * 256 * 256 / (time.perf_counter() - start)


def _pad_in_plane(image: sitk.Image, size: int) -> sitk.Image:
    """Zero-pad axes 0 and 1 symmetrically to size x size, keeping physical positions."""
    lower = [(size - n) // 2 if axis < 2 else 0 for axis, n in enumerate(image.GetSize())]
    upper = [size - n - low if axis < 2 else 0
             for axis, (n, low) in enumerate(zip(image.GetSize(), lower, strict=True))]
    return sitk.ConstantPad(image, [max(v, 0) for v in lower], [max(v, 0) for v in upper])


def load_case(name: str) -> tuple[sitk.Image, sitk.Image, int]:
    """(LR T2, T1, scale) of a benchmark case."""
    if name == "clinical-x2":  # 348 x 384 x 44 thick-slice clinical T2, T1 on its own grid
        study = DATA / "clinical" / "patient01_study2"
        return sitk.ReadImage(str(study / "t2w.nii.gz")), sitk.ReadImage(str(study / "t1w.nii.gz")), 2
    t2, t1 = (sitk.ReadImage(str(DATA / "mni" / "patient07" / f"{n}.nii.gz")) for n in ("t2", "t1"))
    if name == "mni240-x4":  # 240 x 240 x 155 (the BraTS volume size), x4
        return _pad_in_plane(t2, 240)[:, :, 14:169], t1, 4
    raise SystemExit(f"unknown case {name}")


def peak_rss() -> int:
    """This process's peak resident set size in bytes (VmHWM: unlike ru_maxrss it is not inherited across exec)."""
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) * 1024 for line in handle if line.startswith("VmHWM:"))


def child(method: str, case: str, every: int, output: str) -> dict:
    """Run one method in this process on every `every`-th slice; save its output; report time, memory, conv rate."""
    from CohfTSuperResLib.inference import super_resolve  # the public path, in every layout

    try:
        from CohfTSuperResLib.inference.geometry import Grid, output_grid, resample_to
    except ImportError:  # a --baseline-tree from before the library's subpackages
        from CohfTSuperResLib.geometry import Grid, output_grid, resample_to

    t2, t1, scale = load_case(case)
    part = t2[:, :, ::every]
    if method == "onnx":  # the export of the shipped model (cached per tree) happens outside the timing: one slice
        middle = part.GetSize()[2] // 2
        super_resolve(part[:, :, middle:middle + 1], t1, scale, backend="onnx", device="cpu", slice_axis=2)
    baseline = peak_rss()
    rates, sampling = [conv_rate()], []

    def sample_rate(_done: int, _total: int) -> None:  # after each slice: the conv rate, outside the timed work
        sample_start = time.perf_counter()
        rates.append(conv_rate())
        sampling.append(time.perf_counter() - sample_start)

    start = time.perf_counter()
    if method == "bicubic":  # voxels (numpy, k-j-i order) on the output grid
        voxels = resample_to(part, output_grid(Grid.of(part), scale), sitk.sitkBSpline)
    else:
        voxels = sitk.GetArrayFromImage(super_resolve(part, t1, scale, device="cpu", backend=method, slice_axis=2,
                                                      progress=sample_rate))
    seconds = time.perf_counter() - start - sum(sampling)
    peak = peak_rss()
    rates.append(conv_rate())
    np.save(output, voxels)
    arrays = int(np.prod(part.GetSize())) * 4 + voxels.astype(np.float32).nbytes  # float32 input and output voxels
    return {"seconds": seconds, "peak": peak, "baseline": baseline, "arrays": arrays, "conv_rate": np.mean(rates),
            "conv_rate_ends": (rates[0] + rates[-1]) / 2, "slices_run": part.GetSize()[2],
            "total_slices": t2.GetSize()[2]}


def nominal_flops(case: str) -> tuple[float, int]:
    """The network's FLOPs on every whole slice with content (padded to the size multiple), and that slice count."""
    from torch.utils.flop_counter import FlopCounterMode

    from CohfTSuperResLib.inference.batching import size_multiple
    from CohfTSuperResLib.model import build_model

    t2, _t1, scale = load_case(case)
    model = build_model("S", scale).eval()
    multiple = size_multiple(model.config)
    width, height, _depth = (-(-n // multiple) * multiple for n in t2.GetSize())
    lr, t1 = torch.rand(1, 1, height, width), torch.rand(1, 1, scale * height, scale * width)
    with FlopCounterMode(display=False) as counter:  # autograd on: the unfused operations, which it counts
        model(lr, t1)
    voxels = sitk.GetArrayViewFromImage(t2)
    busy = int(sum(np.any(voxels[index]) for index in range(voxels.shape[0])))
    return counter.get_total_flops() * busy, busy


def run_child(tree: Path, method: str, case: str, args: argparse.Namespace, output: Path, cache: Path) -> dict:
    """One method from one checkout, in a fresh process (its own ONNX cache, so each tree exports its own graph)."""
    environment = {**os.environ, "PYTHONPATH": str(tree), "COHFT_SR_CACHE": str(cache)}
    command = [sys.executable, __file__, "--child", method, case, str(output), "--every", str(args.every),
               "--threads", str(args.threads)]
    report = subprocess.run(command, check=True, capture_output=True, text=True, env=environment, cwd=tree).stdout
    return json.loads(report.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=["clinical-x2", "mni240-x4"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--baseline-tree", type=Path, help="another checkout whose torch and onnx run beside this one")
    parser.add_argument("--every", type=int, default=4, help="run every N-th slice (time scaled to the volume)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2, help="rounds of all runs, interleaved; the fastest is kept")
    parser.add_argument("--child", nargs=3, metavar=("METHOD", "CASE", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.every, args.child[2])))
        return
    import onnxruntime

    trees = [("this tree", ROOT)] + ([("baseline", args.baseline_tree.resolve())] if args.baseline_tree else [])
    print(f"# CPU: {cpu_name()}; {os.cpu_count()} logical cores, {args.threads} threads; torch {torch.__version__}, "
          f"onnxruntime {onnxruntime.__version__}; every {args.every}th slice run, time scaled to the volume")
    from CohfTSuperResLib.imageio.normalize import robust_scale

    with tempfile.TemporaryDirectory() as folder:
        for case in args.cases:
            flops, busy = nominal_flops(case)
            t2_scale = robust_scale(sitk.GetArrayFromImage(load_case(case)[0]))
            print(f"\n## {case}: Cohf-T S {flops / 1e12:.2f} TFLOP on its {busy} slices with content")
            print("| code | method | s / volume | ratio to conv rate | ratio, rate at the ends only | x bicubic | "
                  "conv rate GFLOP/s | peak RSS above in/out arrays GiB | max abs diff to this tree's torch |")
            print("|---|---|---|---|---|---|---|---|---|")
            runs = [(label, tree, method) for method in args.methods for label, tree in trees
                    if method != "bicubic" or tree == ROOT]
            results, outputs = {}, {}
            for _round in range(args.repeat):  # interleaved rounds; the fastest of each is kept
                for label, tree, method in runs:
                    outputs[label, method] = Path(folder) / f"{case}-{label.replace(' ', '_')}-{method}.npy"
                    result = run_child(tree, method, case, args, outputs[label, method],
                                       Path(folder) / f"cache-{label.replace(' ', '_')}")
                    if (label, method) not in results or result["seconds"] < results[label, method]["seconds"]:
                        results[label, method] = result
            reference = np.load(outputs["this tree", "torch"]) if ("this tree", "torch") in outputs else None
            bicubic = results.get(("this tree", "bicubic"))
            for (label, method), result in results.items():
                seconds = result["seconds"] * result["total_slices"] / result["slices_run"]
                ratio, ends = ("-" if method == "bicubic" else f"{seconds / (flops / result[key]):.2f}"
                               for key in ("conv_rate", "conv_rate_ends"))
                versus = "-" if bicubic is None else \
                    f"{seconds / (bicubic['seconds'] * bicubic['total_slices'] / bicubic['slices_run']):.1f}"
                above = (result["peak"] - result["arrays"]) / 2**30
                difference = "-" if reference is None or method == "bicubic" else \
                    f"{np.abs(np.load(outputs[label, method]) - reference).max() / t2_scale:.1e}"
                print(f"| {label} | {method} | {seconds:.1f} | {ratio} | {ends} | {versus} | "
                      f"{result['conv_rate'] / 1e9:.0f} | {above:.2f} | {difference} |", flush=True)


if __name__ == "__main__":
    main()
