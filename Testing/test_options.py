"""The run's options (options.RunOptions): checked once when made, the same fields as super_resolve's keywords,
and the command line that the 3D Slicer module gives its child process parses back to the same options."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest

from CohfTSuperResLib import cli
from CohfTSuperResLib.errors import InputError
from CohfTSuperResLib.options import RunOptions


@pytest.mark.parametrize(("choices", "message"), [
    ({"scale": 5}, "scale must be one of x2, x3, x4"),
    ({"scale": 2.0}, "scale must be"),
    ({"scale": True}, "scale must be"),
    ({"variant": "XL"}, "unknown model variant"),
    ({"backend": "tensorrt"}, "unknown backend"),
    ({"precision": "int8"}, "unknown precision"),
    ({"backend": "onnx", "precision": "bf16"}, "ONNX backend runs in fp32 only"),
    ({"batch_size": 0}, "batch_size must be a positive integer"),
    ({"batch_size": True}, "batch_size must be a positive integer"),
    ({"slice_axis": 3}, "slice_axis must be 0, 1 or 2"),
    ({"model_path": ""}, "model_path is empty"),
    ({"device": ""}, "device must be a name"),
    ({"mode": "through-plane", "slice_profile": "sinc"}, "unknown slice profile 'sinc'"),
    ({"slice_profile": "box"}, "slice_profile makes the thin slices of the through-plane mode consistent"),
    ({"slice_spacing": 2.0}, "slice_spacing sets the thin slices of the through-plane mode"),
    ({"mode": "through-plane", "slice_gap": 1.0}, r"slice_gap must be a fraction of the slice spacing in \[0, 1\)"),
    ({"mode": "through-plane", "slice_gap": -0.1}, "slice_gap must be"),
    ({"mode": "through-plane", "slice_gap": True}, "slice_gap must be"),
])
def test_bad_options_are_refused_when_made(choices, message):
    with pytest.raises(InputError, match=message):
        RunOptions(**choices)


def test_options_are_normalised_and_frozen():
    options = RunOptions(scale=3, model_path="weights/mine.safetensors", slice_axis=0)
    assert options.model_path == Path("weights/mine.safetensors") and options.scale == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.scale = 2


def test_super_resolve_takes_exactly_the_options_fields():
    from CohfTSuperResLib.inference.engine import super_resolve

    keywords = [name for name, parameter in inspect.signature(super_resolve).parameters.items()
                if parameter.kind is inspect.Parameter.KEYWORD_ONLY and name not in ("progress", "cancel")]
    assert ["scale", *keywords] == [field.name for field in dataclasses.fields(RunOptions)]


@pytest.mark.parametrize("options", [
    RunOptions(),
    RunOptions(scale=4, variant="M", device="cpu", backend="onnx", batch_size=3, slice_axis=1, whole_slices=True),
    RunOptions(scale=3, model_path="/models/mine.safetensors", precision="bf16", slice_axis=2),
    RunOptions(mode="through-plane", slice_spacing=1.5, slice_axis=0, guide_check="off"),
    RunOptions(mode="through-plane", adapt_steps=300),
    RunOptions(mode="through-plane", slice_profile="box", slice_gap=0.0),
    RunOptions(mode="through-plane", slice_profile="off"),
])
def test_the_child_command_line_parses_back_to_the_same_options(options):
    args = cli.build_parser().parse_args(["run", "--t2", "t2.nrrd", "-o", "sr.nrrd", *options.command_line()])
    assert cli._run_options(args) == options


def test_an_in_plane_cohort_row_leaves_out_the_through_plane_settings():
    """A cohort run with --through-plane settings: its in-plane rows run with none of them (each would be refused)."""
    from CohfTSuperResLib.inference.cohort import Case

    options = RunOptions(mode="through-plane", slice_spacing=1.0, slice_profile="box", adapt_steps=10)
    row = dataclasses.replace(options, **Case(Path("a"), None, Path("b"), mode="in-plane").overrides(options))
    assert (row.mode, row.slice_spacing, row.slice_profile, row.adapt_steps) == ("in-plane", None, "off", 0)
