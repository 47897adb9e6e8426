"""`cohft-sr demo`: the whole job on the built-in brain phantom, with no network access and no outside data.

The HR T2 phantom is degraded by the paper's k-space protocol (degrade.py) into
the LR input, super-resolved with the T1 phantom as guide, and compared with
the HR truth and the project's bicubic baseline (upsample.py). Writes the LR,
HR, T1 and SR volumes and a comparison PNG (panels left to right: LR nearest
neighbour, bicubic, Cohf-T, HR truth; middle slice) and returns the PSNRs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .inference import super_resolve
from .metrics import psnr
from .phantom import brain_phantom
from .synthetic import bicubic_volume, lr_volume
from .volume_io import write_png, write_volume

PANELS = ("LR (nearest)", "bicubic", "Cohf-T", "HR truth")


@dataclass(frozen=True)
class DemoResult:
    """PSNRs (dB, data range = HR maximum) and the files written."""

    psnr_sr: float
    psnr_bicubic: float
    files: dict[str, Path]


def comparison_png(lr: np.ndarray, bicubic_slice: np.ndarray, sr: np.ndarray, hr: np.ndarray, scale: int) -> np.ndarray:
    """8-bit side-by-side image of one slice (see PANELS), all on the HR truth's intensity window."""
    nearest = np.repeat(np.repeat(lr, scale, axis=0), scale, axis=1)
    top = float(np.percentile(hr[hr > 0], 99.5))
    panels = [np.clip(panel / top, 0, 1) for panel in (nearest, bicubic_slice, sr, hr)]
    return (np.concatenate(panels, axis=1) * 255).round().astype(np.uint8)


def run_demo(
    output_dir: str | Path,
    scale: int = 2,
    *,
    model_path: str | Path | None = None,
    device: str = "auto",
    backend: str = "torch",
    progress: Callable[[int, int], None] | None = None,
) -> DemoResult:
    """Synthesise, super-resolve and compare the phantom; write the results into output_dir."""
    hr, t1 = brain_phantom()
    lr = lr_volume(hr, scale)
    sr = super_resolve(lr, t1, scale, model_path=model_path, device=device, backend=backend, progress=progress,
                       slice_axis=2)  # the phantom is isotropic: its LR is coarser in-plane than across slices
    baseline = bicubic_volume(lr, scale)
    images = {"lr": lr, "hr": hr, "sr": sr, "bicubic": baseline}
    arrays = {name: sitk.GetArrayFromImage(image) for name, image in images.items()}
    data_range = float(arrays["hr"].max())
    middle = arrays["hr"].shape[0] // 2
    output_dir = Path(output_dir)
    files = {
        name: write_volume(image, output_dir / f"{name}.nii.gz")
        for name, image in (("lr_t2", lr), ("hr_t2", hr), ("t1", t1), ("sr_t2", sr), ("bicubic_t2", baseline))
    }
    png = comparison_png(*(arrays[name][middle] for name in ("lr", "bicubic", "sr", "hr")), scale)
    files["comparison"] = write_png(png, output_dir / "comparison.png")
    return DemoResult(
        psnr(arrays["sr"], arrays["hr"], data_range), psnr(arrays["bicubic"], arrays["hr"], data_range), files
    )
