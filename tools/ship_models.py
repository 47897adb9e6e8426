"""Copy trained models into Resources/Models and write their manifest (models.json).

Usage (from the repository root, after `cohft-sr train` runs and `cohft-sr evaluate` on the
held-out subject):

    python tools/ship_models.py --runs RUNS_DIR --evaluations EVAL_DIR [--variant S] [--scales 2 3 4]
    python tools/ship_models.py --replace RUN_DIR [RUN_DIR ...] --robustness EVAL.json [EVAL.json ...]
    python tools/ship_models.py --through-plane RUN_WITH_T1 RUN_WITHOUT_T1 --quality QUALITY.json [--snapshots N N]
    python tools/ship_models.py --freeze-guide-check [--variant S]
    python tools/ship_models.py --rewrite-stored

Expects RUNS_DIR/<variant>_x<s>/ (with T1) holding `best.safetensors` and `run.json` from
`cohft-sr train`, and EVAL_DIR/x<s>/metrics.json from `cohft-sr evaluate --model ... [--no-t1-model ...]`.
A model without T1 (RUNS_DIR/<variant>_x<s>_noT1/) is shipped where the evaluation of its scale has it.
The shipped file of each model is its best-on-validation checkpoint (selected on the validation slab,
never on the test subject); its sha256, training run summary and held-out metrics go into models.json.

``--replace`` ships single runs (scale and T1 use read from each file's header) in place of the entries they
replace and keeps the others; their held-out record is every row of the ``bench/guide_robustness.py --json``
files that measured that run's weights, as the guided model or as the no-T1 model (per subject of other sources:
bicubic, the no-T1 model, the registered, moved and foreign T1). An in-plane model replaced moves the guide check's
proxy at its scale (the check runs the shipped networks): choose that scale's threshold again on the selection
source (``bench/guide_check_cases.py --source selection``) and record it with the new sha256 in
``inference/guide_check.THRESHOLDS_DB`` / ``CALIBRATED_WITH`` (Testing/test_guide_check.py fails until then).

``--freeze-guide-check`` copies the shipped x2 pair of the variant (with and without T1) to the guide check's own
entries (role "guide-check": ``cohft_<variant>_x2_guide_check[_noT1].safetensors``), which the reduced-input proxy of
inference/guide_check.py runs (the through-plane check's in-plane part) and ``--replace`` never touches: the
through-plane threshold was calibrated with those weights. Run it only together with a new calibration of that check
(docs/benchmarks.md, "The through-plane guide check").

``--through-plane`` ships the two through-plane runs (``cohft-sr train --through-plane``, with and without T1) as
``cohft_<variant>_through_plane[_noT1].safetensors`` (a network of some factors only, e.g. ``--factors 4`` in
training: ``cohft_<variant>_through_plane_f4[_noT1].safetensors``, its entry naming them under "factors"), added to
the manifest or in place of the entries they replace; their held-out record is the
``bench/through_plane_quality.py --json`` file that measured both. The factors are read from the weights' header
(``--factors`` for weights written before it held them). ``--snapshots N_T1 N_NOT1`` ships instead each run's
snapshot of that iteration (``cohft-sr train --keep-snapshots``), chosen on another source than the run's validation.

Every shipped file holds its weights in SHIPPED_DTYPE (float16: half the bytes of the float32 a run writes; the
library computes in float32 whatever the file holds), with the run's header metadata. ``--rewrite-stored`` stores the
files already shipped again that way, each entry's earlier sha256 and tensor type kept under "stored_from".
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from CohfTSuperResLib.options import THROUGH_PLANE_FACTORS, THROUGH_PLANE_SCALE
from CohfTSuperResLib.inference.guide_check import REDUCED_SCALE
from CohfTSuperResLib.training.checkpoint import snapshot_path
from CohfTSuperResLib.weights.registry import GUIDE_CHECK, MANIFEST_NAME, SUPER_RESOLUTION
from CohfTSuperResLib.weights.storage import CONFIG_KEY, load_model, read_metadata, save_weights, sha256_of

MODELS = Path(__file__).resolve().parents[1] / "Resources" / "Models"
DATA_SPLIT = ("open_ms (Lesjak et al. 2017, CC-BY): mni/patient07 and mni/patient19 trained every model; the "
              "guide-randomised fine-tunes also trained on templates/icbm2009c_sym and were selected on "
              "templates/mni152_fsl; held out for reporting: open_ms mni/patient26 and BraTS-GLI-00000-000 "
              "(BraTS 2023)")
# What shipped weights are stored as (measured against float32 by bench/weights_precision.py: docs/benchmarks.md,
# "Shipped weights in float16").
SHIPPED_DTYPE = torch.float16


def shipped_name(variant: str, scale: int, use_t1: bool, factors: tuple[int, ...] = THROUGH_PLANE_FACTORS) -> str:
    """The file name a model ships under in Resources/Models."""
    every_factor = set(factors) == set(THROUGH_PLANE_FACTORS)
    task = ("through_plane" + ("" if every_factor else "_f" + "".join(map(str, factors)))) \
        if scale == THROUGH_PLANE_SCALE else f"x{scale}"
    return f"cohft_{variant}_{task}{'' if use_t1 else '_noT1'}.safetensors"


def store_shipped(source: Path, target: Path) -> None:
    """Write the weights of `source` to `target` in SHIPPED_DTYPE, with source's header metadata (target may be
    source)."""
    metadata = {key: value for key, value in read_metadata(source).items() if key != CONFIG_KEY}
    save_weights(load_model(source), target, metadata, dtype=SHIPPED_DTYPE)


def stored_dtypes(path: Path) -> list[str]:
    """The tensor types a weights file holds, e.g. ['float32']."""
    return sorted({str(tensor.dtype).removeprefix("torch.") for tensor in load_file(str(path)).values()})


def shipped_weights(run: Path, snapshot: int | None) -> Path:
    """The weights of a run that ship: its best on validation, or the snapshot of that iteration."""
    return run / "best.safetensors" if snapshot is None else snapshot_path(run, snapshot)


def selected_checkpoint(run: Path, summary: dict[str, Any], snapshot: int | None) -> dict[str, Any]:
    """The record of the shipped checkpoint: the run's best on validation, or a snapshot chosen on another source
    (its row of the run's validation log). SystemExit where that is the starting weights of a fine-tune."""
    iteration = summary["best"]["iteration"] if snapshot is None else snapshot
    if summary.get("init") and iteration == 0:
        start = summary["init"]["path"]
        raise SystemExit(f"{run}: no checkpoint beat the starting weights ({start}); its best.safetensors is that "
                         "file, nothing new to ship" if snapshot is None else
                         f"{run}: the snapshot of iteration 0 is the starting weights ({start}), nothing new to ship")
    if snapshot is None:
        return summary["best"]
    with open(run / "val_log.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if int(row["iteration"]) == snapshot]
    if not rows or not snapshot_path(run, snapshot).is_file():
        raise SystemExit(f"{run}: no snapshot of iteration {snapshot} (cohft-sr train --keep-snapshots)")
    return {"iteration": snapshot, "train_seconds": float(rows[-1]["train_seconds"]),
            "chosen": "a snapshot chosen on another source than the run's validation (MODEL_CARD.md)"}


def model_entry(variant: str, scale: int, use_t1: bool, run: Path, held_out: dict[str, Any],
                factors: tuple[int, ...] = THROUGH_PLANE_FACTORS, snapshot: int | None = None) -> dict[str, Any]:
    """Copy one run's best weights (or its snapshot of that iteration) into Resources/Models; its manifest entry
    (factors: those a through-plane network was trained for)."""
    through_plane = scale == THROUGH_PLANE_SCALE
    every_factor = set(factors) == set(THROUGH_PLANE_FACTORS)
    name = shipped_name(variant, scale, use_t1, factors)
    target = MODELS / name
    summary = json.loads((run / "run.json").read_text())
    selected = selected_checkpoint(run, summary, snapshot)
    store_shipped(shipped_weights(run, snapshot), target)
    network = load_model(target)
    if (network.config.scale, network.config.use_t1) != (scale, use_t1):
        raise SystemExit(f"{run}: the weights are x{network.config.scale}, use_t1={network.config.use_t1}")
    return {
        "variant": variant, "scale": scale, "use_t1": use_t1, "file": name, "sha256": sha256_of(target),
        "bytes": target.stat().st_size, "parameters": sum(p.numel() for p in network.parameters()),
        "normalisation": "each input volume divided by the 99.5th percentile of its positive voxels",
        "grid": ("through-plane: n thin slices tiling each thick slice (n = 2-6), interpolated by "
                 "upsample_slices_cubic before the network" + ("" if every_factor else
                 f"; trained for the network factors {', '.join(map(str, factors))} only")
                 if through_plane else
                 "DFT: LR sample j at HR sample s*j; output keeps the LR origin, in-plane spacing / s"),
        "training": {
            "last_command": summary["command"], "history": "MODEL_CARD.md, section Training procedure",
            "iterations": summary["iterations"] if snapshot is None else snapshot,
            "train_minutes": round((summary["train_seconds"] if snapshot is None else selected["train_seconds"]) / 60,
                                   1),
            "hardware": summary["hardware"], "data": summary["data"], "selected": selected, "torch": summary["torch"],
            "started_from": summary.get("init"),  # fine-tuned from these weights (None: random initialisation)
        },
        "held_out": held_out,
    } | ({} if every_factor or not through_plane else {"factors": list(factors)})


def evaluated_held_out(evaluation: dict[str, Any], use_t1: bool) -> dict[str, Any]:
    """The held-out record of a model from a `cohft-sr evaluate` metrics.json."""
    subject = evaluation["subjects"][0]
    return {
        "subject": subject["subject"], "brain_slices": subject["brain_slices"],
        "protocol": "cohft-sr evaluate (CohfTSuperResLib/evaluation/evaluate.py docstring)",
        "metrics": {key: subject["metrics"][key] for key in ("zero_fill", "bicubic", "cohft_no_t1", "cohft")
                    if key in subject["metrics"]},
        "this_model": "cohft" if use_t1 else "cohft_no_t1",
    }


def replaced_entry(run: Path, robustness: list[dict[str, Any]], variant: str, names: dict[Path, str]) -> dict[str, Any]:
    """Copy one run's best weights over the shipped file of its scale and T1 use; its manifest entry. names: the
    shipped file name of each weights file shipped in this call (the rows name a run's weights by their path)."""
    network = load_model(run / "best.safetensors")
    scale, use_t1 = network.config.scale, network.config.use_t1
    role = "model" if use_t1 else "no_t1_model"  # the column of a row that names these weights
    rows = [row for row in robustness if Path(row[role]).resolve() == (run / "best.safetensors").resolve()]
    if not rows:
        raise SystemExit(f"{run}: no bench/guide_robustness.py row measured its best.safetensors")
    return model_entry(variant, scale, use_t1, run, {
        "protocol": "bench/guide_robustness.py (CohfTSuperResLib/evaluation/guide_cases.py docstring)",
        "subjects": [{"subject": row["subject"], "every_nth_slice": row["every"],
                      "model": names.get(Path(row["model"]).resolve(), Path(row["model"]).name),
                      "no_t1_model": names.get(Path(row["no_t1_model"]).resolve(), Path(row["no_t1_model"]).name),
                      "metrics": row["metrics"]} for row in rows],
        "this_model": "registered" if use_t1 else "no-T1 model",
    })


def replace(runs: list[Path], robustness: list[Path], variant: str) -> None:
    """Ship each run in place of the shipped model of its scale and T1 use; other entries stay."""
    rows = [row for path in robustness for row in json.loads(path.read_text())]
    manifest = json.loads((MODELS / MANIFEST_NAME).read_text())
    names = {}
    for run in runs:
        config = load_model(run / "best.safetensors").config
        names[(run / "best.safetensors").resolve()] = shipped_name(variant, config.scale, config.use_t1)
    for run in runs:
        entry = replaced_entry(run, rows, variant, names)
        manifest["models"] = [old if old["file"] != entry["file"] else entry for old in manifest["models"]]
        print(f"shipped {run} as {entry['file']} (sha256 {entry['sha256'][:12]}...)")
    manifest["data"] = DATA_SPLIT
    (MODELS / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1) + "\n")


def freeze_guide_check(variant: str) -> None:
    """Copy the shipped x2 super-resolution pair of `variant` to the guide check's entries, replacing any earlier."""
    manifest = json.loads((MODELS / MANIFEST_NAME).read_text())
    sources = [entry for entry in manifest["models"] if entry.get("role", SUPER_RESOLUTION) == SUPER_RESOLUTION
               and (entry["variant"], entry["scale"]) == (variant, REDUCED_SCALE)]
    if sorted(entry["use_t1"] for entry in sources) != [False, True]:
        raise SystemExit(f"no shipped {variant} x{REDUCED_SCALE} pair (with and without T1) to freeze")
    frozen = []
    for source in sources:
        name = shipped_name(variant, REDUCED_SCALE, source["use_t1"]).replace(f"_x{REDUCED_SCALE}",
                                                                                 f"_x{REDUCED_SCALE}_guide_check")
        shutil.copyfile(MODELS / source["file"], MODELS / name)
        if sha256_of(MODELS / name) != source["sha256"]:
            raise SystemExit(f"{source['file']} does not match its sha256 in {MANIFEST_NAME}")
        frozen.append(source | {"role": GUIDE_CHECK, "file": name, "copied_from": source["file"]})
        print(f"froze {source['file']} as {name} (sha256 {source['sha256'][:12]}...)")
    kept = [entry for entry in manifest["models"]
            if not (entry.get("role") == GUIDE_CHECK and entry["variant"] == variant)]
    manifest["models"] = kept + frozen
    (MODELS / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1) + "\n")


