"""Every choice a caller can make, in one place that imports nothing heavy (no torch, no SimpleITK).

The command line, the inference engine's checks, the backends, evaluation, training and the 3D Slicer
module all read their choices from here, so they can not disagree. ``RunOptions`` holds the choices of
one super-resolution run, checked once when it is made. Which (variant, scale, T1) models exist is a
fact of the installation, not an option: see ``weights.registry.available_models``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from CohfTSuperResLib.errors import InputError

SCALES = (2, 3, 4)
# Through-plane mode (inference/through_plane.py): thin slices per thick slice the models were trained for, and the
# scale of their network, which restores planes already interpolated onto the thin grid (so one network serves
# every factor).
THROUGH_PLANE_FACTORS = (2, 3, 4, 5, 6)
THROUGH_PLANE_SCALE = 1
# Slice profiles of a thick-slice acquisition (data/degradations.py: what training simulates), and the profile the
# through-plane mode makes its thin slices consistent with (inference/slice_consistency.py; 'off': not at all).
SLICE_PROFILES = ("box", "gaussian")
CONSISTENCY_PROFILES = ("off", "gaussian", "box")
MODES = ("in-plane", "through-plane")
VARIANTS = ("S", "M", "L")
DEVICES = ("auto", "cpu", "cuda", "mps")  # 'cuda:N' names one GPU of several
BACKENDS = ("torch", "onnx")
PRECISIONS = ("fp32", "bf16", "fp16")
SLICE_AXES = (0, 1, 2)
GUIDE_CHECKS = ("auto", "warn", "refuse", "off")  # what to do when the T1 does not help (inference/guide_check.py)
# Self-ensemble (inference/self_ensemble.py): how many flipped / transposed copies of each slice are run and averaged;
# through-plane planes are not transposed (their thick axis must stay along the rows), so at most 4 there.
SELF_ENSEMBLES = (1, 2, 4, 8)
THROUGH_PLANE_SELF_ENSEMBLES = (1, 2, 4)
# Output formats: single files that hold a float32 3-D volume with its geometry, so a result appears
# complete or not at all.
OUTPUT_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")


def check_scale(scale: object, supported: Collection[int] | None = SCALES) -> int:
    """The scale factor as an int; InputError (a ValueError) unless it is a positive integer and, where `supported`
    is given, one of those (None: any positive integer, e.g. for the k-space synthesis)."""
    integer = isinstance(scale, numbers.Integral) and not isinstance(scale, bool)
    if not integer or int(scale) < 1 or (supported is not None and int(scale) not in supported):
        wanted = "a positive integer" if supported is None else "one of " + ", ".join(f"x{s}" for s in supported)
        raise InputError(f"scale must be {wanted}, got {scale!r}")
    return int(scale)


def check_slice_spacing(value: object) -> float | None:
    """The through-plane target slice spacing in mm as a float (None: the default); InputError unless positive."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise InputError(f"slice_spacing must be a positive number of millimetres, got {value!r}")
    return float(value)


