"""Print the parameter count and forward FLOPs of every variant and scale, with and without the T1 guide.

Usage: python bench/model_size.py [--lr-size 60]
FLOPs are counted by torch.utils.flop_counter on one LR slice of the given side
(conv, matmul and attention; elementwise ops are not counted).
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from CohfTSuperResLib.model import build_model, count_parameters
from CohfTSuperResLib.options import SCALES, VARIANTS


def forward_flops(variant: str, scale: int, use_t1: bool, lr_size: int) -> int:
    """FLOPs of one forward pass on an lr_size x lr_size slice."""
    model = build_model(variant, scale, use_t1=use_t1).eval()
    lr = torch.rand(1, 1, lr_size, lr_size)
    t1 = torch.rand(1, 1, scale * lr_size, scale * lr_size) if use_t1 else None
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(lr, t1)
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lr-size", type=int, default=60, help="side of the LR slice for FLOPs (BraTS x4: 60)")
    args = parser.parse_args()
    print(f"| variant | scale | params with T1 | params without T1 | GFLOPs / {args.lr_size}x{args.lr_size} "
          "LR slice (with T1) |")
    print("| --- | --- | --- | --- | --- |")
    for variant in sorted(VARIANTS, key="SML".index):
        for scale in SCALES:
            guided = count_parameters(build_model(variant, scale))
            unguided = count_parameters(build_model(variant, scale, use_t1=False))
            gflops = forward_flops(variant, scale, True, args.lr_size) / 1e9
            print(f"| {variant} | x{scale} | {guided:,} | {unguided:,} | {gflops:.2f} |")


if __name__ == "__main__":
    main()
