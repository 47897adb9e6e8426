"""`cohft-sr evaluate` (evaluation/evaluate.py): LR synthesis on the DFT grid, baselines, metrics.json and the figure."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from CohfTSuperResLib.evaluation import evaluate
from CohfTSuperResLib.inference.geometry import image_stack
from CohfTSuperResLib.data.patches import brain_slices
from CohfTSuperResLib.data.degradations import degrade
from CohfTSuperResLib.model import build_model
from CohfTSuperResLib.imageio.normalize import robust_scale
from CohfTSuperResLib.model.upsample import upsample_cubic
from CohfTSuperResLib.weights.storage import save_weights


@pytest.fixture(scope="module")
def volumes(open_ms: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 96 x 98 x 2 crop of mni/patient07 (T2, T1) and random-weight S x2 models with and without T1."""
    folder = tmp_path_factory.mktemp("evaluate")
    for name in ("t2", "t1"):
        image = sitk.ReadImage(str(open_ms / "mni" / "patient07" / f"{name}.nii.gz"))
        sitk.WriteImage(image[43:139, 60:158, 88:90], str(folder / f"{name}.nii.gz"))
    torch.manual_seed(0)
    save_weights(build_model("S", 2), folder / "s2.safetensors")
    save_weights(build_model("S", 2, use_t1=False), folder / "s2_no_t1.safetensors")
    return {"t2": folder / "t2.nii.gz", "t1": folder / "t1.nii.gz", "model": folder / "s2.safetensors",
            "no_t1": folder / "s2_no_t1.safetensors"}


def test_evaluate_reports_cohft_and_baselines(volumes: dict[str, Path], tmp_path: Path, monkeypatch) -> None:
    torch.set_num_threads(1)
    out = tmp_path / "out"

    def no_check(*_args, **_kwargs):
        raise AssertionError("evaluate measures the networks as they are: the guide check must not run")

    monkeypatch.setattr("CohfTSuperResLib.inference.engine.check_guide", no_check)
    status = evaluate.main(["--t2", str(volumes["t2"]), "--t1", str(volumes["t1"]), "--scale", "2", "--model",
                            str(volumes["model"]), "--no-t1-model", str(volumes["no_t1"]), "--out", str(out),
                            "--device", "cpu"])
    assert status == 0
    report = json.loads((out / "metrics.json").read_text())
    assert {"protocol", "scale", "models", "subjects", "mean"} <= report.keys()
    assert report["protocol"]["guide_check"].startswith("off")
    assert report["models"]["cohft"]["sha256"] and report["models"]["cohft_no_t1"]["sha256"]
    (subject,) = report["subjects"]
    assert subject["subject"] == f"{volumes['t2'].parent.name}/{volumes['t2'].name}"
    assert subject["hr_size"] == [96, 98, 2] and subject["lr_size"] == [48, 49, 2]
    assert subject["lr_spacing"] == [2.0, 2.0, 1.0] and subject["brain_slices"] == 2
    metrics = subject["metrics"]
    assert set(metrics) == {"zero_fill", "bicubic", "cohft", "cohft_no_t1"}
    for values in metrics.values():
        assert set(values) == {"psnr", "psnr_slice_mean", "ssim"}
        assert all(math.isfinite(v) for v in values.values())
        assert -1 <= values["ssim"] <= 1
    assert report["mean"] == metrics
    # plausible baselines at x2 on real brain MR (measured: about 27 dB and 0.85 for both)
    for name in ("zero_fill", "bicubic"):
        assert 22 < metrics[name]["psnr"] < 35 and 0.7 < metrics[name]["ssim"] < 0.97
    # the LR holds exactly the central k-space block, so zero-filling it is the better L2 estimate
    assert metrics["zero_fill"]["psnr"] > metrics["bicubic"]["psnr"]
    # an untrained network is far worse than bicubic: the numbers come from the network, not a baseline
    assert metrics["cohft"]["psnr"] < metrics["bicubic"]["psnr"] - 3
    figure = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "figure.png")))
    assert figure.dtype == np.uint8 and figure.shape == (2 * 98 + 2, 4 * 96 + 3 * 2)
    assert figure[:98, 3 * 98:].max() > 200  # the HR panel is not empty


