"""The `cohft-sr` command line: run, demo, info, export-onnx, and the train / evaluate entry points.

Every failure the user can fix prints one line `cohft-sr: error: ...` on stderr
and exits non-zero (1; 2 for bad arguments; 130 when interrupted, 143 on SIGTERM,
129 on SIGHUP, after removing any temporary file); warnings and notes print as
one line too. No traceback unless COHFT_SR_DEBUG=1. Cohort mode goes on after a
failed row, names it, and ends with a summary and exit status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import os
import signal
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from CohfTSuperResLib import __version__
from CohfTSuperResLib.errors import LIBRARY_ERRORS, InputError, InputNote, Terminated
from CohfTSuperResLib.options import (
    BACKENDS,
    CONSISTENCY_PROFILES,
    GUIDE_CHECKS,
    OUTPUT_SUFFIXES,
    PRECISIONS,
    SCALES,
    SELF_ENSEMBLES,
    SLICE_AXES,
    THROUGH_PLANE_SCALE,
    VARIANTS,
    RunOptions,
)

PROG = "cohft-sr"
DEBUG_ENV = "COHFT_SR_DEBUG"
DEFAULT_SCALE = 2  # in-plane, where --scale is not given
# subcommand -> module with its own main(argv)
DELEGATED = {"train": "training.train", "evaluate": "evaluation.evaluate", "pack": "data.pack"}
SIGNAL_STATUS = {signal.SIGTERM: 143, signal.SIGHUP: 129}


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scale", type=int, choices=SCALES, default=DEFAULT_SCALE,
                        help=f"in-plane upsampling factor (default {DEFAULT_SCALE})")
    parser.add_argument("--model", type=Path, help="weights file (.safetensors, or .onnx with --backend onnx); "
                        "default: the shipped model for --variant and --scale")
    parser.add_argument("--variant", choices=VARIANTS, default="S", help="shipped model size (default S)")
    parser.add_argument("--device", default="auto", help="auto (CUDA, MPS, CPU), cpu, cuda, cuda:N or mps")
    parser.add_argument("--backend", choices=BACKENDS, default="torch")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand handled here."""
    parser = argparse.ArgumentParser(prog=PROG, description="Guided MR T2 super-resolution with Cohf-T.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="super-resolve one T2 (with its T1), or a cohort from a CSV manifest")
    inputs = run.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--t2", type=Path, help="LR T2 volume (NIfTI, NRRD, MHA, ... or a DICOM series folder)")
    inputs.add_argument("--manifest", type=Path, help="CSV with columns t2, t1, output (t1 may be empty); "
                        "relative paths are relative to the CSV; finished outputs are skipped; "
                        "under torchrun each rank takes every WORLD_SIZE-th row")
    run.add_argument("--t1", type=Path, help="registered HR T1 volume (omit only for a model without T1)")
    run.add_argument("-o", "--output", type=Path, help=f"SR output ({', '.join(OUTPUT_SUFFIXES)})")
    _add_model_options(run)
    run.add_argument("--precision", choices=PRECISIONS, default="fp32")
    run.add_argument("--batch-size", type=int,
                     help="slices per batch (default: one on the CPU, from free memory on a GPU)")
    run.add_argument("--whole-slices", action="store_true",
                     help="run the network on whole slices, not only on the box around the head (slower)")
    run.add_argument("--slice-axis", type=int, choices=SLICE_AXES, default=None,
                     help="voxel axis of the acquisition (default: the axis whose spacing differs from the two others; "
                          "the thickest when all differ; 2 when all are equal)")
    run.add_argument("--through-plane", action="store_true",
                     help="restore thin slices along the thick slice axis of a thick-slice T2 (the in-plane grid kept; "
                          "--slice-axis names the thick axis, default the thickest; not with --scale)")
    run.add_argument("--slice-spacing", type=float, metavar="MM",
                     help="through-plane: the thin slices' spacing in mm, rounded so that each thick slice holds a "
                          "whole number of them (default: the in-plane spacing, at most 6 per slice)")
    run.add_argument("--slice-profile", choices=CONSISTENCY_PROFILES, default="off",
                     help="through-plane: make the thin slices average back to each thick slice under this slice "
                          "profile (default off; gaussian: the safest where the profile is not known, box: where it is "
                          "near rectangular; measured in docs/benchmarks.md, \"Consistency with the thick slices\")")
    run.add_argument("--slice-gap", type=float, default=0.2, metavar="FRACTION",
                     help="through-plane: the fraction of the slice spacing outside a slice's profile (its thickness "
                          "is 1 - FRACTION times the spacing; default 0.2)")
    run.add_argument("--adapt-steps", type=int, default=0, metavar="N",
                     help="through-plane: first fine-tune a copy of the network on this T2's own thick slices for N "
                          "steps (default 0: off; gain and cost measured in docs/benchmarks.md, "
                          "\"Adapting to the scan\")")
    run.add_argument("--self-ensemble", type=int, choices=SELF_ENSEMBLES, default=1, metavar="N",
                     help="run the network on N flipped / transposed copies of each slice and average them (1, 2, 4 "
                          "or 8; through-plane at most 4; default 1: off; N times the time, gain measured in "
                          "docs/benchmarks.md, \"Self-ensemble\")")
    run.add_argument("--guide-check", choices=GUIDE_CHECKS, default="auto",
                     help="check on the input whether the T1 helps: auto runs the no-T1 model where it does not, "
                          "warn runs guided and warns, refuse stops, off skips the check")
    run.add_argument("--register", action="store_true",
                     help="register the T1 to the T2 (rigid, mutual information) before the check and the run")
    run.add_argument("--overwrite", action="store_true", help="redo outputs that already exist (never an input)")
    run.add_argument("--progress-json", action="store_true",
                     help='progress as one JSON line per update on stdout ({"done": D, "total": T}) instead of a bar')
    run.set_defaults(handler=_run, scale=None)  # None: not given (2 in-plane; through-plane refuses it)

    demo = commands.add_parser("demo", help="super-resolve the shipped sample (real MR slab, held out from training) "
                               "and compare with bicubic")
    _add_model_options(demo)
    demo.add_argument("-o", "--output-dir", type=Path, default=Path("cohft_sr_demo"))
    demo.add_argument("--phantom", action="store_true", help="use the brain phantom generated in code instead")
    demo.set_defaults(handler=_demo)

    info = commands.add_parser("info", help="shipped models, devices, backends and versions")
    info.set_defaults(handler=_info)

    export = commands.add_parser("export-onnx", help="export a model to ONNX (dynamic batch and slice size)")
    export.add_argument("--model", type=Path, help="weights file (default: the shipped model)")
    export.add_argument("--variant", choices=VARIANTS, default="S")
    export.add_argument("--scale", type=int, choices=SCALES, default=2)
    export.add_argument("--no-t1", action="store_true", help="the shipped model without T1 guide")
    export.add_argument("--through-plane", action="store_true", help="the shipped through-plane model")
    export.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    export.add_argument("-o", "--output", type=Path, required=True, help="ONNX file to write")
    export.set_defaults(handler=_export)

    for name in DELEGATED:
        commands.add_parser(name, help=f"{name} a model (see `{PROG} {name} --help`)", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `cohft-sr`; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)

    def dispatch() -> int:
        if argv and argv[0] in DELEGATED:
            return _delegate(argv[0], argv[1:])
        args = build_parser().parse_args(argv)
        return int(args.handler(args) or 0)

    return reporting_errors(dispatch)


def reporting_errors(command: Callable[[], int]) -> int:
    """command()'s exit status, its warnings and errors said in one line each (a traceback only with
    $COHFT_SR_DEBUG), SIGTERM / SIGHUP unwinding like errors: every entry point of the package runs through this."""
    with _one_line_warnings(), _signals_unwind():
        try:
            return command()
        except KeyboardInterrupt:
            _error("interrupted")
            return 130
        except Terminated as stop:
            _error(str(stop))
            return stop.status
        except (*LIBRARY_ERRORS, OSError) as error:
            if os.environ.get(DEBUG_ENV):
                raise
            _error(str(error))
            return 1
        except Exception as error:  # last resort: still one line, the type tells what to report
            if os.environ.get(DEBUG_ENV):
                raise
            _error(f"unexpected {type(error).__name__}: {error} (set {DEBUG_ENV}=1 for the traceback)")
            return 1


def _delegate(command: str, argv: list[str]) -> int:
    """Hand the arguments to the `main` of the module that implements `command`."""
    name = f"{__package__}.{DELEGATED[command]}"
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name != name:
            raise
        raise InputError(f"`{PROG} {command}` is not available in this installation ({name} is missing)") from error
    return int(module.main(argv) or 0)


def _error(message: str) -> None:
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)


