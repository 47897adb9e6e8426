"""Validation during training: PSNR / SSIM on whole validation slices (with a registered and a moved T1), and the
attention's health (training/attention_health.py) on one slice."""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from CohfTSuperResLib.data.patches import SliceSet
from CohfTSuperResLib.evaluation.metrics import psnr, ssim
from CohfTSuperResLib.model import CohfTNet
from CohfTSuperResLib.training.attention_health import attention_report, summary


def moved_one_voxel(t1: np.ndarray) -> np.ndarray:
    """The slice's content moved by one voxel down and right (zero filled): the validation's misregistered T1."""
    moved = np.zeros_like(t1)
    moved[1:, 1:] = t1[:-1, :-1]
    return moved


@torch.no_grad()
def validate(model: torch.nn.Module, data: SliceSet, use_t1: bool, device: torch.device, max_slices: int | None,
             bf16: bool = False) -> dict[str, float]:
    """Mean PSNR / SSIM (data range 1 on the normalised scale) over whole validation slices, for a guided model
    also the PSNR with the T1 moved by one voxel in-plane; val_score is what checkpoints are selected on."""
    was_training = model.training
    model.eval()
    scores_p, scores_s, scores_moved = [], [], []
    pairs = data.slices()
    if max_slices is not None and len(pairs) > max_slices:
        pairs = [pairs[int(i)] for i in np.linspace(0, len(pairs) - 1, max_slices).round()]

    def predict(lr: np.ndarray, t1: np.ndarray | None) -> np.ndarray:
        lr_t = on_device(torch.from_numpy(lr)[None, None], device)
        t1_t = None if t1 is None else on_device(torch.from_numpy(np.ascontiguousarray(t1))[None, None], device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            sr, _ = model(lr_t, t1_t)
        return sr.float()[0, 0].cpu().numpy()

    for volume, index in pairs:
        lr, hr, t1 = data.lr[volume][index], data.hr[volume][index], data.t1[volume][index]
        sr = predict(lr, t1 if use_t1 else None)
        scores_p.append(psnr(sr, hr, 1.0))
        scores_s.append(ssim(sr, hr, 1.0))
        if use_t1:
            scores_moved.append(psnr(predict(lr, moved_one_voxel(t1)), hr, 1.0))
    model.train(was_training)
    metrics = {"val_psnr": float(np.mean(scores_p)), "val_ssim": float(np.mean(scores_s)), "val_slices": len(pairs)}
    if use_t1:
        metrics["val_psnr_moved_t1"] = float(np.mean(scores_moved))
    metrics["val_score"] = float(np.mean([metrics["val_psnr"], metrics.get("val_psnr_moved_t1", metrics["val_psnr"])]))
    return metrics


def on_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """x on the device in channels-last layout (the convolutions' fastest; the model is channels-last too)."""
    return x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def attention_health(model: CohfTNet, data: SliceSet, use_t1: bool, device: torch.device) -> dict[str, float]:
    """attention_health.summary of the attention modules on the middle validation slice."""
    volume, index = data.slices()[data.num_slices // 2]
    lr = on_device(torch.from_numpy(data.lr[volume][index])[None, None], device)
    t1 = on_device(torch.from_numpy(data.t1[volume][index])[None, None], device) if use_t1 else None
    report = attention_report(model, lr, t1)
    collapsed = [row.name for row in report if row.collapsed or (row.cross_modal and row.uniform)]
    if collapsed:
        log(f"warning: attention collapsed (query/key weights near zero, or uniform inter-modality attention) in "
            f"{', '.join(collapsed)}")
    return {key: round(value, 6) for key, value in summary(report).items()}


def log(message: str) -> None:
    """A time-stamped line on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