def check_slice_gap(value: object) -> float:
    """The slice gap as a float in [0, 1) (the fraction of the slice spacing that a slice's profile does not cover);
    InputError otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value < 1.0:
        raise InputError(f"slice_gap must be a fraction of the slice spacing in [0, 1), got {value!r}")
    return float(value)


def check_choice(value: str, choices: tuple[str, ...], what: str) -> str:
    """value if it is one of choices, else an InputError listing them."""
    if value not in choices:
        raise InputError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")
    return value


def self_ensemble_for_mode(count: int, mode: str) -> int:
    """The self-ensemble `count` a run in `mode` can take: through-plane planes are never transposed, so a larger
    count runs as the most they have (what a cohort's through-plane row and the 3D Slicer module do)."""
    return min(count, max(THROUGH_PLANE_SELF_ENSEMBLES)) if mode == "through-plane" else count


def check_slice_axis(slice_axis: object) -> int:
    """The slice axis as an int in SLICE_AXES; InputError otherwise."""
    if isinstance(slice_axis, bool) or not isinstance(slice_axis, numbers.Integral) or slice_axis not in SLICE_AXES:
        raise InputError(f"slice_axis must be 0, 1 or 2 (voxel axis i, j or k), got {slice_axis!r}")
    return int(slice_axis)


@dataclass(frozen=True)
class RunOptions:
    """The choices of one super-resolution run, checked when the object is made (InputError naming the problem).

    scale: the in-plane factor. variant: the network size of the shipped model. model_path: a weights file
    (.safetensors, or .onnx with backend 'onnx'); None runs the shipped model of (variant, scale, with or without
    the T1). device: 'auto' (CUDA, MPS, CPU), 'cpu', 'cuda[:N]', 'mps'. backend: 'torch' or 'onnx'. precision:
    'fp32', 'bf16' or 'fp16' (torch autocast; ONNX runs in fp32). batch_size: slices per batch (None: one on the
    CPU, from free memory on a GPU). slice_axis: the voxel axis of the acquisition (None: decided from the
    spacing, see inference.input_checks). whole_slices: run the network on whole slices instead of the box
    around the head. guide_check: what to do with a T1 that the guide check (inference/guide_check.py) finds
    unhelpful: 'auto' runs the no-T1 model instead, 'warn' runs guided and warns, 'refuse' stops, 'off' skips the
    check. register: register the T1 to the T2 (rigid, mutual information) before the check and the run.
    mode: 'in-plane' (the slices super-resolved by `scale`) or 'through-plane' (thin slices restored along the
    thick slice axis of a thick-slice T2; `scale` does not apply, slice_axis is the thick axis).
    slice_spacing: the through-plane target spacing in mm (None: the in-plane spacing; see inference.input_checks).
    slice_profile, slice_gap: through-plane, make the thin slices consistent with the thick ones under this slice
    profile ('gaussian' or 'box'; 'off', the default: not) with profiles of (1 - slice_gap) times the thick slice
    spacing (inference/slice_consistency.py; 'gaussian' with the default gap 0.2 was the safest when the profile is
    not known); in-plane both are unused.
    adapt_steps: through-plane, first fine-tune a copy of the network on the T2's own thick slices for this many
    steps (inference/subject_adaptation.py; 0: off; torch backend only). self_ensemble: run the network on this
    many flipped / transposed copies of each slice and average them (inference/self_ensemble.py; 1: off; time
    grows in proportion).
    """

    scale: int = 2
    variant: str = "S"
    model_path: Path | None = None
    device: str = "auto"
    backend: str = "torch"
    precision: str = "fp32"
    batch_size: int | None = None
    slice_axis: int | None = None
    whole_slices: bool = False
    guide_check: str = "auto"
    register: bool = False
    mode: str = "in-plane"
    slice_spacing: float | None = None
    slice_profile: str = "off"
    slice_gap: float = 0.2
    adapt_steps: int = 0
    self_ensemble: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", check_scale(self.scale))
        check_choice(self.mode, MODES, "mode")
        object.__setattr__(self, "slice_spacing", check_slice_spacing(self.slice_spacing))
        if self.slice_spacing is not None and self.mode != "through-plane":
            raise InputError("slice_spacing sets the thin slices of the through-plane mode; it does not apply to "
                             "in-plane super-resolution (use scale)")
        check_choice(self.slice_profile, CONSISTENCY_PROFILES, "slice profile")
        if self.slice_profile != "off" and self.mode != "through-plane":
            raise InputError("slice_profile makes the thin slices of the through-plane mode consistent with the thick "
                             "ones; it does not apply to in-plane super-resolution")
        object.__setattr__(self, "slice_gap", check_slice_gap(self.slice_gap))
        check_choice(self.variant, VARIANTS, "model variant")
        check_choice(self.backend, BACKENDS, "backend")
        check_choice(self.precision, PRECISIONS, "precision")
        check_choice(self.guide_check, GUIDE_CHECKS, "guide check")
        if not isinstance(self.device, str) or not self.device:
            raise InputError(f"device must be a name such as {', '.join(DEVICES)} or cuda:N, got {self.device!r}")
        if self.model_path is not None:
            if str(self.model_path).strip() == "":
                raise InputError("model_path is empty: give a weights file, or None for the shipped model")
            object.__setattr__(self, "model_path", Path(self.model_path))
        if self.backend == "onnx" and self.precision != "fp32":
            raise InputError(f"the ONNX backend runs in fp32 only, not {self.precision}; use backend='torch' for "
                             f"{self.precision}")
        batch = self.batch_size
        if batch is not None and (isinstance(batch, bool) or not isinstance(batch, numbers.Integral) or batch < 1):
            raise InputError(f"batch_size must be a positive integer or None, got {batch!r}")
        if self.slice_axis is not None:
            object.__setattr__(self, "slice_axis", check_slice_axis(self.slice_axis))
        self._check_adaptation()
        self._check_self_ensemble()

    def _check_self_ensemble(self) -> None:
        """InputError unless self_ensemble is one of the counts the mode can run."""
        count = self.self_ensemble
        allowed = THROUGH_PLANE_SELF_ENSEMBLES if self.through_plane else SELF_ENSEMBLES
        if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count not in allowed:
            why = " (through-plane planes are flipped, never transposed)" if self.through_plane else ""
            raise InputError(f"self_ensemble must be one of {', '.join(map(str, allowed))}{why}, got {count!r}")
        object.__setattr__(self, "self_ensemble", int(count))

    def _check_adaptation(self) -> None:
        """InputError unless adapt_steps is a non-negative integer, used only where it can run."""
        steps = self.adapt_steps
        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
            raise InputError(f"adapt_steps must be a non-negative integer (0: no adaptation), got {steps!r}")
        if steps and not self.through_plane:
            raise InputError("adapting the network to the scan is part of the through-plane mode; it does not apply "
                             "to in-plane super-resolution")
        if steps and self.backend != "torch":
            raise InputError("adapting the network to the scan fine-tunes it with PyTorch; use backend='torch'")
        object.__setattr__(self, "adapt_steps", int(steps))

    @property
    def through_plane(self) -> bool:
        return self.mode == "through-plane"

    @property
    def network_scale(self) -> int:
        """The scale of the network this run needs: `scale` in-plane, THROUGH_PLANE_SCALE through-plane."""
        return THROUGH_PLANE_SCALE if self.through_plane else self.scale

    def command_line(self) -> list[str]:
        """The options as `cohft-sr run` arguments (what the 3D Slicer module's child process is given)."""
        arguments = ["--through-plane"] if self.through_plane else ["--scale", str(self.scale)]
        if self.slice_spacing is not None:
            arguments += ["--slice-spacing", repr(self.slice_spacing)]
        if self.through_plane:
            arguments += ["--slice-profile", self.slice_profile, "--slice-gap", repr(self.slice_gap)]
        if self.adapt_steps:
            arguments += ["--adapt-steps", str(self.adapt_steps)]
        if self.self_ensemble > 1:
            arguments += ["--self-ensemble", str(self.self_ensemble)]
        arguments += ["--device", self.device, "--backend", self.backend, "--precision", self.precision]
        arguments += ["--model", str(self.model_path)] if self.model_path is not None else ["--variant", self.variant]
        if self.batch_size is not None:
            arguments += ["--batch-size", str(self.batch_size)]
        if self.slice_axis is not None:
            arguments += ["--slice-axis", str(self.slice_axis)]
        if self.whole_slices:
            arguments.append("--whole-slices")
        arguments += ["--guide-check", self.guide_check]
        if self.register:
            arguments.append("--register")
        return arguments