@contextlib.contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Print warnings as `cohft-sr: warning: ...` (InputNote as `cohft-sr: note: ...`) for the duration."""
    saved = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], *_args: object, **_kw: object) -> None:
        kind = "note" if issubclass(category, InputNote) else "warning"
        print(f"{PROG}: {kind}: {' '.join(str(message).split())}", file=sys.stderr)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = saved


@contextlib.contextmanager
def _signals_unwind() -> Iterator[None]:
    """For the duration, SIGTERM and SIGHUP raise Terminated (in the main thread) instead of killing at once."""
    def stop(signum: int, _frame: object) -> None:
        raise Terminated(f"stopped by {signal.Signals(signum).name}", SIGNAL_STATUS[signum])

    try:
        saved = {signum: signal.signal(signum, stop) for signum in SIGNAL_STATUS}
    except ValueError:  # not the main thread (e.g. called from a worker thread): leave signals alone
        yield
        return
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def _progress_bar(description: str, json_lines: bool = False) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """A tqdm bar over slices, opened at the first report: (progress callback for super_resolve, close).

    json_lines: instead of the bar, print {"done": D, "total": T, "input": NAME} on stdout at each report,
    flushed at once, for a program that runs this one (the 3D Slicer module).
    """
    if json_lines:
        def report(done: int, total: int) -> None:
            print(json.dumps({"done": done, "total": total, "input": description}), flush=True)

        return report, lambda: None

    from tqdm import tqdm

    bars: list[tqdm] = []

    def update(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(desc=description, total=total, unit="slice", leave=False, file=sys.stderr))
        bars[0].update(done - bars[0].n)

    def close() -> None:
        for bar in bars:
            bar.close()

    return update, close


def _run_options(args: argparse.Namespace) -> RunOptions:
    """The run's options from the command line, checked once."""
    scale = DEFAULT_SCALE if args.scale is None else args.scale
    return RunOptions(scale=scale, variant=args.variant, model_path=args.model, device=args.device,
                      backend=args.backend, precision=args.precision, batch_size=args.batch_size,
                      slice_axis=args.slice_axis, whole_slices=args.whole_slices, guide_check=args.guide_check,
                      register=args.register, mode="through-plane" if args.through_plane else "in-plane",
                      slice_spacing=args.slice_spacing, slice_profile=args.slice_profile,
                      slice_gap=args.slice_gap, adapt_steps=args.adapt_steps, self_ensemble=args.self_ensemble)


