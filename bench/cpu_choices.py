"""The measurements behind the CPU inference choices, each A against B in the same process.

Usage (from the repository root):
    PYTHONPATH=. python bench/cpu_choices.py [--threads 2] [--compile]

Rows (milliseconds, best of several runs, shipped S x2 model on a 390 x 360 LR slice where a
network is involved; max abs difference between A and B in the network's output units):
- one forward pass with glibc's default malloc against freed memory kept (inference/allocator.py);
- one forward pass of the reference network (model/) against the one with the CPU fast paths swapped in
  (inference/fast_paths.py), alternating call by call: medians and the median of the pairs' ratios;
- a residual dense block at LR and HR size, concatenating against fused (inference/fast_paths.py);
- window attention of the real shape, scaled_dot_product_attention against written out;
- the same attention, softmax then product against exp in place and division after (softmax_product);
- the same attention, exp in place and division after on all groups at once against chunks of groups
  (chunked_attention), with freed memory kept as in the engine;
- the inter-head softmax over 4 heads, torch.softmax against softmax_of_few;
- channel statistics of an HR map, var_mean over H x W against the channels-last rows;
- a 16 -> 16 convolution, one 360 x 390 map against a batch of four (GFLOP/s);
- the whole S x2 forward on a 390 x 330 LR slice with the attention's stable softmax (on all groups at once)
  against its CPU fast path (logit bounds, from the weights where they suffice; no row maxima; chunks of groups),
  alternating call by call (the machine's speed drifts): medians, and the median of the pairs' ratios;
- with --compile: torch.compile (inductor, freezing) of the whole network against eager, with
  the compile time (minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from benchmark import cpu_name

HEIGHT, WIDTH = 390, 360


def best_ms(function: Callable[[], object], repeats: int = 5) -> float:
    """Fastest of `repeats` timed calls after one warm-up, in milliseconds."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1000 * min(times)


def row(name: str, a: str, a_ms: float, b: str, b_ms: float, difference: float | None = None) -> None:
    """One table row: both timings, their ratio, and the difference of the results."""
    shown = "-" if difference is None else f"{difference:.1e}"
    print(f"| {name} | {a} {a_ms:.1f} | {b} {b_ms:.1f} | {a_ms / b_ms:.2f} | {shown} |", flush=True)


def channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def shipped_inputs() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The shipped S x2 network (channels-last, CPU fast paths swapped in, as the engine runs it) and a random
    390 x 360 LR slice with its HR T1."""
    from CohfTSuperResLib.inference.fast_paths import accelerate
    from CohfTSuperResLib.weights.registry import find_model

    network = accelerate(find_model("S", 2, True).load("cpu").eval().to(memory_format=torch.channels_last))
    generator = torch.Generator().manual_seed(0)
    lr = channels_last(torch.rand(1, 1, HEIGHT, WIDTH, generator=generator))
    return network, lr, channels_last(torch.rand(1, 1, 2 * HEIGHT, 2 * WIDTH, generator=generator))


def allocator_row(network: torch.nn.Module, lr: torch.Tensor, t1: torch.Tensor) -> None:
    from CohfTSuperResLib.inference.allocator import reuse_freed_memory

    forward = lambda: network.super_resolve_image(lr, t1)  # noqa: E731
    plain = best_ms(forward, 3)
    with reuse_freed_memory():
        kept = best_ms(forward, 3)
    row("S x2 forward, 390 x 360 LR", "glibc default", plain, "freed memory kept", kept)


def alternating(first: Callable[[], torch.Tensor], second: Callable[[], torch.Tensor],
                pairs: int) -> tuple[list[float], list[float], float]:
    """Milliseconds of `pairs` calls of each, alternating call by call after one warm-up of each (the machine's
    speed drifts), and the largest difference of their results."""
    first(), second()
    times: tuple[list[float], list[float]] = ([], [])
    results = []
    for _ in range(pairs):
        results = []
        for function, kept in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            results.append(function())
            kept.append(1000 * (time.perf_counter() - start))
    return times[0], times[1], (results[0] - results[1]).abs().max().item()


def fast_paths_row(network: torch.nn.Module, lr: torch.Tensor, t1: torch.Tensor, pairs: int = 8) -> None:
    import copy
    import statistics

    from CohfTSuperResLib.inference.allocator import reuse_freed_memory
    from CohfTSuperResLib.model import CohfTNet

    reference = CohfTNet(network.config).eval().to(memory_format=torch.channels_last)
    reference.load_state_dict(copy.deepcopy(network.state_dict()))
    with reuse_freed_memory():
        plain, fast, difference = alternating(lambda: reference.super_resolve_image(lr, t1),
                                              lambda: network.super_resolve_image(lr, t1), pairs)
    row("S x2 forward, 390 x 360 LR (medians)", "reference (model/)", statistics.median(plain),
        "fast paths", statistics.median(fast), difference)
    print(f"| the same, median of the {pairs} pairs' ratios | | | "
          f"{statistics.median(a / b for a, b in zip(plain, fast, strict=True)):.3f} | |")


def dense_block_rows() -> None:
    import copy

    from CohfTSuperResLib.inference.allocator import reuse_freed_memory
    from CohfTSuperResLib.inference.fast_paths import accelerate
    from CohfTSuperResLib.model.rrdb import ResidualDenseBlock

    torch.manual_seed(0)
    block = ResidualDenseBlock(16, 16, 3).eval().to(memory_format=torch.channels_last)
    fast = accelerate(copy.deepcopy(block))
    with reuse_freed_memory():
        for scale in (1, 2):
            x = channels_last(torch.randn(1, 16, scale * HEIGHT, scale * WIDTH))
            a, b = best_ms(lambda: block(x)), best_ms(lambda: fast(x))
            row(f"dense block (16, 3 convs), {scale * HEIGHT} x {scale * WIDTH}", "concatenating", a, "fused", b,
                (block(x) - fast(x)).abs().max().item())


def attention_rows() -> None:
    from CohfTSuperResLib.inference.allocator import reuse_freed_memory
    from CohfTSuperResLib.inference.fast_attention import chunked_attention, softmax_of_few, softmax_product
    from CohfTSuperResLib.inference.fast_paths import channels_last_stats

    generator = torch.Generator().manual_seed(0)
    groups = HEIGHT * WIDTH // 36
    q, k, v = (torch.randn(groups, 4, 36, 4, generator=generator) for _ in range(3))

    def written_out() -> torch.Tensor:
        return torch.softmax((q @ k.transpose(-1, -2)).mul_(1 / math.sqrt(4)), dim=-1) @ v

    fused = lambda: F.scaled_dot_product_attention(q, k, v)  # noqa: E731
    row(f"window attention ({groups} x 4 heads x 36 tokens x 4)", "scaled_dot_product_attention", best_ms(fused),
        "written out", best_ms(written_out), (fused() - written_out()).abs().max().item())
    scaled_q = q / math.sqrt(4)
    bound = float(scaled_q.norm(dim=-1).amax() * k.norm(dim=-1).amax())
    stable = lambda: torch.softmax(scaled_q @ k.transpose(-1, -2), dim=-1) @ v  # noqa: E731
    without_maxima = lambda: softmax_product(scaled_q @ k.transpose(-1, -2), v, bound)  # noqa: E731
    row(f"window attention ({groups} x 4 heads x 36 tokens x 4)", "softmax then product", best_ms(stable),
        "exp in place, division after", best_ms(without_maxima), (without_maxima() - stable()).abs().max().item())
    with reuse_freed_memory():
        row(f"window attention ({groups} x 4 heads x 36 tokens x 4), freed memory kept", "all groups at once",
            best_ms(without_maxima), "chunks of groups", best_ms(lambda: chunked_attention(scaled_q, k, v)),
            (chunked_attention(scaled_q, k, v) - without_maxima()).abs().max().item())
    scores = torch.randn(HEIGHT * WIDTH, 4, 4, generator=generator)
    row(f"inter-head softmax ({HEIGHT * WIDTH} x 4 x 4)", "torch.softmax", best_ms(lambda: torch.softmax(scores, -1)),
        "softmax_of_few", best_ms(lambda: softmax_of_few(scores)),
        (torch.softmax(scores, -1) - softmax_of_few(scores)).abs().max().item())
    hr = channels_last(torch.randn(1, 16, 2 * HEIGHT, 2 * WIDTH, generator=generator))
    reduce_hw = lambda: torch.var_mean(hr, dim=(-2, -1), keepdim=True, unbiased=False)  # noqa: E731
    row(f"channel statistics, 16 x {2 * HEIGHT} x {2 * WIDTH}", "var_mean over H x W", best_ms(reduce_hw),
        "channels-last rows", best_ms(lambda: channels_last_stats(hr)),
        (reduce_hw()[1] - channels_last_stats(hr)[0]).abs().max().item())


def batch_row() -> None:
    from CohfTSuperResLib.inference.allocator import reuse_freed_memory

    conv = torch.nn.Conv2d(16, 16, 3, padding=1).eval().to(memory_format=torch.channels_last)
    flops = 2 * 16 * 16 * 9 * HEIGHT * WIDTH
    one, four = (channels_last(torch.rand(n, 16, HEIGHT, WIDTH)) for n in (1, 4))
    with reuse_freed_memory():
        rate_one = flops / best_ms(lambda: conv(one)) / 1e6
        rate_four = 4 * flops / best_ms(lambda: conv(four)) / 1e6
    print(f"| 16 -> 16 conv, {HEIGHT} x {WIDTH}, GFLOP/s | batch 1 {rate_one:.0f} | batch 4 {rate_four:.0f} | "
          f"{rate_one / rate_four:.2f} | - |")


def softmax_forward_row(network: torch.nn.Module, lr: torch.Tensor, t1: torch.Tensor, pairs: int = 8) -> None:
    import statistics

    from CohfTSuperResLib.inference import fast_attention as attention
    from CohfTSuperResLib.inference.allocator import reuse_freed_memory

    safe_bound = attention.EXP_SAFE_BOUND
    lr, t1 = channels_last(lr[..., :330]), channels_last(t1[..., :660])

    def with_bound(bound: float) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            attention.EXP_SAFE_BOUND = bound  # 0: no logit is below it, the stable softmax everywhere
            return network.super_resolve_image(lr, t1)
        return run

    try:
        with reuse_freed_memory():
            stable, without, difference = alternating(with_bound(0.0), with_bound(safe_bound), pairs)
    finally:
        attention.EXP_SAFE_BOUND = safe_bound
    row("S x2 forward, 390 x 330 LR (medians)", "stable softmax", statistics.median(stable),
        "bounds, no row maxima, chunks", statistics.median(without), difference)
    print(f"| the same, median of the {pairs} pairs' ratios | | | "
          f"{statistics.median(a / b for a, b in zip(stable, without, strict=True)):.3f} | |")


def compile_row(network: torch.nn.Module, lr: torch.Tensor, t1: torch.Tensor) -> None:
    import torch._inductor.config as inductor

    inductor.freezing = True
    eager = best_ms(lambda: network.super_resolve_image(lr, t1), 3)
    compiled = torch.compile(network.super_resolve_image, dynamic=False)
    start = time.perf_counter()
    result = compiled(lr, t1)
    print(f"| torch.compile: compiling and the first call took {time.perf_counter() - start:.0f} s | | | | |")
    row("S x2 forward, 390 x 360 LR", "eager", eager, "torch.compile", best_ms(lambda: compiled(lr, t1), 3),
        (result - network.super_resolve_image(lr, t1)).abs().max().item())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# CPU: {cpu_name()}; {args.threads} threads; torch {torch.__version__}\n")
    print("| measurement | A (ms) | B (ms) | A / B | max abs diff |\n|---|---|---|---|---|")
    with torch.inference_mode():
        network, lr, t1 = shipped_inputs()
        allocator_row(network, lr, t1)
        fast_paths_row(network, lr, t1)
        dense_block_rows()
        attention_rows()
        batch_row()
        softmax_forward_row(network, lr, t1)
        if args.compile:
            compile_row(network, lr, t1)


if __name__ == "__main__":
    main()
