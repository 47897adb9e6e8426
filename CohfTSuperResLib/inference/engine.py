"""Volume super-resolution: SimpleITK LR T2 (+ registered HR T1) in, SR T2 on the DFT output grid out (in-plane), or
thin slices out of a thick-slice T2 (through-plane, through_plane.py).

Pipeline (details in docs/inference.md):
1. validate the volumes and options before any model is loaded (``check_inputs``: InputError /
   WeightsError with the reason; the acquisition axis from the spacing unless given) and a weights file of the
   user's as far as its header tells (``backends.check_model_file``); with
   ``register``, register the T1 to the T2 (registration.py); unless ``guide_check`` is 'off', check on
   the input whether the T1 helps (guide_check.py) and act on it (a GuideNote says what happened); through-plane
   with ``adapt_steps``, fine-tune a copy of the network on the T2's own slices (subject_adaptation.py); with
   ``self_ensemble``, the network runs on flipped / transposed copies of each slice, averaged (self_ensemble.py);
2. output grid = LR grid with in-plane spacing / s and size x s (geometry.py);
3. robust-normalise T2 and T1 each by its own 99.5th percentile (imageio/normalize.py);
4. slice by slice along `slice_axis` (slice_run.py): in batches, on each batch's content box, whole or in tiles,
   the T1 resampled onto the output grid;
5. back to T2 units, float32; exactly 0 wherever the cubic upsampling of the
   input is exactly 0 (every LR sample in its support is 0), and all-zero
   slices are not run at all; a NaN / Inf network output is an InferenceError,
   never a returned volume.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import SimpleITK as sitk

from CohfTSuperResLib.errors import GuideNote, InputError, InputNote, ModelNotShipped
from CohfTSuperResLib.imageio.volumes import RECORD_KEYS
from CohfTSuperResLib.inference.allocator import reuse_freed_memory
from CohfTSuperResLib.inference.backends import check_model_file, load_runner
from CohfTSuperResLib.inference.devices import deterministic_kernels, resolve_device
from CohfTSuperResLib.inference.guide_check import GuideVerdict, check_guide
from CohfTSuperResLib.inference.input_checks import InputCheck, check_inputs
from CohfTSuperResLib.inference.registration import register_t1
from CohfTSuperResLib.inference.self_ensemble import self_ensembled
from CohfTSuperResLib.inference.slice_run import Cancel, Progress, in_plane_volume
from CohfTSuperResLib.inference.subject_adaptation import adapted_network
from CohfTSuperResLib.inference.through_plane import family_sizes, network_factor, through_plane_volume
from CohfTSuperResLib.inference.through_plane_guide_check import check_through_plane_guide, unchecked_reason
from CohfTSuperResLib.model import CohfTNet
from CohfTSuperResLib.options import RunOptions
from CohfTSuperResLib.weights.registry import find_model, model_name

__all__ = ["InputCheck", "RunOptions", "check_inputs", "super_resolve", "super_resolve_checked"]


def super_resolve(
    t2: sitk.Image,
    t1: sitk.Image | None,
    scale: int = 2,
    *,
    variant: str = "S",
    model_path: str | Path | None = None,
    device: str = "auto",
    backend: str = "torch",
    precision: str = "fp32",
    batch_size: int | None = None,
    slice_axis: int | None = None,
    whole_slices: bool = False,
    guide_check: str = "auto",
    register: bool = False,
    mode: str = "in-plane",
    slice_spacing: float | None = None,
    slice_profile: str = "off",
    slice_gap: float = 0.2,
    adapt_steps: int = 0,
    self_ensemble: int = 1,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
) -> sitk.Image:
    """Super-resolve the LR T2 volume in-plane by `scale`, guided by the registered HR T1; with
    mode='through-plane', restore thin slices of about `slice_spacing` mm along the thick axis of a thick-slice T2
    (slice_axis, or the acquisition axis; through_plane.py) instead, `scale` unused.

    t2: LR T2 (any scalar pixel type; 3-D, or one 2-D slice with a 2-D T1). t1: T1 in its own geometry (resampled
    here onto the output grid in physical space; zero outside its extent), or None for a model trained without T1.
    The other choices are those of ``options.RunOptions`` (checked there, once). progress(done, total) is called as
    slices finish; cancel() returning True stops with InferenceCancelled. Returns the float32 SR T2 in the input's
    units on the output grid, with the model that ran and the guide check's numbers in its metadata (RECORD_KEYS;
    NIfTI keeps a one-line summary as its description). Notes on what was decided (the acquisition axis) are
    InputNote warnings, what the guide check found and did a GuideNote, concerns (partial T1 coverage)
    RuntimeWarnings.
    Errors: InputError, WeightsError, InferenceError, InferenceCancelled (errors.py).
    """
    options = RunOptions(scale=scale, variant=variant, model_path=model_path, device=device, backend=backend,
                         precision=precision, batch_size=batch_size, slice_axis=slice_axis, whole_slices=whole_slices,
                         guide_check=guide_check, register=register, mode=mode, slice_spacing=slice_spacing,
                         slice_profile=slice_profile, slice_gap=slice_gap, adapt_steps=adapt_steps,
                         self_ensemble=self_ensemble)
    checked = check_inputs(t2, t1, options.scale, options.slice_axis, options.mode, options.slice_spacing)
    for note in checked.notes:
        warnings.warn(note, InputNote, stacklevel=2)
    for concern in checked.warnings:
        warnings.warn(concern, RuntimeWarning, stacklevel=2)
    return super_resolve_checked(checked, options, progress=progress, cancel=cancel)


def super_resolve_checked(checked: InputCheck, options: RunOptions, *, progress: Progress | None = None,
                          cancel: Cancel | None = None) -> sitk.Image:
    """``super_resolve`` of volumes that ``check_inputs`` accepted (its notes and warnings are the caller's to show),
    with the run's options; the checked scale and slice axis are the ones used."""
    device = resolve_device(options.device)
    check_model_file(options, checked.t1 is not None)
    verdict = None
    unchecked = "off"  # what the output's metadata keeps of a guide check that gave no verdict
    if checked.t1 is not None and options.register:
        registration = register_t1(checked.t2, checked.t1, checked.t2_scale)
        warnings.warn(registration.summary(), GuideNote, stacklevel=2)
        checked = dataclasses.replace(checked, t1=registration.t1)
    if checked.t1 is not None and options.guide_check != "off":
        try:
            verdict = (check_through_plane_guide if options.through_plane else check_guide)(checked, options)
        except ModelNotShipped as error:  # the check's models are not installed (a damaged one is an error)
            warnings.warn(f"guide check not run ({error}); running with the T1", GuideNote, stacklevel=2)
            unchecked = "not run: no shipped model to judge the T1 with"
        else:
            if verdict is None:
                unchecked = f"declined unchecked: {unchecked_reason(checked)}"
            checked, options, said = act_on(verdict, checked, options)
            warnings.warn(said, GuideNote, stacklevel=2)
    with deterministic_kernels(device), reuse_freed_memory():
        if options.through_plane:
            steps = options.adapt_steps
            total = steps + sum(family_sizes(checked))
            report = progress or (lambda done, _total: None)

            def adapt(network: CohfTNet) -> CohfTNet:
                return adapted_network(network, checked, steps, device, lambda done, _: report(done, total), cancel)

            runner = self_ensembled(load_runner(options, checked.t1 is not None, adapt if steps else None,
                                                factor=network_factor(checked.scale)), options.self_ensemble)
            result = through_plane_volume(checked, runner, options, device,
                                          lambda done, _: report(steps + done, total), cancel)
        else:
            runner = self_ensembled(load_runner(options, checked.t1 is not None), options.self_ensemble)
            result = in_plane_volume(checked, runner, options, device, progress, cancel)
    result = result[:, :, 0] if checked.single_slice else result
    record(result, options, checked.t1 is not None, verdict, checked.scale, unchecked)
    return result


def act_on(verdict: GuideVerdict | None, checked: InputCheck,
           options: RunOptions) -> tuple[InputCheck, RunOptions, str]:
    """The run's inputs and options after the guide check's verdict under options.guide_check, and the line that
    says what happened (``apply_guide_policy``). No verdict (a through-plane run the check declines unchecked,
    ``unchecked_reason``) counts as a T1 that does not help: nothing vouches for it, and a bad T1 costs more than no
    T1 (model card)."""
    if verdict is None:
        line = f"guide check: {unchecked_reason(checked)} (guide check 'off' uses it as given)"
        return apply_guide_policy(line, False, checked, options)
    return apply_guide_policy(verdict.summary(), verdict.helps, checked, options)


def apply_guide_policy(line: str, helps: bool, checked: InputCheck,
                       options: RunOptions) -> tuple[InputCheck, RunOptions, str]:
    """The run's inputs and options under options.guide_check for a T1 that helps or not, and `line` completed with
    what happened; InputError for 'refuse' when it does not help. 'auto' swaps the shipped guided model for the
    shipped no-T1 model of the same variant and scale (through-plane: and factor); a weights file of the user's runs
    as given (warned)."""
    if helps:
        return checked, options, f"{line}; running with the T1"
    if options.guide_check == "refuse":
        raise InputError(f"{line}; not run (guide check 'refuse'): register the T1, or run without it")
    if options.guide_check == "warn":
        return checked, options, f"{line}; running with the T1 anyway (guide check 'warn')"
    if options.model_path is not None:  # a weights file of the user's is not swapped for a shipped model
        return checked, options, f"{line}; running {options.model_path.name} with the T1 all the same"
    factor = network_factor(checked.scale) if options.through_plane else None
    try:
        find_model(options.variant, options.network_scale, use_t1=False, factor=factor)
    except ModelNotShipped:
        return checked, options, f"{line}; running with the T1 all the same: no model without T1 ships for " \
                                 f"{model_name(options.variant, options.network_scale)}"
    without = dataclasses.replace(checked, t1=None, t1_scale=None, t1_coverage=None)
    return without, dataclasses.replace(options, model_path=None), f"{line}; running the model without T1 instead"


def record(result: sitk.Image, options: RunOptions, used_t1: bool, verdict: GuideVerdict | None, factor: int,
           unchecked: str) -> None:
    """Keep with the output which model ran and what the guide check measured, or without a verdict why not
    (`unchecked`; metadata, NIfTI description)."""
    kind = f"through-plane x{factor}" if options.through_plane else f"x{options.scale}"
    model = (f"shipped {options.variant} {kind} {'with' if used_t1 else 'without'} T1" if options.model_path is None
             else f"{options.model_path.name} ({kind})" if options.through_plane else options.model_path.name)
    if options.adapt_steps:
        model += f", adapted to this scan in {options.adapt_steps} steps"
    if options.self_ensemble > 1:
        model += f", self-ensemble of {options.self_ensemble}"
    if options.through_plane and options.slice_profile != "off":
        model += f", consistent with the thick slices ({options.slice_profile}, gap {options.slice_gap:g})"
    result.SetMetaData(RECORD_KEYS[0], model)
    result.SetMetaData(RECORD_KEYS[1], unchecked if verdict is None else verdict.record())
    brief = f"Cohf-T {model}" + ("" if verdict is None else f"; guide check {verdict.benefit_db:+.2f} dB")
    result.SetMetaData("ITK_FileNotes", brief[:79])