def _super_resolve_file(args: argparse.Namespace, options: RunOptions, t2: Path, t1: Path | None,
                        output: Path) -> dict[str, str]:
    """Check the output, read, super-resolve and write one case, holding the output's lock throughout; what was kept
    with the output (the model that ran, the guide check's numbers)."""
    from CohfTSuperResLib.imageio.volumes import RECORD_KEYS, OutputLock, check_output, read_volume, write_volume
    from CohfTSuperResLib.inference import super_resolve

    check_output(output, (t2, t1), args.overwrite)
    if t1 is not None and t1.exists() and t2.exists() and os.path.samefile(t1, t2):
        raise InputError(f"the T1 and the T2 are the same file ({t2.name}); the guide is the registered HR T1")
    with OutputLock(output):
        t2_image, t1_image = read_volume(t2), None if t1 is None else read_volume(t1)
        update, close = _progress_bar(t2.name, args.progress_json)
        try:
            image = super_resolve(t2_image, t1_image, **dataclasses.asdict(options), progress=update)
        finally:
            close()
        write_volume(image, output)
    return {"model": image.GetMetaData(RECORD_KEYS[0]), "guide_check": image.GetMetaData(RECORD_KEYS[1])}


def _run(args: argparse.Namespace) -> int:
    if args.manifest is not None and not args.through_plane and (args.slice_spacing is not None or args.adapt_steps):
        raise InputError("--slice-spacing and --adapt-steps set the through-plane mode: with a manifest, pass "
                         "--through-plane too (rows whose mode column says in-plane still run in-plane, without them)")
    if args.manifest is None and args.through_plane and args.scale is not None:
        raise InputError("--scale sets the in-plane factor; through-plane, the thin slices per thick slice come from "
                         "--slice-spacing (default: the in-plane spacing)")
    options = _run_options(args)
    if args.manifest is None:
        if args.output is None:
            raise InputError("--output (-o) is required with --t2")
        _super_resolve_file(args, options, args.t2, args.t1, args.output)
        print(f"wrote {args.output}")
        return 0
    if args.t1 is not None or args.output is not None:
        raise InputError("--t1 and --output come from the manifest's columns in cohort mode; do not pass them")
    from CohfTSuperResLib.inference.cohort import earlier_records, read_cases, shard, summary_path, write_summary

    cases = shard(read_cases(args.manifest))
    earlier = earlier_records(summary_path(args.manifest))  # what ran for the outputs this run will skip
    failed: list[str] = []
    skipped = 0
    rows = []
    for case in cases:
        row = {"line": str(case.line), "t2": str(case.t2), "t1": "" if case.t1 is None else str(case.t1),
               "output": str(case.output)}
        rows.append(row)
        if case.output.exists() and not args.overwrite:
            print(f"skip {case.output} (exists)")
            row.update(earlier.get(row["output"], {}), status="skipped (exists)")
            skipped += 1
            continue
        try:
            policy = dataclasses.replace(options, **case.overrides(options))
            row.update(_super_resolve_file(args, policy, case.t2, case.t1, case.output), status="written")
            print(f"wrote {case.output}")
        except (KeyboardInterrupt, Terminated):
            raise
        except Exception as error:  # one bad row must not stop the cohort; library errors say what is wrong
            known = isinstance(error, (*LIBRARY_ERRORS, OSError))
            reason = str(error) if known else f"unexpected {type(error).__name__}: {error}"
            failed.append(f"line {case.line}")
            row.update(status="failed", message=reason)
            _error(f"{args.manifest.name} line {case.line} ({case.t2.name}): {reason}")
    done = len(cases) - skipped - len(failed)
    summary = write_summary(rows, summary_path(args.manifest))
    print(f"cohort: {done} written, {skipped} skipped (exist), {len(failed)} failed of {len(cases)} row(s); "
          f"summary {summary}")
    if failed:
        _error(f"{len(failed)} of {len(cases)} row(s) failed: {', '.join(failed)}")
    return 1 if failed else 0


