"""Compute devices: which one to use ('auto' = CUDA, then MPS, then CPU) and how much memory it has free."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from CohfTSuperResLib.errors import InputError

CPU_WORKING_BUDGET = 3 << 29  # bytes of activations per CPU batch: keeps peak RSS low for any slice size
CPU_AVAILABLE_FRACTION = 0.25  # ... and never more than this fraction of the memory the OS reports available
GPU_FREE_FRACTION = 0.7  # share of the accelerator's free memory a batch may use (rest: allocator, workspaces)


def mps_available() -> bool:
    """True when Apple's Metal backend is built into this torch and usable."""
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def _local_gpu() -> int:
    """The GPU of this process: torchrun's LOCAL_RANK (one GPU per process), else 0."""
    return int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count()


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> first of cuda, mps, cpu that is usable; 'cpu', 'cuda', 'cuda:N', 'mps' are checked to exist.

    'auto' and 'cuda' take the GPU of torchrun's LOCAL_RANK when it is set (one GPU per process)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", _local_gpu())
        return torch.device("mps") if mps_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as error:
        raise InputError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from error
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {name!r} asked for, but this torch build sees no CUDA GPU")
        index = _local_gpu() if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise InputError(f"device {name!r} asked for, but only {torch.cuda.device_count()} CUDA GPU(s) exist")
        return torch.device("cuda", index)
    if device.type == "mps" and not mps_available():
        raise InputError("device 'mps' asked for, but Apple's MPS backend is not available here")
    if device.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"unsupported device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    return device


def available_memory_bytes() -> int:
    """Memory the OS reports available to new allocations (MemAvailable on Linux, else physical memory)."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def working_memory_budget(device: torch.device) -> int:
    """Bytes one batch of network activations may take on this device."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free * GPU_FREE_FRACTION)
    if device.type == "mps":
        free = torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory()
        return int(max(free, 0) * GPU_FREE_FRACTION)
    return int(min(CPU_WORKING_BUDGET, available_memory_bytes() * CPU_AVAILABLE_FRACTION))


def device_summary() -> list[str]:
    """One line per usable device, for `cohft-sr info`."""
    lines = [f"cpu: {os.cpu_count()} logical cores, torch uses {torch.get_num_threads()} threads"]
    for index in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        properties = torch.cuda.get_device_properties(index)
        lines.append(f"cuda:{index}: {properties.name}, {properties.total_memory / 2**30:.1f} GiB")
    if mps_available():
        lines.append("mps: Apple Metal GPU")
    return lines


@contextlib.contextmanager
def deterministic_kernels(device: torch.device) -> Iterator[None]:
    """On CUDA, use deterministic cuDNN kernels (no autotuning) for the duration; restores the settings after."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved
