"""Where the time of one volume goes: reading, T1 resampling, the network by kind of operation and by
part of the network, and each convolution shape with its achieved GFLOP/s.

Usage (from the repository root):
    PYTHONPATH=. python bench/profile_ops.py [--case clinical-x2] [--slices 3] [--threads 2]

Runs `super_resolve` (shipped S model, torch, CPU) on --slices middle slices of a benchmark case
(bench/benchmark.py) twice after a warm-up: once under wall-clock timers only (total, the network
runner, the T1 resampling), once under torch.profiler, whose self CPU times split the network's
wall time by kind of operator (the profiler's own overhead inflates its sums, so only its shares are
used; it inflates some operators far more than others), and once more with wall-clock forward hooks
on the network's parts (RRDBs, attentions, AdaIN, MLPs; no profiler). A convolution's FLOPs come
from its recorded shapes.
"""

from __future__ import annotations

import argparse
import collections
import collections.abc
import time

import torch
from torch.profiler import ProfilerActivity, profile

from benchmark import cpu_name, load_case

KINDS = {  # operator name fragment -> kind
    "convolution": "convolutions",
    "bmm": "attention (correlations, q/k/v projections, softmax)",
    "addmm": "attention (correlations, q/k/v projections, softmax)",
    "softmax": "attention (correlations, q/k/v projections, softmax)",
    "amax": "attention (correlations, q/k/v projections, softmax)",
    "exp": "attention (correlations, q/k/v projections, softmax)",
    "cat": "concatenations",
    "layer_norm": "layer norms",
    "copy_": "layout (copies, pixel (un)shuffle, padding)",
    "pixel_shuffle": "layout (copies, pixel (un)shuffle, padding)",
    "pixel_unshuffle": "layout (copies, pixel (un)shuffle, padding)",
    "pad": "layout (copies, pixel (un)shuffle, padding)",
}


def kind_of(name: str) -> str:
    """The kind of a profiler operator name; elementwise arithmetic and the rest are 'elementwise and other'."""
    return next((kind for fragment, kind in KINDS.items() if fragment in name), "elementwise and other")


def conv_weight_shape(shapes: list[list[int]]) -> list[int] | None:
    """The weight's shape among a convolution call's input shapes (a fused addition puts its addend first)."""
    return next((shape for shape in shapes[1:] if len(shape) == 4 and shape[2] <= 7 and shape[3] <= 7), None)