def _demo(args: argparse.Namespace) -> int:
    from CohfTSuperResLib.evaluation.demo import PANELS, SOURCES, run_demo

    update, close = _progress_bar("phantom" if args.phantom else "sample")
    try:
        result = run_demo(
            args.output_dir, args.scale, phantom=args.phantom, model_path=args.model, device=args.device,
            backend=args.backend, progress=update,
        )
    finally:
        close()
    print(f"input: {SOURCES[result.source]}")
    print(f"PSNR vs HR truth at x{args.scale}: Cohf-T {result.psnr_sr:.2f} dB, bicubic {result.psnr_bicubic:.2f} dB "
          f"({result.psnr_sr - result.psnr_bicubic:+.2f} dB)")
    for name, path in result.files.items():
        print(f"  {name}: {path}")
    print(f"  comparison panels, left to right: {', '.join(PANELS)}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from CohfTSuperResLib.info import info_lines

    print("\n".join(info_lines()))
    return 0


def _export(args: argparse.Namespace) -> int:
    from CohfTSuperResLib.weights.registry import find_model
    from CohfTSuperResLib.inference.onnx_export import export_onnx
    from CohfTSuperResLib.weights.storage import load_model

    if args.output.suffix != ".onnx":
        raise InputError(f"the ONNX output must end in .onnx, got {args.output.name}")
    if args.model is not None and args.output.exists() and os.path.samefile(args.output, args.model):
        raise InputError(f"the ONNX output {args.output} is the weights file it is exported from")
    folder = args.output.parent
    try:  # before the export, which takes a while
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"cannot write {args.output}: its folder can not be created ({error.strerror})") from error
    if not os.access(folder, os.W_OK):
        raise InputError(f"cannot write {args.output}: its folder {folder} is not writable")
    scale = THROUGH_PLANE_SCALE if args.through_plane else args.scale
    network = load_model(args.model) if args.model else find_model(args.variant, scale, not args.no_t1).load()
    print(f"wrote {export_onnx(network, args.output, args.opset)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
