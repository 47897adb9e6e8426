"""GPU rows of docs/benchmarks.md, without SimpleITK: network time per volume, reduced-precision error, a real
out-of-memory, and ONNX Runtime's CUDA provider where it is installed.

Usage (on a CUDA machine, from the repository root; needs numpy and torch, and the training pack for the
precision rows):
    PYTHONPATH=.:bench python bench/gpu_network.py --pack runs/mni_pack.npz [--json OUT.json] [--budget 150]

1. Precision: the shipped S models (x2, x3, x4, with T1) on the pack's validation slices (real MR: the
   12-slice held-back slab of mni/patient19): PSNR against the HR T2, and max / mean abs difference to
   the CPU fp32 output, for CUDA fp32, bf16 and fp16 (torch autocast, `TorchRunner`, as inference runs).
2. Speed: S, M and L (shipped weights where there are some, else random) at x2 and x4 on whole slices of
   the two benchmark shapes (LR 240 x 240 x 155, and the clinical 348 x 384 x 44), fp32 / bf16 / fp16:
   seconds per volume of the network (batches of the size inference plans from free memory, host-to-device
   copies included; T1 resampling and file I/O are not, they are CPU work measured in the CPU rows), peak
   GPU memory, and the same slices' cubic upsampling on the GPU timed in the same run (the ratio).
   Each row runs batches until --seconds have passed, scaled to the volume; --budget caps the section.
3. A real out-of-memory: GPU memory capped (torch.cuda.set_per_process_memory_fraction) below what the
   planned batch needs, then below one slice: `run_in_batches` halves the batch, then moves to the CPU.
4. ONNX Runtime: its providers; with CUDAExecutionProvider, the exported S x2 timed against torch.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch

from CohfTSuperResLib.inference.backends import TorchRunner
from CohfTSuperResLib.inference.batching import plan_batches, run_in_batches, size_multiple
from CohfTSuperResLib.inference.devices import deterministic_kernels, working_memory_budget
from CohfTSuperResLib.evaluation.metrics import psnr
from CohfTSuperResLib.model.partition import pad_to_multiple
from CohfTSuperResLib.data.pack import read_pack, slice_sets
from CohfTSuperResLib.model.upsample import upsample_cubic

from bench_models import network

CUDA = torch.device("cuda")
PRECISIONS = ("fp32", "bf16", "fp16")
CASES = {"240x240x155": (240, 240, 155), "clinical 348x384x44": (384, 348, 44)}  # LR rows, columns, slices


def sr_of(runner: TorchRunner, lr: torch.Tensor, t1: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    """The runner's SR of (B, 1, h, w) LR slices of any size: padded to the size multiple and cropped back."""
    scale, multiple = runner.config.scale, size_multiple(runner.config)
    height, width = lr.shape[-2:]
    guide = None if t1 is None else pad_to_multiple(t1, scale * multiple)
    return runner.run(pad_to_multiple(lr, multiple), guide, device)[..., : scale * height, : scale * width]


def precision_rows(pack: Path) -> list[dict]:
    """PSNR and difference to the CPU fp32 output of each precision on CUDA, on the pack's validation slices."""
    volumes, _meta = read_pack(pack)
    rows = []
    for scale in (2, 3, 4):
        _train, val = slice_sets(volumes, scale)
        model, source = network("S", scale)
        pairs = [(torch.from_numpy(val.lr[v][i])[None, None], torch.from_numpy(val.t1[v][i])[None, None],
                  val.hr[v][i]) for v, i in val.slices()]
        reference = [sr_of(TorchRunner(model), lr, t1, torch.device("cpu")) for lr, t1, _hr in pairs]
        for precision in PRECISIONS:
            runner = TorchRunner(model, precision)
            with deterministic_kernels(CUDA):
                outputs = [sr_of(runner, lr, t1, CUDA) for lr, t1, _hr in pairs]
            runner.network.to("cpu")
            differences = torch.cat([(out - ref).abs().flatten() for out, ref in zip(outputs, reference, strict=True)])
            rows.append({
                "scale": scale, "weights": source, "precision": precision, "slices": len(pairs),
                "psnr": float(np.mean([psnr(out[0, 0].numpy(), hr, 1.0) for out, (_l, _t, hr) in
                                       zip(outputs, pairs, strict=True)])),
                "psnr_cpu_fp32": float(np.mean([psnr(ref[0, 0].numpy(), hr, 1.0) for ref, (_l, _t, hr) in
                                                zip(reference, pairs, strict=True)])),
                "max_abs_vs_cpu": float(differences.max()), "mean_abs_vs_cpu": float(differences.mean()),
            })
            print(json.dumps(rows[-1]), flush=True)
    return rows