def rewrite_stored() -> None:
    """Store every shipped file again in SHIPPED_DTYPE (those not so yet), its entry's sha256 and size updated."""
    manifest = json.loads((MODELS / MANIFEST_NAME).read_text())
    wanted = str(SHIPPED_DTYPE).removeprefix("torch.")
    for entry in manifest["models"]:
        path = MODELS / entry["file"]
        if sha256_of(path) != entry["sha256"]:
            raise SystemExit(f"{entry['file']} does not match its sha256 in {MANIFEST_NAME}")
        before = stored_dtypes(path)
        if before == [wanted]:
            continue
        store_shipped(path, path)
        entry["stored_from"] = {"sha256": entry["sha256"], "dtype": ", ".join(before)}
        entry["sha256"], entry["bytes"] = sha256_of(path), path.stat().st_size
        print(f"stored {entry['file']} in {wanted} (sha256 {entry['sha256'][:12]}..., was "
              f"{entry['stored_from']['sha256'][:12]}...)")
    (MODELS / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1) + "\n")


def ship_through_plane(runs: list[Path], quality: Path, variant: str, factors: list[int] | None,
                       snapshots: list[int] | None = None) -> None:
    """Ship the through-plane runs (with and without T1), each added or in place of its entry; factors: those the
    runs were trained for, where their weights' header does not say; snapshots: the iteration of each run's snapshot
    to ship instead of its best.safetensors (chosen on another source)."""
    if snapshots is not None and len(snapshots) != len(runs):
        raise SystemExit(f"{len(runs)} runs but {len(snapshots)} snapshot iterations")
    measured = json.loads(quality.read_text())
    manifest = json.loads((MODELS / MANIFEST_NAME).read_text())
    for index, run in enumerate(runs):
        snapshot = None if snapshots is None else snapshots[index]
        weights = shipped_weights(run, snapshot)
        network = load_model(weights)
        if network.config.scale != THROUGH_PLANE_SCALE:
            raise SystemExit(f"{run}: not a through-plane network (scale {network.config.scale})")
        key = "guided" if network.config.use_t1 else "no_t1"
        if Path(measured[key]).resolve() != weights.resolve():
            raise SystemExit(f"{quality} measured {measured[key]}, not {weights}")
        trained = read_metadata(weights).get("factors", factors or THROUGH_PLANE_FACTORS)
        entry = model_entry(variant, THROUGH_PLANE_SCALE, network.config.use_t1, run, {
            "protocol": "bench/through_plane_quality.py (CohfTSuperResLib/evaluation/through_plane_cases.py docstring)",
            "subjects": measured["rows"], "this_model": "registered" if network.config.use_t1 else "no-T1 model"},
            tuple(sorted(trained)), snapshot)
        kept = [old for old in manifest["models"] if old["file"] != entry["file"]]
        manifest["models"] = kept + [entry]
        print(f"shipped {run} as {entry['file']} (sha256 {entry['sha256'][:12]}...)")
    (MODELS / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path)
    parser.add_argument("--evaluations", type=Path)
    parser.add_argument("--replace", type=Path, nargs="+", help="run folders to ship in place of their entries")
    parser.add_argument("--robustness", type=Path, nargs="+", default=[], help="bench/guide_robustness.py --json files")
    parser.add_argument("--through-plane", type=Path, nargs="+", help="through-plane run folders to ship")
    parser.add_argument("--quality", type=Path, help="bench/through_plane_quality.py --json file")
    parser.add_argument("--snapshots", type=int, nargs="+",
                        help="with --through-plane: the iteration of each run's snapshot to ship (--keep-snapshots) "
                             "instead of its best.safetensors")
    parser.add_argument("--factors", type=int, nargs="+", choices=THROUGH_PLANE_FACTORS,
                        help="the factors the --through-plane runs were trained for, where their header does not say")
    parser.add_argument("--freeze-guide-check", action="store_true",
                        help="copy the shipped x2 pair to the guide check's own entries")
    parser.add_argument("--rewrite-stored", action="store_true",
                        help="store the shipped files again in the shipped precision (float16)")
    parser.add_argument("--variant", default="S")
    parser.add_argument("--scales", type=int, nargs="+", default=[2, 3, 4])
    args = parser.parse_args()
    if args.freeze_guide_check:
        freeze_guide_check(args.variant)
        return
    if args.rewrite_stored:
        rewrite_stored()
        return
    if args.replace:
        replace(args.replace, args.robustness, args.variant)
        return
    if args.through_plane:
        if args.quality is None:
            parser.error("--through-plane needs --quality")
        ship_through_plane(args.through_plane, args.quality, args.variant, args.factors, args.snapshots)
        return
    if args.runs is None or args.evaluations is None:
        parser.error("give --runs and --evaluations, or --replace with --robustness")
    MODELS.mkdir(parents=True, exist_ok=True)
    entries = []
    for scale in args.scales:
        evaluation = json.loads((args.evaluations / f"x{scale}" / "metrics.json").read_text())
        for use_t1 in (True, False):
            run = args.runs / f"{args.variant}_x{scale}{'' if use_t1 else '_noT1'}"
            if use_t1 or "cohft_no_t1" in evaluation["mean"]:  # shipped only with held-out metrics
                entries.append(model_entry(args.variant, scale, use_t1, run, evaluated_held_out(evaluation, use_t1)))
    manifest = {
        "data": "open_ms (Lesjak et al. 2017, CC-BY): mni/patient07 and mni/patient19 for training and "
                "validation, mni/patient26 held out for testing",
        "models": entries,
    }
    (MODELS / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum(entry["bytes"] for entry in entries)
    print(f"wrote {len(entries)} models ({total / 2**20:.1f} MiB) and {MODELS / MANIFEST_NAME}")


if __name__ == "__main__":
    main()
