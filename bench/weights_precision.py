"""Fewer bits per stored weight: every shipped network run with its weights as stored and rounded to float16 and to
bfloat16 (computed in float32 all the same), side by side on the sample slab of the held-out subject patient26.

Usage: PYTHONPATH=. python bench/weights_precision.py [--threads 2] [--json out.json]

Inputs (Resources/SampleData, so no outside data): in-plane networks get the slab's 1 x 1 x 3 mm HR T2 reduced
in-plane by their scale (the demo's k-space protocol), through-plane networks thick slices of their largest factor
simulated along x (box profile, no gap) and restored to 1 mm; each with the slab's registered T1 where the network
takes one, the guide check off. Printed per network and storage: PSNR against the HR truth (intensities / its robust
scale, whole volume), the largest difference from the output of the weights as stored (same units), and the size
of the file the weights would make. Where the shipped files hold float16 already, the float32 and float16 rows
coincide: the comparison with float32 originals runs on a checkout holding them (docs/benchmarks.md names it).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from CohfTSuperResLib.data.sample_data import read_sample
from CohfTSuperResLib.data.synthetic_volumes import lr_volume, thick_slice_volume, trim_in_plane
from CohfTSuperResLib.evaluation.metrics import psnr
from CohfTSuperResLib.imageio.normalize import robust_scale
from CohfTSuperResLib.inference.engine import super_resolve
from CohfTSuperResLib.options import THROUGH_PLANE_SCALE
from CohfTSuperResLib.weights.registry import ShippedModel, shipped_models
from CohfTSuperResLib.weights.storage import CONFIG_KEY, read_metadata, save_weights

STORAGES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
THICK_AXIS = 0  # x: the slab is 1 mm in x and y, 3 mm in z


def restore(model: ShippedModel, weights: Path, hr: sitk.Image, t1: sitk.Image) -> tuple[sitk.Image, sitk.Image]:
    """(the network's output, the truth on its grid) for the slab's HR T2 degraded as the module docstring says."""
    guide = t1 if model.use_t1 else None
    if model.scale == THROUGH_PLANE_SCALE:
        factor = max(model.factors)
        thick = thick_slice_volume(hr, factor, THICK_AXIS)
        output = super_resolve(thick, guide, mode="through-plane", slice_axis=THICK_AXIS, slice_spacing=1.0,
                               model_path=weights, guide_check="off", device="cpu")
        truth = sitk.Resample(hr, output, sitk.Transform(), sitk.sitkNearestNeighbor, 0.0, sitk.sitkFloat32)
        return output, truth
    truth = trim_in_plane(hr, model.scale)
    output = super_resolve(lr_volume(truth, model.scale), guide, model.scale, model_path=weights,
                           guide_check="off", device="cpu")
    return output, truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sample = read_sample()
    hr, t1 = sitk.Cast(sample["hr_t2"], sitk.sitkFloat32), sample["t1"]
    scale = robust_scale(sitk.GetArrayViewFromImage(hr))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for model in shipped_models():
            network = model.load()
            metadata = {key: value for key, value in read_metadata(model.path).items() if key != CONFIG_KEY}
            outputs = {}
            for name, dtype in STORAGES.items():
                stored = Path(folder) / f"{name}.safetensors"
                save_weights(network, stored, metadata, dtype=dtype)  # load_model computes in float32 whatever
                started = time.time()
                output, truth = restore(model, stored, hr, t1)
                outputs[name] = sitk.GetArrayFromImage(output) / scale
                rows.append({"file": model.file, "storage": name, "bytes": stored.stat().st_size,
                             "psnr": psnr(outputs[name], sitk.GetArrayFromImage(truth) / scale, 1.0),
                             "max_difference": float(np.abs(outputs[name] - outputs["float32"]).max()),
                             "seconds": round(time.time() - started, 1)})
                print(f"{model.file}: {name} {rows[-1]['psnr']:.4f} dB, max difference "
                      f"{rows[-1]['max_difference']:.2e}, {rows[-1]['bytes'] / 2**20:.2f} MiB", flush=True)
    print("\n| network | storage | MiB | PSNR dB | PSNR - float32 | max difference |")
    print("| --- | --- | --- | --- | --- | --- |")
    reference = {row["file"]: row["psnr"] for row in rows if row["storage"] == "float32"}
    for row in rows:
        print(f"| {row['file']} | {row['storage']} | {row['bytes'] / 2**20:.2f} | {row['psnr']:.4f} | "
              f"{row['psnr'] - reference[row['file']]:+.4f} | {row['max_difference']:.2e} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
