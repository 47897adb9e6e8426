"""The network runners of the inference engine: torch (fp32, or bf16 / fp16 autocast) and ONNX Runtime.

A runner maps normalised, padded (B,1,h,w) LR T2 and (B,1,s*h,s*w) HR T1
tensors to the (B,1,s*h,s*w) SR tensor, float32 on the CPU, on a given device.
`load_runner` picks the weights: an explicit file (.safetensors, or .onnx for
the ONNX backend) or the shipped model for (variant, scale, with/without T1; through-plane, the factor).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch

from CohfTSuperResLib.errors import InputError, ModelNotShipped, WeightsError
from CohfTSuperResLib.inference.fast_paths import accelerate
from CohfTSuperResLib.inference.onnx_export import OnnxRunner, cached_export
from CohfTSuperResLib.model import CohfTConfig, CohfTNet
from CohfTSuperResLib.options import RunOptions
from CohfTSuperResLib.weights.header import fit_problem
from CohfTSuperResLib.weights.registry import SUPER_RESOLUTION, ShippedModel, find_model
from CohfTSuperResLib.weights.storage import load_model, sha256_of, weights_config

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # keyed by options.PRECISIONS


class Runner(Protocol):
    """What the inference engine needs from a backend."""

    config: CohfTConfig

    def run(self, lr: torch.Tensor, t1: torch.Tensor | None, device: torch.device) -> torch.Tensor: ...


class TorchRunner:
    """A CohfTNet in eval mode with the CPU fast paths swapped in (fast_paths.py; they defer to the reference network
    on other devices and precisions), moved to whichever device a batch asks for."""

    def __init__(self, network: CohfTNet, precision: str = "fp32") -> None:
        self.network = accelerate(network.eval())
        self.config = network.config
        self.dtype = AUTOCAST_DTYPES[precision]

    def run(self, lr: torch.Tensor, t1: torch.Tensor | None, device: torch.device) -> torch.Tensor:
        """SR of one batch on `device` (the network follows the device), float32 on the CPU."""
        self.network.to(device, memory_format=torch.channels_last)
        autocast = (
            torch.autocast(device.type, dtype=self.dtype) if self.dtype is not None else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            guide = None if t1 is None else _channels_last(t1, device)
            return self.network.super_resolve_image(_channels_last(lr, device), guide).float().cpu().contiguous()


def _channels_last(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """x on `device` in channels-last layout (the convolutions' fastest layout, about 25% faster on CPU)."""
    return x.to(device).contiguous(memory_format=torch.channels_last)


class OnnxSessionRunner:
    """An ONNX Runtime session (its execution provider fixes the device; `device` is ignored)."""

    def __init__(self, session: OnnxRunner) -> None:
        self.session = session
        self.config = session.config

    def run(self, lr: torch.Tensor, t1: torch.Tensor | None, device: torch.device) -> torch.Tensor:
        """SR of one batch with ONNX Runtime, float32 on the CPU."""
        return self.session(lr, t1)


def load_runner(options: RunOptions, use_t1: bool, adapt: Callable[[CohfTNet], CohfTNet] | None = None,
                factor: int | None = None, role: str = SUPER_RESOLUTION) -> Runner:
    """The runner for a run's options, with or without the T1; WeightsError / InputError when they do not fit
    (checked before any export or adaptation). adapt: applied to the loaded torch network before it runs
    (subject_adaptation.py). factor: the thick-slice factor a through-plane network runs at, which chooses among
    the shipped through-plane models (``find_model``). role: which shipped models (weights.registry: the guide
    check runs its own)."""
    path = options.model_path
    if path is not None and path.suffix == ".onnx":
        if options.backend != "onnx":
            raise InputError(f"{path.name} is an ONNX model: use the ONNX backend (--backend onnx; backend='onnx'), "
                             "or give a .safetensors weights file")
        runner = OnnxSessionRunner(OnnxRunner(path, options.device))
        _check_fits(runner.config, options.network_scale, use_t1, path)
        return runner
    if path is None:
        shipped = _shipped(options.variant, options.network_scale, use_t1, factor, role)
        network, key = shipped.load("cpu"), shipped.sha256
    else:
        network, key = load_model(path, device="cpu"), sha256_of(path)
    _check_fits(network.config, options.network_scale, use_t1, path)
    if adapt is not None:
        network = adapt(network)
    if options.backend == "onnx":
        return OnnxSessionRunner(OnnxRunner(cached_export(network, key), options.device))
    return TorchRunner(network, options.precision)


def check_model_file(options: RunOptions, use_t1: bool) -> None:
    """WeightsError / InputError, before anything runs with it (the guide check included), when the run's own weights
    file is missing, unreadable or does not fit the run, as far as its header and layout tell (its tensors are read
    when it is loaded; an ONNX file is opened then). Nothing to check for the shipped models."""
    path = options.model_path
    if path is None:
        return
    if path.suffix == ".onnx":
        if not path.is_file():
            raise WeightsError(f"ONNX model not found: {path}")
        return
    _check_fits(weights_config(path), options.network_scale, use_t1, path)


def _shipped(variant: str, scale: int, use_t1: bool, factor: int | None, role: str) -> ShippedModel:
    """The shipped model, with a hint about model_path when there is none."""
    try:
        return find_model(variant, scale, use_t1, factor, role)
    except ModelNotShipped as error:
        if role != SUPER_RESOLUTION:  # not the user's choice
            raise
        raise ModelNotShipped(f"{error}. Pass a weights file explicitly (model_path / --model PATH)") from error


def _check_fits(config: CohfTConfig, scale: int, use_t1: bool, path: Path | None) -> None:
    """InputError when the model's scale or T1 use differs from the request (weights.header.fit_problem)."""
    problem = fit_problem(path.name if path is not None else "the shipped model", config.scale, config.use_t1, scale,
                          use_t1)
    if problem:
        raise InputError(problem)
