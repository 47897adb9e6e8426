"""The attention must stay alive in training: no query/key collapse, no uniform inter-modality attention.

Release 0.1.0 trained with Adam and an L2 term on every weight: the inter-modality query/key weights walked
to zero and the attention became exactly uniform (the T1 then only added one global mean). These tests
train on real slices and check the optimiser that replaced it, and measure the diagnostics themselves.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from CohfTSuperResLib.training.attention_health import attention_report, normalised_entropy, qk_rms, summary
from CohfTSuperResLib.training.losses import CohfTLoss
from CohfTSuperResLib.model import build_model
from CohfTSuperResLib.imageio.normalize import robust_scale
from CohfTSuperResLib.data.patches import PatchSampler, SliceSet, brain_slices
from CohfTSuperResLib.training.optimisation import make_optimizer, parameter_groups

SHIPPED_LR = 6e-4  # the learning rate the shipped models were trained with
STEPS = 120


def _stack(open_ms: Path, subject: str, name: str) -> np.ndarray:
    volume = sitk.GetArrayFromImage(sitk.ReadImage(str(open_ms / "mni" / subject / f"{name}.nii.gz"), sitk.sitkFloat32))
    volume = volume[:, 1:217, 1:181]  # a multiple of the scale
    return volume / robust_scale(volume)


@pytest.fixture(scope="module")
def real_slices(open_ms: Path) -> tuple[SliceSet, SliceSet]:
    """Training slices of patient07 (every 8th brain slice) and one held-out slice of patient26, x2."""
    sets = []
    for subject, step in (("patient07", 8), ("patient26", None)):
        hr, t1 = _stack(open_ms, subject, "t2"), _stack(open_ms, subject, "t1")
        brain = brain_slices(hr)
        index = brain[::step] if step else brain[len(brain) // 2:len(brain) // 2 + 1]
        data = SliceSet(2)
        data.add(subject, hr[index], t1[index])
        sets.append(data)
    return sets[0], sets[1]


def _cross_qk(model: torch.nn.Module) -> float:
    return float(np.mean([qk_rms(stage.block.cross_modal) for stage in model.stages]))


def _train(kind: str, data: SliceSet) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model("S", 2)
    optimizer = make_optimizer(model, kind, SHIPPED_LR, 1e-4)
    sampler = PatchSampler(data, 24, 2, seed=0)
    criterion = CohfTLoss()
    for step in range(STEPS):
        lr, hr, t1 = sampler.batch(step)
        sr, grad = model(lr, t1)
        loss = criterion(sr, grad, hr)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


def _held_out_report(model: torch.nn.Module, held_out: SliceSet) -> dict[str, float]:
    lr = torch.from_numpy(held_out.lr[0][:1])[:, None]
    t1 = torch.from_numpy(held_out.t1[0][:1])[:, None]
    return summary(attention_report(model, lr, t1))


@pytest.mark.slow  # a few hundred training steps
def test_training_keeps_the_inter_modality_attention_alive(real_slices) -> None:
    train_set, held_out = real_slices
    torch.manual_seed(0)
    initial = _cross_qk(build_model("S", 2))
    model = _train("adamw", train_set)
    assert _cross_qk(model) >= 0.5 * initial
    health = _held_out_report(model, held_out)
    assert health["cross_entropy"] < 0.99


@pytest.mark.slow  # a few hundred training steps
def test_the_papers_optimiser_collapses_the_query_key_weights(real_slices) -> None:
    """The same run with Adam + L2 on every weight (release 0.1.0) fails the test above: this is what it guards."""
    train_set, _held_out = real_slices
    torch.manual_seed(0)
    initial = _cross_qk(build_model("S", 2))
    assert _cross_qk(_train("adam", train_set)) < 0.5 * initial


def test_adamw_groups_exempt_biases_norms_query_key_and_position() -> None:
    model = build_model("S", 2)
    decay, plain = parameter_groups(model, 1e-4)
    assert decay["weight_decay"] == 1e-4 and plain["weight_decay"] == 0.0
    names = {id(p): name for name, p in model.named_parameters()}
    exempt = {names[id(p)] for p in plain["params"]}
    decayed = {names[id(p)] for p in decay["params"]}
    assert len(exempt) + len(decayed) == len(names) and not exempt & decayed
    cross = "stages.0.block.cross_modal"
    for name in (f"{cross}.to_q.weight", f"{cross}.to_k.weight", f"{cross}.to_q.bias", f"{cross}.relative_bias",
                 f"{cross}.norm_query.weight", "stages.0.block.short_range.to_k.weight", "image_gate.0.bias"):
        assert name in exempt, name
    for name in (f"{cross}.to_v.weight", "image_gate.0.weight", "stages.0.block.align.to_beta.weight"):
        assert name in decayed, name


def test_entropy_of_uniform_and_one_hot_attention() -> None:
    uniform = torch.full((2, 4, 9, 9), 1 / 9)
    assert normalised_entropy(uniform) == pytest.approx(1.0)
    one_hot = torch.eye(9).expand(2, 4, 9, 9)
    assert normalised_entropy(one_hot) == pytest.approx(0.0, abs=1e-6)


def test_report_sees_a_zeroed_query_key_and_the_locality_prior() -> None:
    torch.manual_seed(0)
    model = build_model("S", 2).eval()
    lr, t1 = torch.rand(1, 1, 30, 30), torch.rand(1, 1, 60, 60)
    report = {row.name: row for row in attention_report(model, lr, t1)}
    cross = report["stages.0.block.cross_modal"]
    assert cross.cross_modal and not cross.collapsed and cross.entropy < 0.9  # the prior favours the co-located token
    with torch.no_grad():
        for stage in model.stages:
            for layer in (stage.block.cross_modal.to_q, stage.block.cross_modal.to_k):
                layer.weight.zero_()
                layer.bias.zero_()
            stage.block.cross_modal.relative_bias.zero_()
    report = {row.name: row for row in attention_report(model, lr, t1)}
    assert report["stages.0.block.cross_modal"].collapsed and report["stages.0.block.cross_modal"].uniform
