"""Small random-weight Cohf-T models and synthetic volumes shared by the inference, CLI and ONNX tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from CohfTSuperResLib.model import CohfTConfig, CohfTNet
from CohfTSuperResLib.weights.storage import save_weights

TINY = dict(dim=8, stages=1, rrdbs_per_stage=1, rdbs_per_rrdb=1, convs_per_rdb=2)


def tiny_model(scale: int = 2, use_t1: bool = True, seed: int = 0) -> CohfTNet:
    """A fast random-weight network with every block type of Cohf-T."""
    torch.manual_seed(seed)
    return CohfTNet(CohfTConfig(scale=scale, use_t1=use_t1, **TINY)).eval()


def save_tiny(folder: Path, scale: int = 2, use_t1: bool = True) -> Path:
    """Weights file of `tiny_model` in folder."""
    path = folder / f"tiny_x{scale}{'' if use_t1 else '_no_t1'}.safetensors"
    save_weights(tiny_model(scale, use_t1), path)
    return path


def volume(shape_kji: tuple[int, int, int], spacing=(1.0, 1.0, 3.0), origin=(0.0, 0.0, 0.0), seed: int = 0,
           direction=None) -> sitk.Image:
    """Smooth positive random volume (a blob on zero background) with the given geometry."""
    rng = np.random.default_rng(seed)
    k, j, i = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape_kji), indexing="ij")
    blob = (i**2 + j**2 < 0.7).astype(np.float32) * (100 + 20 * rng.random(shape_kji, dtype=np.float32))
    image = sitk.GetImageFromArray(blob)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    return image


def guide_for(t2: sitk.Image, scale: int, seed: int = 1) -> sitk.Image:
    """A T1 on the T2's output grid (in-plane spacing / scale along axes 0 and 1)."""
    size = [n * scale if axis < 2 else n for axis, n in enumerate(t2.GetSize())]
    spacing = [d / scale if axis < 2 else d for axis, d in enumerate(t2.GetSpacing())]
    t1 = volume(tuple(reversed(size)), tuple(spacing), t2.GetOrigin(), seed)
    t1.SetDirection(t2.GetDirection())
    return t1
