"""Adapting the through-plane network to the one thick-slice T2 it is about to restore (opt-in: RunOptions.adapt_steps).

The shipped through-plane networks learnt from 1 mm pairs of a few scanners. A thick-slice T2 carries training data
of its own: inside each thick slice the pixels are fine along both in-plane axes, so thick slices simulated along one
of them, with the run's factor, give input / target pairs with this scanner's contrast, noise and anatomy (the idea
of SMORE, Zhao et al. 2020), here with the T1 averaged over the same thick slices as the guide
(data/planes.OwnPlaneSampler). A copy of the network takes `steps` Adam steps on them with the training loss; the
weights on disk are never changed, and the result is restored with the adapted copy. Measured gain and cost:
docs/benchmarks.md ("Adapting to the scan").
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import SimpleITK as sitk
import torch

from CohfTSuperResLib.data.planes import OwnPlaneSampler
from CohfTSuperResLib.errors import InferenceCancelled, InferenceError
from CohfTSuperResLib.imageio.normalize import normalize
from CohfTSuperResLib.inference.geometry import Grid, resample_to, thin_slice_grid
from CohfTSuperResLib.inference.input_checks import InputCheck
from CohfTSuperResLib.inference.through_plane import THICK_AXIS, supersampling, thick_axis_last
from CohfTSuperResLib.model import CohfTNet
from CohfTSuperResLib.training.losses import CohfTLoss
from CohfTSuperResLib.training.optimisation import make_optimizer

LEARNING_RATE = 1e-4  # a tenth to a half of the training's: the shipped weights are a good start
BATCH_SIZE = 4
PATCH = 72  # the through-plane training's patch side
SEED = 0


def own_planes(checked: InputCheck) -> tuple[np.ndarray, np.ndarray | None, int, tuple[float, float]]:
    """What the adaptation trains on, from a checked thick-slice volume: its normalised voxels (K, J, I) with the thick
    slices along axis 0, the normalised T1 averaged over each thick slice (None without T1), the thin slices per
    thick slice the network runs at, and for axes J and I their spacing / the thin spacing."""
    order, _ = thick_axis_last(checked.slice_axis)
    t2 = sitk.PermuteAxes(checked.t2, order)
    factor = supersampling(checked.scale) * checked.scale
    voxels = normalize(sitk.GetArrayFromImage(t2).astype(np.float32), checked.t2_scale)
    spacing = t2.GetSpacing()
    thin = spacing[THICK_AXIS] / factor
    row_scales = (spacing[1] / thin, spacing[0] / thin)
    if checked.t1 is None:
        return voxels, None, factor, row_scales
    thin_t1 = resample_to(checked.t1, thin_slice_grid(Grid.of(t2), factor, THICK_AXIS))
    averaged = thin_t1.reshape(voxels.shape[0], factor, *voxels.shape[1:]).mean(axis=1)
    return voxels, normalize(averaged.astype(np.float32), checked.t1_scale), factor, row_scales


def adapted_network(network: CohfTNet, checked: InputCheck, steps: int, device: torch.device,
                    progress: Callable[[int, int], None] | None = None,
                    cancel: Callable[[], bool] | None = None) -> CohfTNet:
    """A copy of the through-plane `network` after `steps` optimiser steps on the checked T2's own planes (with its
    T1 where the network uses one), in eval mode on the CPU. progress(done, steps) after each step; cancel() True
    stops with InferenceCancelled; a loss that is not finite is an InferenceError (the copy is dropped)."""
    t2, t1, factor, row_scales = own_planes(checked)
    use_t1 = network.config.use_t1
    sampler = OwnPlaneSampler(t2, t1 if use_t1 else None, factor, row_scales, PATCH, BATCH_SIZE, SEED)
    adapted = copy.deepcopy(network).to(device).train()
    optimizer = make_optimizer(adapted, "adam", LEARNING_RATE, 0.0)
    criterion = CohfTLoss()
    for step in range(steps):
        if cancel is not None and cancel():
            raise InferenceCancelled("adaptation to the scan cancelled; nothing was returned")
        lr, hr, guide = (x.to(device) for x in sampler.batch(step))
        sr, gradient = adapted(lr, guide if use_t1 else None)
        loss = criterion.components(sr, gradient, hr)["total"]
        if not torch.isfinite(loss):
            raise InferenceError(f"adaptation to the scan diverged at step {step + 1} (loss {loss.item()}); run "
                                 "without adaptation")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if progress is not None:
            progress(step + 1, steps)
    return adapted.eval().cpu()