def _synchronised(function: Callable[[], object]) -> float:
    """Seconds of one call, the GPU's work included."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    function()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def speed_row(variant: str, scale: int, case: str, precision: str, seconds: float) -> dict:
    """Network seconds per volume of whole slices, peak GPU memory, and cubic upsampling's seconds alike."""
    height, width, count = CASES[case]
    model, source = network(variant, scale)
    runner = TorchRunner(model, precision)
    multiple = size_multiple(model.config)
    padded = [-(-n // multiple) * multiple for n in (height, width)]
    torch.cuda.empty_cache()
    plan = plan_batches(model.config, *padded, working_memory_budget(CUDA))
    batch = min(plan.batch_size, count)
    lr = torch.rand(batch, 1, height, width)
    t1 = torch.rand(batch, 1, scale * height, scale * width)
    with deterministic_kernels(CUDA):
        sr_of(runner, lr, t1, CUDA)  # first call: weights to the GPU, kernels chosen
        torch.cuda.reset_peak_memory_stats()
        spent, done = 0.0, 0
        while done == 0 or (spent < seconds and done < count):
            spent += _synchronised(partial(sr_of, runner, lr, t1, CUDA))
            done += batch
    peak = torch.cuda.max_memory_allocated()
    cubic = _synchronised(lambda: upsample_cubic(lr.to(CUDA), scale).cpu())
    runner.network.to("cpu")
    del runner, model
    volume_seconds = spent / done * count
    return {"variant": variant, "weights": source, "scale": scale, "case": case, "precision": precision,
            "tiles": plan.tile, "batch": batch, "slices_timed": done, "seconds_per_volume": volume_seconds,
            "cubic_seconds_per_volume": cubic / batch * count,
            "ratio_to_cubic": volume_seconds / (cubic / batch * count), "peak_gib": peak / 2**30}


def speed_rows(seconds: float, budget: float) -> list[dict]:
    """Every (variant, scale, case, precision) row that fits the budget, S first, then L, then M."""
    rows, started = [], time.perf_counter()
    for variant in ("S", "L", "M"):
        for scale in (2, 4):
            for case in CASES:
                for precision in PRECISIONS:
                    if time.perf_counter() - started > budget:
                        print(f"speed budget of {budget:.0f} s spent; rows left out from {variant} x{scale} {case}")
                        return rows
                    rows.append(speed_row(variant, scale, case, precision, seconds))
                    print(json.dumps(rows[-1]), flush=True)
    return rows


def out_of_memory_rows() -> list[dict]:
    """run_in_batches under a GPU memory cap: below the batch's need (halving), then below one slice (CPU)."""
    model, _source = network("S", 2)
    runner = TorchRunner(model)
    height, width = 384, 360  # the clinical slice padded to the S model's size multiple
    with deterministic_kernels(CUDA):
        runner.run(torch.rand(1, 1, height, width), torch.rand(1, 1, 2 * height, 2 * width), CUDA)
        torch.cuda.empty_cache()
        base = torch.cuda.memory_reserved()  # the cap applies to reserved memory
        torch.cuda.reset_peak_memory_stats()
        runner.run(torch.rand(1, 1, height, width), torch.rand(1, 1, 2 * height, 2 * width), CUDA)
        per_slice = torch.cuda.max_memory_reserved() - base
    total = torch.cuda.get_device_properties(0).total_memory
    rows = []
    for label, cap in (("3 slices' worth", base + 3 * per_slice), ("half a slice's worth", base + per_slice // 2)):
        attempts: list[tuple[int, str, str]] = []

        def run_batch(chunk: list[int], device: torch.device) -> None:
            try:
                runner.run(torch.rand(len(chunk), 1, height, width), torch.rand(len(chunk), 1, 2 * height, 2 * width),
                           device)
            except torch.OutOfMemoryError:
                attempts.append((len(chunk), device.type, "out of memory"))
                raise
            attempts.append((len(chunk), device.type, "ran"))

        torch.cuda.empty_cache()
        torch.cuda.set_per_process_memory_fraction(cap / total)
        try:
            with warnings.catch_warnings(record=True) as caught, deterministic_kernels(CUDA):
                warnings.simplefilter("always")
                final = run_in_batches(list(range(4)), 4, CUDA, run_batch)
        finally:
            torch.cuda.set_per_process_memory_fraction(1.0)
        rows.append({"cap": label, "cap_gib": cap / 2**30, "per_slice_gib": per_slice / 2**30,
                     "attempts": attempts, "final_device": final.type,
                     "warnings": [str(w.message) for w in caught]})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def onnx_rows() -> list[dict]:
    """ONNX Runtime's providers; with CUDA, the exported S x2 against torch on the same slices."""
    try:
        import onnxruntime
    except ImportError as error:
        return [{"onnxruntime": f"not installed ({error})"}]
    providers = onnxruntime.get_available_providers()
    row: dict = {"onnxruntime": onnxruntime.__version__, "providers": providers}
    if "CUDAExecutionProvider" in providers:
        from CohfTSuperResLib.inference.onnx_export import OnnxRunner, export_onnx

        model, _source = network("S", 2)
        path = export_onnx(model, Path("/tmp/cohft_S_x2.onnx"))
        session = OnnxRunner(path, "cuda")
        lr, t1 = torch.rand(4, 1, 240, 240), torch.rand(4, 1, 480, 480)
        session(lr, t1)
        row["providers_used"] = session.providers
        row["onnx_seconds_4_slices"] = _synchronised(lambda: session(lr, t1))
        runner = TorchRunner(model)
        with deterministic_kernels(CUDA):
            reference = runner.run(lr, t1, CUDA)
            row["torch_seconds_4_slices"] = _synchronised(lambda: runner.run(lr, t1, CUDA))
        row["max_abs_onnx_vs_torch"] = float((session(lr, t1) - reference).abs().max())
    print(json.dumps(row), flush=True)
    return [row]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pack", type=Path, required=True)
    parser.add_argument("--json", type=Path, default=Path("gpu_network.json"))
    parser.add_argument("--seconds", type=float, default=1.0, help="timed seconds per speed row (at least a batch)")
    parser.add_argument("--budget", type=float, default=150.0, help="seconds for all speed rows")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device")
    properties = torch.cuda.get_device_properties(0)
    report = {"gpu": properties.name, "gpu_memory_gib": properties.total_memory / 2**30, "torch": torch.__version__,
              "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
              "tf32_convolutions": torch.backends.cudnn.allow_tf32}
    print(json.dumps(report), flush=True)
    for section, rows in (("precision", lambda: precision_rows(args.pack)),
                          ("speed", lambda: speed_rows(args.seconds, args.budget)),
                          ("out_of_memory", out_of_memory_rows), ("onnx", onnx_rows)):
        try:
            report[section] = rows()
        except Exception as error:  # one section's failure on the card is a finding; the others still run
            report[section] = f"failed: {type(error).__name__}: {error}"
            print(f"{section} failed: {type(error).__name__}: {error}", flush=True)
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
