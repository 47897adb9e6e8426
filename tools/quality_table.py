"""Markdown table of held-out quality from `cohft-sr evaluate` outputs (for the README and the model card).

Usage: python tools/quality_table.py EVAL_DIR   (reads EVAL_DIR/x2/metrics.json, x3, x4 where present)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

METHODS = (("bicubic", "bicubic"), ("zero_fill", "zero-filled k-space"), ("cohft_no_t1", "Cohf-T S without T1"),
           ("cohft", "Cohf-T S with T1"))


def main() -> None:
    folder = Path(sys.argv[1])
    print("| scale | method | PSNR dB | gain over bicubic dB | SSIM |")
    print("| --- | --- | --- | --- | --- |")
    for scale in (2, 3, 4):
        path = folder / f"x{scale}" / "metrics.json"
        if not path.is_file():
            continue
        metrics = json.loads(path.read_text())["mean"]
        bicubic = metrics["bicubic"]["psnr"]
        for key, name in METHODS:
            if key in metrics:
                value = metrics[key]
                print(f"| x{scale} | {name} | {value['psnr']:.2f} | {value['psnr'] - bicubic:+.2f} | "
                      f"{value['ssim']:.4f} |")


if __name__ == "__main__":
    main()
