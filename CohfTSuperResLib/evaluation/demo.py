"""`cohft-sr demo`: the whole job on real anatomy shipped with the project, with no network and no outside data.

Default input: the sample slab of the held-out subject mni/patient26 (data/sample_data.py; HR T2 of
1 x 1 x 3 mm and its registered 1 mm T1). ``phantom=True`` uses the brain phantom generated in code
(data/phantom.py) instead, for tests. The HR T2 is reduced in-plane by the paper's k-space protocol
(synthetic_volumes.lr_volume) into the LR input, super-resolved with the T1 as guide, and compared with the
HR truth and the bicubic baseline (synthetic_volumes.bicubic_volume). Intensities are divided by the HR T2's
robust scale (99.5th percentile of its positive voxels) and PSNR is taken over the whole volume with
data range 1. Writes the LR, HR, T1, SR and bicubic volumes and a comparison PNG of the middle slice
with labelled panels (PANELS, left to right) and returns the measured PSNRs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from CohfTSuperResLib.inference.engine import super_resolve
from CohfTSuperResLib.evaluation.metrics import psnr
from CohfTSuperResLib.imageio.normalize import robust_scale
from CohfTSuperResLib.data.phantom import brain_phantom
from CohfTSuperResLib.data.sample_data import read_sample
from CohfTSuperResLib.data.synthetic_volumes import bicubic_volume, lr_volume, trim_in_plane
from CohfTSuperResLib.imageio.volumes import write_png, write_volume

PANELS = ("LR input (nearest)", "bicubic", "Cohf-T", "HR truth")
MIN_PANEL_WIDTH = 256  # panels are enlarged by a whole factor to at least this width, so the labels fit
FONT_SIZE = 16  # pixels, Pillow's built-in font
LINE_HEIGHT = 20
MARGIN = 4
SOURCES = {
    "sample": "open_ms mni/patient26 slab (real MR, held out from training)",
    "phantom": "brain phantom generated in code",
}


@dataclass(frozen=True)
class DemoResult:
    """PSNRs in dB (see the module docstring), which input was used (a SOURCES key) and the files written."""

    psnr_sr: float
    psnr_bicubic: float
    source: str
    files: dict[str, Path]


def demo_input(phantom: bool, scale: int) -> tuple[sitk.Image, sitk.Image]:
    """(HR T2 truth as float32, HR T1) of the demo: the shipped sample slab, or the phantom."""
    if phantom:
        return brain_phantom()
    sample = read_sample()
    return trim_in_plane(sitk.Cast(sample["hr_t2"], sitk.sitkFloat32), scale), sample["t1"]


def caption(lines: list[str], width: int) -> np.ndarray:
    """uint8 caption bar `width` pixels wide: white text lines on black, left-aligned, clipped at the right
    (Pillow's built-in font)."""
    from PIL import Image, ImageDraw, ImageFont

    bar = Image.new("L", (width, MARGIN + LINE_HEIGHT * len(lines)), 0)
    draw, font = ImageDraw.Draw(bar), ImageFont.load_default(size=FONT_SIZE)
    for index, text in enumerate(lines):
        draw.text((MARGIN, MARGIN + index * LINE_HEIGHT), text, fill=255, font=font)
    return np.asarray(bar, dtype=np.uint8)


def comparison_png(slices: dict[str, np.ndarray], scale: int, titles: dict[str, list[str]]) -> np.ndarray:
    """8-bit side-by-side figure of one slice: for each name in ('lr', 'bicubic', 'sr', 'hr'), the panel
    with its caption lines above it; all panels on the HR truth's intensity window, enlarged alike."""
    hr = slices["hr"]
    top = float(np.percentile(hr[hr > 0], 99.5))
    zoom = -(-MIN_PANEL_WIDTH // hr.shape[1])
    columns = []
    for name in ("lr", "bicubic", "sr", "hr"):
        pixels = slices[name]
        factor = zoom * (scale if name == "lr" else 1)
        panel = np.repeat(np.repeat(np.clip(pixels / top, 0, 1), factor, axis=0), factor, axis=1)
        columns.append((panel * 255).round().astype(np.uint8))
    width = columns[0].shape[1]
    captions = [caption(titles[name], width) for name in ("lr", "bicubic", "sr", "hr")]
    height = max(bar.shape[0] for bar in captions)
    separator = np.full((height + columns[0].shape[0], 2), 128, dtype=np.uint8)
    figure = []
    for bar, panel in zip(captions, columns, strict=True):
        bar = np.pad(bar, ((0, height - bar.shape[0]), (0, 0)))
        figure += [np.concatenate([bar, panel], axis=0), separator]
    return np.concatenate(figure[:-1], axis=1)


def run_demo(
    output_dir: str | Path,
    scale: int = 2,
    *,
    phantom: bool = False,
    model_path: str | Path | None = None,
    device: str = "auto",
    backend: str = "torch",
    progress: Callable[[int, int], None] | None = None,
) -> DemoResult:
    """Synthesise the LR input, super-resolve it and compare with bicubic; write the results into output_dir."""
    hr, t1 = demo_input(phantom, scale)
    lr = lr_volume(hr, scale)
    sr = super_resolve(lr, t1, scale, model_path=model_path, device=device, backend=backend, progress=progress)
    baseline = bicubic_volume(lr, scale)
    arrays = {name: sitk.GetArrayFromImage(image) for name, image in
              (("lr", lr), ("hr", hr), ("sr", sr), ("bicubic", baseline))}
    reference = robust_scale(arrays["hr"])
    psnr_sr = psnr(arrays["sr"] / reference, arrays["hr"] / reference, 1.0)
    psnr_bicubic = psnr(arrays["bicubic"] / reference, arrays["hr"] / reference, 1.0)
    output_dir = Path(output_dir)
    files = {
        name: write_volume(image, output_dir / f"{name}.nii.gz")
        for name, image in (("lr_t2", lr), ("hr_t2", hr), ("t1", t1), ("sr_t2", sr), ("bicubic_t2", baseline))
    }
    middle = arrays["hr"].shape[0] // 2
    titles = {
        "lr": [PANELS[0], f"x{scale} in-plane"],
        "bicubic": [PANELS[1], f"PSNR {psnr_bicubic:.2f} dB"],
        "sr": [PANELS[2], f"PSNR {psnr_sr:.2f} dB"],
        "hr": [PANELS[3], "phantom" if phantom else "patient26"],
    }
    png = comparison_png({name: array[middle] for name, array in arrays.items()}, scale, titles)
    files["comparison"] = write_png(png, output_dir / "comparison.png")
    return DemoResult(psnr_sr, psnr_bicubic, "phantom" if phantom else "sample", files)