def test_bicubic_metric_matches_an_independent_computation(volumes: dict[str, Path], tmp_path: Path) -> None:
    """The bicubic numbers follow the documented protocol (HR 99.5th percentile, brain slices, whole slices)."""
    out = tmp_path / "out"
    report = evaluate.evaluate(evaluate.build_parser().parse_args(
        ["--t2", str(volumes["t2"]), "--scale", "2", "--no-t1-model", str(volumes["no_t1"]), "--out", str(out),
         "--device", "cpu", "--no-figure"]))
    hr = image_stack(sitk.ReadImage(str(volumes["t2"]), sitk.sitkFloat32), 2)[:, :98, :96]
    lr = degrade(hr, 2)
    bicubic = upsample_cubic(torch.from_numpy(lr)[:, None], 2)[:, 0].numpy()
    reference = robust_scale(hr)
    brain = brain_slices(hr / reference)
    mse = np.mean((bicubic[brain] / reference - hr[brain] / reference) ** 2, dtype=np.float64)
    metrics = report["subjects"][0]["metrics"]
    assert set(metrics) == {"zero_fill", "bicubic", "cohft_no_t1"}
    assert metrics["bicubic"]["psnr"] == pytest.approx(-10 * math.log10(mse), abs=1e-4)
    assert not (out / "figure.png").exists()


def test_evaluate_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        evaluate.main(["--t2", "x.nii", "--scale", "2", "--out", str(tmp_path)])  # no T1 and no no-T1 model
    with pytest.raises(SystemExit):
        evaluate.main(["--scale", "2", "--out", str(tmp_path)])  # neither --t2 nor --manifest


def test_evaluate_a_manifest_of_subjects(volumes: dict[str, Path], tmp_path: Path) -> None:
    """Every manifest row is evaluated (a t1_to_t2 transform is applied to its T1 first); one figure each."""
    sitk.WriteTransform(sitk.TranslationTransform(3, (0.0, 0.0, 0.0)), str(tmp_path / "identity.tfm"))
    (tmp_path / "m.csv").write_text(
        "subject,t2,t1,t1_to_t2\n"
        f"plain,{volumes['t2']},{volumes['t1']},\n"
        f"registered,{volumes['t2']},{volumes['t1']},identity.tfm\n")
    out = tmp_path / "out"
    assert evaluate.main(["--manifest", str(tmp_path / "m.csv"), "--scale", "2", "--model", str(volumes["model"]),
                          "--out", str(out), "--device", "cpu"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    first, second = report["subjects"]
    assert [first["subject"], second["subject"]] == ["plain", "registered"]
    assert first["metrics"] == second["metrics"]  # the identity registration changes nothing
    assert sorted(p.name for p in out.glob("*.png")) == ["figure_00_plain.png", "figure_01_registered.png"]
    assert report["mean"]["cohft"]["psnr"] == pytest.approx(first["metrics"]["cohft"]["psnr"])


@pytest.mark.parametrize("module", ["CohfTSuperResLib.training.train", "CohfTSuperResLib.evaluation.evaluate",
                                    "CohfTSuperResLib.data.pack", "CohfTSuperResLib.data.pairs"])
def test_python_m_entry_points_say_errors_in_one_line(module: str, tmp_path: Path) -> None:
    """`python -m` (and `torchrun -m`) give the command line's one-line errors, never a traceback."""
    import subprocess
    import sys

    argv = {"CohfTSuperResLib.training.train": ["--pack", str(tmp_path / "absent.npz"), "--out", str(tmp_path / "o")],
            "CohfTSuperResLib.evaluation.evaluate": ["--manifest", str(tmp_path / "absent.csv"), "--scale", "2",
                                                     "--out", str(tmp_path / "o")],
            "CohfTSuperResLib.data.pack": ["--manifest", str(tmp_path / "absent.csv"), "--out",
                                           str(tmp_path / "p.npz")],
            "CohfTSuperResLib.data.pairs": ["check", str(tmp_path / "absent.csv")]}[module]
    process = subprocess.run([sys.executable, "-m", module, *argv], capture_output=True, text=True, timeout=120)
    assert process.returncode == 1 and "Traceback" not in process.stderr
    assert process.stderr.strip().startswith("cohft-sr: error: ") and len(process.stderr.strip().splitlines()) == 1
    assert "absent" in process.stderr


def test_cli_delegates_evaluate(capsys: pytest.CaptureFixture[str]) -> None:
    from CohfTSuperResLib import cli

    with pytest.raises(SystemExit) as stop:
        cli.main(["evaluate", "--help"])
    assert stop.value.code == 0
    assert "--no-t1-model" in capsys.readouterr().out
