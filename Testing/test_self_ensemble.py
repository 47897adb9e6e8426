"""Self-ensemble (inference/self_ensemble.py): copies flipped and transposed with the network's sampling geometry kept,
averaged; the option through super_resolve, the command line, a cohort row and the 3D Slicer parameter node."""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from CohfTSuperResLib import cli
from CohfTSuperResLib.errors import InputError
from CohfTSuperResLib.inference.cohort import Case
from CohfTSuperResLib.inference.engine import super_resolve
from CohfTSuperResLib.inference.self_ensemble import COPIES, SelfEnsembleRunner, self_ensembled
from CohfTSuperResLib.model.upsample import upsample_cubic
from CohfTSuperResLib.options import RunOptions

from inference_helpers import guide_for, save_tiny, volume
from slicer_helpers import module  # noqa: F401  (fixture)

CPU = torch.device("cpu")


class CubicRunner:
    """Keys cubic upsampling with LR sample j at HR sample s*j: the geometry the networks are trained on, and exactly
    symmetric under flips and transposition once that geometry is kept."""

    def __init__(self, scale: int) -> None:
        self.config = SimpleNamespace(scale=scale)
        self.calls: list[torch.Tensor] = []

    def run(self, lr: torch.Tensor, t1: torch.Tensor | None, device: torch.device) -> torch.Tensor:
        self.calls.append(lr)
        return upsample_cubic(lr, self.config.scale)


class GuideRunner(CubicRunner):
    """Returns its HR guide: each copy's guide must land where the copy's output is read back from."""

    def run(self, lr: torch.Tensor, t1: torch.Tensor | None, device: torch.device) -> torch.Tensor:
        return t1.clone()


class ColumnIndexRunner(CubicRunner):
    """Returns each HR column's index: not symmetric, so the copies' results differ and their mean shows them."""

    def run(self, lr: torch.Tensor, t1: torch.Tensor | None, device: torch.device) -> torch.Tensor:
        batch, channels, height, width = lr.shape
        scale = self.config.scale
        return torch.arange(scale * width, dtype=torch.float32).expand(batch, channels, scale * height, -1).clone()


@pytest.mark.parametrize("scale", [1, 2, 3, 4])
@pytest.mark.parametrize("count", [2, 4, 8])
def test_an_ensemble_of_a_symmetric_upsampling_is_that_upsampling(scale, count):
    """A flip not moved back by s - 1 HR samples would shift the cubic upsampling by them (tens of percent here)."""
    lr = torch.rand(2, 1, 13, 17, generator=torch.Generator().manual_seed(scale))
    cubic = CubicRunner(scale)
    torch.testing.assert_close(SelfEnsembleRunner(cubic, count).run(lr, None, CPU), upsample_cubic(lr, scale))
    assert len(cubic.calls) == count
    assert {tuple(call.shape[-2:]) for call in cubic.calls} == ({(13, 17), (17, 13)} if count == 8 else {(13, 17)})


@pytest.mark.parametrize("scale", [1, 3, 4])
@pytest.mark.parametrize("count", [2, 4, 8])
def test_every_copy_reads_its_guide_where_its_output_is_read_back(scale, count):
    generator = torch.Generator().manual_seed(0)
    lr, t1 = torch.rand(1, 1, 11, 9, generator=generator), torch.rand(1, 1, 11 * scale, 9 * scale, generator=generator)
    torch.testing.assert_close(SelfEnsembleRunner(GuideRunner(scale), count).run(lr, t1, CPU), t1)


def test_the_copies_are_averaged_in_the_slice_own_orientation():
    """Identity and left-right flip at x3: column m and its mirror s*w - s - m average to (s*w - s) / 2; the last
    s - 1 columns, which no flipped copy covers, come from the unflipped run alone."""
    scale, width = 3, 10
    mean = SelfEnsembleRunner(ColumnIndexRunner(scale), 2).run(torch.ones(1, 1, 4, width), None, CPU)[0, 0, 0]
    covered = scale * width - scale + 1
    torch.testing.assert_close(mean[:covered], torch.full((covered,), (scale * width - scale) / 2))
    torch.testing.assert_close(mean[covered:], torch.arange(covered, scale * width, dtype=torch.float32))


