"""Would int8 be acceptable? ONNX Runtime static quantisation of a shipped model, scored on the held-out subject.

Usage (from the repository root):
    PYTHONPATH=. python bench/int8_trial.py [--scale 2] [--threads 2]

The shipped S model (with T1) is exported to ONNX, quantised with
`onnxruntime.quantization.quantize_static` (QDQ, int8 weights per channel, int8 activations,
MinMax calibration on 8 central slices of the training subject mni/patient07, never the held-out
one), and both the float and the int8 model run the held-out protocol of bench/held_out_parity.py
(mni/patient26, every brain slice) with the ONNX backend. Prints PSNR / SSIM of both, the drop,
and the seconds of each run. The issue's rule: int8 only if the held-out PSNR drops <= 0.05 dB at
every scale.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import onnx
import torch

from held_out_parity import AXIS, ROOT, held_out_stacks

TRAINING_SUBJECT = ROOT.parent / "shared" / "data" / "open_ms" / "mni" / "patient07"


class _Calibration:
    """onnxruntime CalibrationDataReader over padded LR / T1 slices of the training subject."""

    def __init__(self, scale: int, slices: int = 8) -> None:
        from CohfTSuperResLib.inference.geometry import Grid, output_grid, resample_to
        from CohfTSuperResLib.model.partition import pad_to_multiple
        from CohfTSuperResLib.imageio.normalize import normalize, robust_scale
        from CohfTSuperResLib.inference.geometry import image_stack
        from CohfTSuperResLib.data.synthetic_volumes import lr_volume, trim_in_plane
        from CohfTSuperResLib.imageio.volumes import read_volume

        hr = trim_in_plane(read_volume(TRAINING_SUBJECT / "t2.nii.gz", float32=True), scale, AXIS)
        lr = lr_volume(hr, scale, AXIS)
        lr_stack = image_stack(lr, AXIS)  # (slices, rows, columns), as resample_to's voxels for axis 2
        t1_stack = resample_to(read_volume(TRAINING_SUBJECT / "t1.nii.gz", float32=True),
                               output_grid(Grid.of(lr), scale, AXIS))
        middle = lr_stack.shape[0] // 2
        chosen = range(middle - slices // 2, middle + slices // 2)
        lr_norm = normalize(lr_stack, robust_scale(lr_stack))
        t1_norm = normalize(t1_stack, robust_scale(t1_stack))
        self.feeds = [
            {"lr": pad_to_multiple(torch.from_numpy(lr_norm[[i]])[None], 30).numpy(),
             "t1": pad_to_multiple(torch.from_numpy(t1_norm[[i]])[None], 30 * scale).numpy()}
            for i in chosen
        ]

    def get_next(self) -> dict | None:
        return self.feeds.pop() if self.feeds else None


def score_on_held_out(model: Path, scale: int) -> tuple[dict, float]:
    """Held-out metrics (pooled PSNR, mean SSIM) of an ONNX model, and the seconds its volume took."""
    from CohfTSuperResLib.evaluation.evaluate import score
    from CohfTSuperResLib.inference.engine import super_resolve
    from CohfTSuperResLib.imageio.normalize import robust_scale
    from CohfTSuperResLib.inference.geometry import image_stack
    from CohfTSuperResLib.data.patches import brain_slices

    lr, t1, hr_stack, (rows, cols) = held_out_stacks(scale, 0, None)
    start = time.perf_counter()
    sr = super_resolve(lr, t1, scale, model_path=model, backend="onnx", device="cpu", slice_axis=AXIS)
    seconds = time.perf_counter() - start
    reference = robust_scale(hr_stack)
    target = hr_stack / reference
    brain = brain_slices(target)
    return score(image_stack(sr, AXIS)[:, rows, cols][brain] / reference, target[brain]), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from CohfTSuperResLib.weights.registry import find_model
    from CohfTSuperResLib.inference.onnx_export import export_onnx

    with tempfile.TemporaryDirectory() as folder:
        float_path, int8_path = Path(folder) / "float.onnx", Path(folder) / "int8.onnx"
        export_onnx(find_model("S", args.scale, True).load("cpu"), float_path)
        quantize_static(str(float_path), str(int8_path), _Calibration(args.scale), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
        quantised = onnx.load(str(int8_path))
        quantised.metadata_props.extend(onnx.load(str(float_path)).metadata_props)  # the Cohf-T configuration
        onnx.save(quantised, str(int8_path))
        print(f"| x{args.scale} | model | PSNR | SSIM | seconds for the held-out volume |\n|---|---|---|---|---|")
        results = {}
        for name, path in (("fp32", float_path), ("int8", int8_path)):
            metrics, seconds = score_on_held_out(path, args.scale)
            results[name] = metrics
            print(f"| x{args.scale} | {name} | {metrics['psnr']:.4f} | {metrics['ssim']:.5f} | {seconds:.1f} |",
                  flush=True)
        print(f"int8 PSNR drop: {results['fp32']['psnr'] - results['int8']['psnr']:.4f} dB (acceptable: <= 0.05)")


if __name__ == "__main__":
    main()
