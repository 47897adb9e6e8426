"""CUDA-only checks on a real card (skipped without one): out-of-memory handling under a real memory cap, and
reduced precision against fp32."""

from __future__ import annotations

import warnings

import pytest
import torch

from CohfTSuperResLib.inference.backends import TorchRunner
from CohfTSuperResLib.inference.batching import run_in_batches
from CohfTSuperResLib.inference.devices import deterministic_kernels
from CohfTSuperResLib.model import build_model
from CohfTSuperResLib.weights.registry import find_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

CUDA = torch.device("cuda")
SIDE = 120  # LR slice side of the memory checks (x2: 240 x 240 output)


def _slices(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(count, 1, SIDE, SIDE), torch.rand(count, 1, 2 * SIDE, 2 * SIDE)


def _runner_and_memory() -> tuple[TorchRunner, int, int]:
    """An S x2 runner on the GPU, the reserved bytes with it idle, and the reserved bytes one slice adds."""
    torch.manual_seed(0)
    runner = TorchRunner(build_model("S", 2))
    runner.run(*_slices(1), CUDA)
    torch.cuda.empty_cache()
    base = torch.cuda.memory_reserved()
    torch.cuda.reset_peak_memory_stats()
    runner.run(*_slices(1), CUDA)
    return runner, base, torch.cuda.max_memory_reserved() - base


def _run_capped(runner: TorchRunner, cap: int, items: int) -> tuple[list[tuple[int, str, bool]], torch.device, list]:
    """run_in_batches(items, batch 8) with GPU memory capped at `cap` bytes: (size, device, ran) per attempt."""
    attempts: list[tuple[int, str, bool]] = []

    def run_batch(chunk, device) -> None:
        try:
            runner.run(*_slices(len(chunk)), device)
        except torch.OutOfMemoryError:
            attempts.append((len(chunk), device.type, False))
            raise
        attempts.append((len(chunk), device.type, True))

    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(cap / torch.cuda.get_device_properties(0).total_memory)
    try:
        with warnings.catch_warnings(record=True) as caught, deterministic_kernels(CUDA):
            warnings.simplefilter("always")
            final = run_in_batches(list(range(items)), 8, CUDA, run_batch)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    return attempts, final, [str(w.message) for w in caught]


def test_a_real_out_of_memory_halves_the_batch_and_stays_on_the_gpu():
    runner, base, per_slice = _runner_and_memory()
    attempts, final, caught = _run_capped(runner, base + 5 * per_slice // 2, items=8)
    assert attempts[0] == (8, "cuda", False)
    ran = [size for size, device, done in attempts if done]
    assert sum(ran) == 8 and max(ran) <= 2 and final.type == "cuda"
    assert all(device == "cuda" for _size, device, _done in attempts) and not caught


def test_a_slice_that_never_fits_moves_to_the_cpu_with_a_warning():
    runner, base, per_slice = _runner_and_memory()
    attempts, final, caught = _run_capped(runner, base + per_slice // 4, items=8)
    assert [(size, device) for size, device, done in attempts if not done] == [
        (8, "cuda"), (4, "cuda"), (2, "cuda"), (1, "cuda")]
    assert final.type == "cpu" and sum(size for size, device, done in attempts if done and device == "cpu") == 8
    assert any("ran out of memory on a single slice" in message for message in caught)


@pytest.mark.parametrize("precision, mean_bound, max_bound", [("bf16", 0.01, 0.15), ("fp16", 0.002, 0.03)])
def test_reduced_precision_on_cuda_stays_close_to_fp32(precision, mean_bound, max_bound):
    """The shipped S x2 on a smooth synthetic head-like pair: autocast's error in normalised units (tissue 0..1)."""
    rows, cols = torch.meshgrid(torch.linspace(-1, 1, 2 * SIDE), torch.linspace(-1, 1, 2 * SIDE), indexing="ij")
    head = ((rows / 0.8) ** 2 + (cols / 0.7) ** 2 < 1).float()
    t1 = head * (0.6 + 0.3 * torch.cos(6 * rows) * torch.sin(5 * cols))
    t2 = head * (0.5 - 0.3 * torch.cos(6 * rows) * torch.sin(5 * cols))
    lr = torch.nn.functional.avg_pool2d(t2[None, None], 2)
    network = find_model("S", 2).load()
    with deterministic_kernels(CUDA):
        reference = TorchRunner(network).run(lr, t1[None, None], CUDA)
        reduced = TorchRunner(network, precision).run(lr, t1[None, None], CUDA)
    difference = (reduced - reference).abs()
    assert float(difference.mean()) < mean_bound and float(difference.max()) < max_bound