def test_one_copy_is_the_runner_itself_and_counts_are_bounded():
    runner = CubicRunner(2)
    assert self_ensembled(runner, 1) is runner
    assert isinstance(self_ensembled(runner, 4), SelfEnsembleRunner)
    with pytest.raises(ValueError, match="1 to 8"):
        SelfEnsembleRunner(runner, len(COPIES) + 1)


@pytest.mark.parametrize("options, message", [
    ({"self_ensemble": 3}, "one of 1, 2, 4, 8"),
    ({"self_ensemble": True}, "one of 1, 2, 4, 8"),
    ({"self_ensemble": 8, "mode": "through-plane"}, "never transposed"),
])
def test_self_ensembles_that_can_not_run_are_refused(options, message):
    with pytest.raises(InputError, match=message):
        RunOptions(**options)


def _run(t2: sitk.Image, t1: sitk.Image | None, model: Path, **options) -> sitk.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return super_resolve(t2, t1, 2, model_path=model, device="cpu", guide_check="off", **options)


def test_super_resolve_averages_the_copies_and_records_it(tmp_path):
    model = save_tiny(tmp_path)
    t2 = volume((4, 24, 20))
    t1 = guide_for(t2, 2)
    before = sitk.GetArrayFromImage(t2).copy()
    plain = _run(t2, t1, model)
    reported = []
    ensembled = _run(t2, t1, model, self_ensemble=8, progress=lambda done, total: reported.append((done, total)))
    assert ensembled.GetSize() == plain.GetSize() and ensembled.GetSpacing() == plain.GetSpacing()
    # a random-weight network is far from symmetric: its copies disagree (the geometry is checked above)
    assert not np.allclose(sitk.GetArrayFromImage(ensembled), sitk.GetArrayFromImage(plain))
    assert np.isfinite(sitk.GetArrayFromImage(ensembled)).all()
    assert reported[-1] == (4, 4)
    assert ensembled.GetMetaData("cohft_model").endswith("self-ensemble of 8")
    assert "self-ensemble" not in plain.GetMetaData("cohft_model")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(t2), before)


def test_the_command_line_and_a_cohort_row_take_the_self_ensemble(tmp_path):
    model = save_tiny(tmp_path, use_t1=False)
    sitk.WriteImage(volume((3, 16, 16)), str(tmp_path / "t2.nii.gz"))
    assert cli.main(["run", "--t2", str(tmp_path / "t2.nii.gz"), "--self-ensemble", "4", "--model", str(model),
                     "--device", "cpu", "-o", str(tmp_path / "sr.nrrd")]) == 0
    assert sitk.ReadImage(str(tmp_path / "sr.nrrd")).GetMetaData("cohft_model").endswith("self-ensemble of 4")
    arguments = RunOptions(self_ensemble=4).command_line()
    assert arguments[arguments.index("--self-ensemble") + 1] == "4"
    assert "--self-ensemble" not in RunOptions().command_line()
    eight = RunOptions(self_ensemble=8)
    assert Case(Path("a"), None, Path("b"), mode="through-plane").overrides(eight)["self_ensemble"] == 4
    assert "self_ensemble" not in Case(Path("a"), None, Path("b"), mode="in-plane").overrides(eight)


def test_the_slicer_parameter_node_caps_the_through_plane_self_ensemble(module):
    """The GUI offers 1, 2, 4 and 8 copies; through-plane planes are never transposed, so 8 runs as 4 there."""
    node = module.CohfTSuperResParameterNode()
    assert node.runOptions().self_ensemble == 1
    node.selfEnsemble = 8
    assert node.runOptions().self_ensemble == 8
    node.mode = "through-plane"
    assert node.runOptions().self_ensemble == 4
