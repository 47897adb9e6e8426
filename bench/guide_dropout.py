"""Can one guided network replace the guided / no-T1 pair? Its output with an empty guide against the no-T1 model's.

Usage: PYTHONPATH=. python bench/guide_dropout.py --guided W.safetensors [--no-t1 W.safetensors] [--every 4]
Protocol of CohfTSuperResLib/evaluation/guide_cases.py on the held-out subjects; the guided model is run through
the public engine with the registered T1 and with an all-zero T1 of the same geometry (what guide dropout trains
for; the input check refuses a constant T1, so the checked inputs are made with the registered one and the guide
is then emptied). Prints the PSNR of each and of the no-T1 model (default: the shipped one of the scale).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import SimpleITK as sitk
import torch

from CohfTSuperResLib.data.synthetic_volumes import lr_volume, trim_in_plane
from CohfTSuperResLib.evaluation.evaluate import score
from CohfTSuperResLib.evaluation.guide_cases import AXIS, reporting_subjects
from CohfTSuperResLib.imageio.normalize import robust_scale
from CohfTSuperResLib.inference import super_resolve, super_resolve_checked
from CohfTSuperResLib.inference.geometry import image_stack
from CohfTSuperResLib.inference.input_checks import check_inputs
from CohfTSuperResLib.data.patches import brain_slices
from CohfTSuperResLib.options import RunOptions
from CohfTSuperResLib.weights.registry import find_model
from CohfTSuperResLib.weights.storage import load_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guided", type=Path, required=True)
    parser.add_argument("--no-t1", type=Path)
    parser.add_argument("--every", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    scale = load_model(args.guided).config.scale
    no_t1 = args.no_t1 or find_model("S", scale, False).path
    print("| subject | x | no-T1 model | guided, registered T1 | guided, empty guide | empty - no-T1 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for subject in reporting_subjects(DATA):
        hr = trim_in_plane(subject.read("t2"), scale, AXIS)[:, :, ::args.every]
        hr_stack = image_stack(hr, AXIS)
        reference = robust_scale(hr_stack)
        brain = brain_slices(hr_stack / reference)
        target = hr_stack[brain] / reference
        lr = lr_volume(hr, scale, AXIS)
        t1 = subject.read("t1")
        options = RunOptions(scale=scale, model_path=args.guided, device="cpu", slice_axis=AXIS)
        checked = check_inputs(lr, t1, scale, AXIS)
        empty = sitk.Image(t1.GetSize(), sitk.sitkFloat32)
        empty.CopyInformation(t1)
        results = {
            "no-T1": super_resolve(lr, None, scale, model_path=no_t1, device="cpu", slice_axis=AXIS),
            "registered": super_resolve_checked(checked, options),
            "empty": super_resolve_checked(dataclasses.replace(checked, t1=empty, t1_scale=1.0), options),
        }
        psnr = {name: score(image_stack(image, AXIS)[brain] / reference, target)["psnr"]
                for name, image in results.items()}
        print(f"| {subject.name} | {scale} | {psnr['no-T1']:.3f} | {psnr['registered']:.3f} | {psnr['empty']:.3f} | "
              f"{psnr['empty'] - psnr['no-T1']:+.3f} |", flush=True)


if __name__ == "__main__":
    main()
