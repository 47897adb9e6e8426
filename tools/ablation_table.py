"""Markdown ablation table from `bench/t1_reliance.py --json` files (for the model card).

Usage: python tools/ablation_table.py LABEL=FILE.json [LABEL=FILE.json ...]
Each file holds the rows of one guided model (and maybe its no-T1 partner) on the held-out mni/patient26;
the table gives, per label and scale: PSNR / SSIM with the registered T1, the gain over bicubic, and the
PSNR with the T1 shifted 3 mm, with another subject's T1, and of the no-T1 model where there is one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

GUIDES = {"shifted": "T1 shifted 3 mm", "foreign": "T1 of another subject", "no_t1": "no T1 (model trained without)"}


def main(argv: list[str]) -> None:
    print("| configuration | scale | PSNR dB (registered T1) | gain over bicubic dB | SSIM | T1 shifted 3 mm | "
          "another subject's T1 | no-T1 model |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for argument in argv:
        label, _, file = argument.partition("=")
        for model in json.loads(Path(file).read_text()):  # one guided model (one scale) per entry
            guides = {row["guide"]: row for row in model["rows"]}
            registered, bicubic = guides["registered T1"], guides["bicubic (no network)"]
            cells = [f"{guides[name]['psnr']:.2f}" if name in guides else "-" for name in GUIDES.values()]
            print(f"| {label} | x{registered['scale']} | {registered['psnr']:.2f} | "
                  f"{registered['psnr'] - bicubic['psnr']:+.2f} | {registered['ssim']:.4f} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main(sys.argv[1:])