def conv_flops(shapes: list[list[int]]) -> int:
    """FLOPs of one convolution call from its input and weight shapes (stride 1 for the 3 x 3 ones)."""
    batch, _channels, height, width = shapes[0]
    out_channels, in_channels, kernel_h, kernel_w = conv_weight_shape(shapes)
    stride = kernel_h if kernel_h != 3 else 1  # the strided embeddings have kernel = stride
    return 2 * batch * out_channels * in_channels * kernel_h * kernel_w * (height // stride) * (width // stride)


def part_name(module: torch.nn.Module, inputs: tuple) -> str | None:
    """The table label of a network part whose time is measured, or None for the modules inside or between them."""
    from CohfTSuperResLib.model.adain import PointwiseAdaIN
    from CohfTSuperResLib.model.attention import BasicAttention
    from CohfTSuperResLib.model.layers import ResidualMLP
    from CohfTSuperResLib.model.rrdb import RRDB

    if isinstance(module, RRDB):
        return f"RRDBs on {inputs[0].shape[-2]} x {inputs[0].shape[-1]} maps"
    if isinstance(module, BasicAttention):
        guided = module.embed_context[0].stride[0] > 1
        return "inter-modality attention (HR context)" if guided else f"intra-modality attention ({module.grouping})"
    if isinstance(module, PointwiseAdaIN):
        return "AdaIN (HR T1 features)"
    return "residual MLPs" if isinstance(module, ResidualMLP) else None


def seconds_by_part(run: collections.abc.Callable[[], object]) -> dict[str, float]:
    """Wall-clock seconds of each kind of network part during run(), from global forward hooks."""
    seconds: dict[str, float] = collections.defaultdict(float)
    starts: dict[int, float] = {}

    def before(module: torch.nn.Module, inputs: tuple) -> None:
        if part_name(module, inputs) is not None:
            starts[id(module)] = time.perf_counter()

    def after(module: torch.nn.Module, inputs: tuple, _output: object) -> None:
        name = part_name(module, inputs)
        if name is not None:
            seconds[name] += time.perf_counter() - starts.pop(id(module))

    hooks = [torch.nn.modules.module.register_module_forward_pre_hook(before),
             torch.nn.modules.module.register_module_forward_hook(after)]
    try:
        run()
    finally:
        for hook in hooks:
            hook.remove()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", default="clinical-x2")
    parser.add_argument("--slices", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from CohfTSuperResLib.inference import geometry
    from CohfTSuperResLib.inference import engine as inference
    from CohfTSuperResLib.inference.backends import TorchRunner

    start = time.perf_counter()
    t2, t1, scale = load_case(args.case)
    reading = time.perf_counter() - start
    middle = t2.GetSize()[2] // 2 - args.slices // 2
    part = t2[:, :, middle : middle + args.slices]
    resampling = [0.0]
    original = geometry.resample_to

    def timed_resample(*call_args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        begin = time.perf_counter()
        result = original(*call_args, **kwargs)
        resampling[0] += time.perf_counter() - begin
        return result

    inference.resample_to = timed_resample
    network_seconds = [0.0]
    run = TorchRunner.run

    def timed_run(self, *call_args):  # noqa: ANN001, ANN002, ANN202
        begin = time.perf_counter()
        result = run(self, *call_args)
        network_seconds[0] += time.perf_counter() - begin
        return result

    TorchRunner.run = timed_run
    inference.super_resolve(part, t1, scale, device="cpu", slice_axis=2)  # warm-up
    resampling[0] = network_seconds[0] = 0.0
    start = time.perf_counter()
    inference.super_resolve(part, t1, scale, device="cpu", slice_axis=2)
    total = time.perf_counter() - start
    network = network_seconds[0]
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        inference.super_resolve(part, t1, scale, device="cpu", slice_axis=2)
    events = [event for event in prof.key_averages(group_by_input_shape=True) if event.self_cpu_time_total > 0]
    profiled = sum(event.self_cpu_time_total for event in events) / 1e6
    print(f"# CPU: {cpu_name()}; {args.threads} threads; torch {torch.__version__}")
    print(f"\n## {args.case}: {args.slices} middle slices, {total:.2f} s in super_resolve; "
          f"reading both volumes {reading:.2f} s (once per volume)\n")
    print("| part | seconds | share of super_resolve |\n|---|---|---|")
    print(f"| T1 resampling onto the output grid (SimpleITK) | {resampling[0]:.2f} | {resampling[0] / total:.1%} |")
    kinds: dict[str, float] = collections.defaultdict(float)
    for event in events:
        kinds[kind_of(event.key)] += event.self_cpu_time_total / 1e6 / profiled * network
    for kind, seconds in sorted(kinds.items(), key=lambda item: -item[1]):
        print(f"| network: {kind} | {seconds:.2f} | {seconds / total:.1%} |")
    rest = total - network - resampling[0]
    print(f"| rest (normalisation, content box, numpy, Python) | {rest:.2f} | {rest / total:.1%} |")
    network_seconds[0] = 0.0
    parts = seconds_by_part(lambda: inference.super_resolve(part, t1, scale, device="cpu", slice_axis=2))
    hooked = network_seconds[0]  # the network's time in this run
    print(f"\n| network part (wall clock, forward hooks; the network took {hooked:.2f} s in this run) | seconds | "
          "share of the network |\n|---|---|---|")
    for name, seconds in sorted(parts.items(), key=lambda item: -item[1]):
        print(f"| {name} | {seconds:.2f} | {seconds / hooked:.1%} |")
    rest = hooked - sum(parts.values())
    print(f"| rest (input gates' and stages' convolutions, upsamplers, image head, cubic) | {rest:.2f} | "
          f"{rest / hooked:.1%} |")
    print("\n| convolution (input, weight), under the profiler | calls | seconds | achieved GFLOP/s |")
    print("|---|---|---|---|")
    convolutions = [event for event in events if "convolution" in event.key and event.input_shapes
                    and conv_weight_shape(event.input_shapes) is not None]
    for event in sorted(convolutions, key=lambda e: -e.self_cpu_time_total)[:15]:
        seconds = event.self_cpu_time_total / 1e6
        flops = conv_flops(event.input_shapes) * event.count
        print(f"| {event.input_shapes[0]} x {conv_weight_shape(event.input_shapes)} | {event.count} | {seconds:.3f} | "
              f"{flops / seconds / 1e9:.0f} |")


if __name__ == "__main__":
    main()
