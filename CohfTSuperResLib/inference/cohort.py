"""Cohort mode of `cohft-sr run`: the CSV manifest of cases, its split across torchrun ranks, and its summary.

Manifest columns: t2, output (required), t1, guide_check (one of options.GUIDE_CHECKS for this row; empty: the
command line's), mode (in-plane or through-plane for this row; empty: the command line's; a through-plane row takes
the command line's --slice-spacing, --slice-profile and --adapt-steps, given with --through-plane, an in-plane row
leaves them out; a through-plane row runs a --self-ensemble of 8 as 4, the most its planes have). The summary
(``write_summary``) has one row per case: what happened, the model that ran and the guide check's numbers (for a row
a rerun skips, as the earlier summary said: ``earlier_records``).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from CohfTSuperResLib.errors import InputError
from CohfTSuperResLib.options import GUIDE_CHECKS, MODES, RunOptions, self_ensemble_for_mode

REQUIRED_COLUMNS = ("t2", "output")
SUMMARY_COLUMNS = ("line", "t2", "t1", "output", "status", "model", "guide_check", "message")


@dataclass(frozen=True)
class Case:
    """One row of the manifest: LR T2, optional T1, SR output path, and the row's line number in the CSV."""

    t2: Path
    t1: Path | None
    output: Path
    line: int = 0
    guide_check: str | None = None  # this row's policy; None: the command line's
    mode: str | None = None  # this row's mode; None: the command line's

    def overrides(self, options: RunOptions) -> dict[str, Any]:
        """This row's RunOptions fields that replace those of the command line, `options` (an in-plane row drops the
        slice spacing, the adaptation and the slice profile of the through-plane mode, a through-plane row caps the
        self-ensemble)."""
        values: dict[str, Any] = {} if self.guide_check is None else {"guide_check": self.guide_check}
        if self.mode is not None:
            values["mode"] = self.mode
            if self.mode == "in-plane":
                values.update(slice_spacing=None, adapt_steps=0, slice_profile="off")
            else:
                values["self_ensemble"] = self_ensemble_for_mode(options.self_ensemble, self.mode)
        return values


def read_cases(path: str | Path) -> list[Case]:
    """Cases of a CSV with a header naming columns t2, output and optionally t1; paths relative to the CSV."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"manifest not found: {path}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:  # -sig: a byte-order mark is not a column name
            cases = _cases(csv.DictReader(handle), path)
    except UnicodeDecodeError as error:
        raise InputError(f"manifest {path.name} is not UTF-8 text: {error}") from error
    check_outputs(cases, path.name)
    return cases


def _cases(reader: csv.DictReader, path: Path) -> list[Case]:
    """The rows of an open manifest as Cases."""
    columns = [name.strip() for name in reader.fieldnames or []]
    missing = [name for name in REQUIRED_COLUMNS if name not in columns]
    if missing:
        raise InputError(
            f"manifest {path.name} lacks column(s) {', '.join(missing)} (header: {', '.join(columns)})"
        )
    cases = []
    for line, row in enumerate(reader, start=2):
        row = {key.strip(): (value or "").strip() for key, value in row.items() if key}
        if not row["t2"] or not row["output"]:
            raise InputError(f"manifest {path.name}, line {line}: t2 and output must not be empty")
        t1 = row.get("t1") or None
        guide = None if t1 is None else path.parent / t1
        policy = row.get("guide_check") or None
        if policy is not None and policy not in GUIDE_CHECKS:
            raise InputError(f"manifest {path.name}, line {line}: guide_check {policy!r} is not one of "
                             f"{', '.join(GUIDE_CHECKS)}")
        mode = row.get("mode") or None
        if mode is not None and mode not in MODES:
            raise InputError(f"manifest {path.name}, line {line}: mode {mode!r} is not one of {', '.join(MODES)}")
        cases.append(Case(path.parent / row["t2"], guide, path.parent / row["output"], line, policy, mode))
    if not cases:
        raise InputError(f"manifest {path.name} has a header but no rows: nothing to run")
    return cases


def check_outputs(cases: list[Case], name: str) -> None:
    """InputError when two rows write the same output, or a row's output is any row's T2 or T1 (it would destroy it)."""
    inputs = {}
    for case in cases:
        for source in (case.t2, case.t1):
            if source is not None:
                inputs.setdefault(source.resolve(), case.line)
    written: dict[Path, int] = {}
    for case in cases:
        output = case.output.resolve()
        if output in written:
            raise InputError(f"manifest {name}: lines {written[output]} and {case.line} write the same output "
                             f"{case.output.name}")
        if output in inputs:
            raise InputError(f"manifest {name}, line {case.line}: the output {case.output.name} is an input of line "
                             f"{inputs[output]}; writing it would destroy that input")
        written[output] = case.line


def shard(cases: list[Case]) -> list[Case]:
    """This process's share: every WORLD_SIZE-th case from index RANK (torchrun's variables; all when unset)."""
    try:
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    except ValueError as error:
        raise InputError(f"RANK and WORLD_SIZE must be integers: {error}") from error
    if world < 1 or not 0 <= rank < world:
        raise InputError(f"need 0 <= RANK < WORLD_SIZE, got RANK={rank}, WORLD_SIZE={world}")
    return cases[rank::world]


def summary_path(manifest: Path) -> Path:
    """Where the summary of a manifest's run goes: beside it (one file per torchrun rank)."""
    rank = os.environ.get("RANK")
    suffix = "" if rank in (None, "0") and os.environ.get("WORLD_SIZE", "1") == "1" else f"_rank{rank}"
    return manifest.with_name(f"{manifest.stem}_summary{suffix}.csv")


def earlier_records(path: Path) -> dict[str, dict[str, str]]:
    """What an earlier summary at `path` says of each output it wrote or kept (model, guide check), by output path;
    empty when there is none or it can not be read (a rerun then says less about the rows it skips, nothing worse)."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error):
        return {}
    return {row["output"]: {key: row.get(key) or "" for key in ("model", "guide_check")} for row in rows
            if row.get("output") and (row.get("model") or row.get("guide_check"))}


def write_summary(rows: list[dict[str, str]], path: Path) -> Path:
    """Write the summary rows (SUMMARY_COLUMNS) as CSV."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, SUMMARY_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({column: row.get(column, "") for column in SUMMARY_COLUMNS})
    return path
