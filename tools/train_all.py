"""Train every shipped model from a training pack, side by side, within one time budget; run it again to go on.

Usage (from the repository root; needs numpy and torch only, not SimpleITK):
    python tools/train_all.py --pack runs/mni_pack.npz --out OUT [--minutes 7.5] [--device cuda] [--models S_x2,...]

It starts one `cohft-sr train` process per model (the shipped in-plane models S x2 / x3 / x4 with the T1 and
without it, and the shipped through-plane networks of factor 4 with and without it: the flags of RUNS below,
those of the shipped files' own training), all at once on the same device, each with the same time budget,
and waits for them. Each run writes its checkpoint, logs and best weights to OUT/<name>/; a run whose
folder already holds a checkpoint resumes from it exactly (`--resume`), so calling this again with the
same OUT continues every model where it stopped: this is how a 9-minute GPU call is spent, and how
the CPU training was chained. `--init-from DIR` starts runs that have no checkpoint from
DIR/<name>/best.safetensors, `--init-from shipped` from the shipped model of the same name (fine-tuning).
Prints one summary line per run and writes OUT/summary.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from CohfTSuperResLib.options import THROUGH_PLANE_SCALE
from CohfTSuperResLib.weights.registry import find_model

# The guided in-plane models' guide randomisation, that of each shipped file (MODEL_CARD.md, "Guide randomisation"):
# misregistration at chance 0.75 for x2, where it won on the selection source ("Two more x2 fine-tunes"), and 0.3 for
# x3 and x4, where 0.6 lost there ("x3 and x4 at chance 0.6"); x3 with T1 slices averaged across the slices too ("x3
# with 2-D T1s in training").
IN_PLANE_GUIDE = {2: ["--guide-randomisation", "misregistration=0.75,resolution,intensity,dropout"],
                  3: ["--guide-randomisation", "misregistration=0.3,resolution,parallel_slices=0.3,intensity,dropout"],
                  4: ["--guide-randomisation", "misregistration=0.3,resolution,intensity,dropout"]}
# The through-plane networks of one factor: thick slices of 4 thin ones, 72-pixel patches, the default guide
# randomisation (MODEL_CARD.md, "Networks of one factor").
THROUGH_PLANE_F4 = ["--through-plane", "--factors", "4", "--patch", "72"]

# name -> (scale of the shipped model, T1 guide used, factor of a through-plane network, flags beyond the shared ones)
RUNS: dict[str, tuple[int, bool, int | None, list[str]]] = {
    "S_x2": (2, True, None, ["--scale", "2", *IN_PLANE_GUIDE[2]]),
    "S_x3": (3, True, None, ["--scale", "3", *IN_PLANE_GUIDE[3]]),
    "S_x4": (4, True, None, ["--scale", "4", *IN_PLANE_GUIDE[4]]),
    "S_x2_noT1": (2, False, None, ["--scale", "2", "--no-t1"]),
    "S_x3_noT1": (3, False, None, ["--scale", "3", "--no-t1"]),
    "S_x4_noT1": (4, False, None, ["--scale", "4", "--no-t1"]),
    "S_through_plane_f4": (THROUGH_PLANE_SCALE, True, 4, THROUGH_PLANE_F4),
    "S_through_plane_f4_noT1": (THROUGH_PLANE_SCALE, False, 4, [*THROUGH_PLANE_F4, "--no-t1"]),
}
SHARED = ["--variant", "S", "--iterations", "1000000", "--val-max-slices", "12", "--seed", "0", "--no-progress"]


def shipped_weights(name: str) -> str:
    """The `--init` value that fine-tunes the shipped model of a run's name (its file for a through-plane network,
    whose 'shipped' would start from the in-plane x2 model)."""
    scale, use_t1, factor, _flags = RUNS[name]
    if factor is None:
        return "shipped"
    return str(find_model("S", scale, use_t1, factor=factor).path)


def command(name: str, args: argparse.Namespace) -> list[str]:
    """The `cohft-sr train` command line of one run."""
    out = args.out / name
    argv = [sys.executable, "-m", "CohfTSuperResLib.training.train", "--pack", str(args.pack), "--out", str(out),
            *SHARED, *RUNS[name][3], "--lr", str(args.lr), "--lr-halve-every", str(args.lr_halve_every),
            "--device", args.device,
            "--time-budget-minutes", str(args.minutes), "--checkpoint-minutes", str(args.checkpoint_minutes),
            "--batch-size", str(args.batch_size)]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    if (out / "checkpoint" / "state.json").is_file():
        argv.append("--resume")
    elif args.init_from == "shipped":
        argv += ["--init", shipped_weights(name)]
    elif args.init_from is not None and (Path(args.init_from) / name / "best.safetensors").is_file():
        argv += ["--init", str(Path(args.init_from) / name / "best.safetensors")]
    return argv


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pack", type=Path, required=True, help="training pack (cohft-sr pack)")
    parser.add_argument("--out", type=Path, required=True, help="folder of the runs (kept between calls)")
    parser.add_argument("--minutes", type=float, default=7.5, help="training time of every run in this call")
    parser.add_argument("--lr", type=float, default=6e-4, help="starting learning rate (lower it to fine-tune)")
    parser.add_argument("--lr-halve-every", type=int, default=3000, help="halve the learning rate this often")
    parser.add_argument("--checkpoint-minutes", type=float, default=2.0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads per run")
    parser.add_argument("--models", default=",".join(RUNS), help=f"comma-separated subset of {', '.join(RUNS)}")
    parser.add_argument("--init-from", help="fine-tune runs without a checkpoint from DIR/<name>/best.safetensors, "
                        "or from the shipped models ('shipped')")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.models.split(",") if name.strip()]
    unknown = sorted(set(names) - set(RUNS))
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {', '.join(RUNS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    started = time.time()
    processes = {}
    for name in names:
        log = open(args.out / f"{name}.log", "a")
        processes[name] = (subprocess.Popen(command(name, args), stdout=log, stderr=subprocess.STDOUT, env=env), log)
    summary = {}
    for name, (process, log) in processes.items():
        status = process.wait()
        log.close()
        run = args.out / name / "run.json"
        result = json.loads(run.read_text()) if status == 0 and run.is_file() else {}
        summary[name] = {"status": status, "iterations": result.get("iterations"), "best": result.get("best"),
                         "hardware": result.get("hardware")}
        best = result.get("best") or {}
        print(f"{name}: exit {status}, {result.get('iterations')} iterations, best validation PSNR "
              f"{best.get('val_psnr', float('nan')):.3f} dB at {best.get('iteration')}", flush=True)
    summary["wall_seconds"] = round(time.time() - started, 1)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    return 0 if all(entry["status"] == 0 for key, entry in summary.items() if key != "wall_seconds") else 1


if __name__ == "__main__":
    raise SystemExit(main())
