"""tools/train_all.py: every model from one pack, side by side, resumed by the next call (the GPU training run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk

from CohfTSuperResLib.data.pack import build_pack, write_pack
from CohfTSuperResLib.data.phantom import brain_phantom

ROOT = Path(__file__).resolve().parents[1]
DEVICE_CALL_MIB = 64  # what one device call carries: the tracked tree plus the carried paths (the device README)
GPU_PACK_MIB = 15.5  # runs/pack_gpu_every_axis.npz, the prepared GPU run's pack (model card, "Slices along every axis")
WHEELS_MIB = 0.5  # room for the wheels carried beside it (pytorch-msssim)


def _pack(folder: Path) -> Path:
    rows = ["subject,role,t2,t1"]
    for seed, role in enumerate(("train", "split")):
        t2, t1 = brain_phantom(size=96, slices=20, seed=seed)
        sitk.WriteImage(t2, str(folder / f"t2_{seed}.nii.gz"))
        sitk.WriteImage(t1, str(folder / f"t1_{seed}.nii.gz"))
        rows.append(f"p{seed},{role},t2_{seed}.nii.gz,t1_{seed}.nii.gz")
    (folder / "m.csv").write_text("\n".join(rows) + "\n")
    return write_pack(build_pack(folder / "m.csv", val_slices=2, guard=1), folder / "pack.npz")


def _call(pack: Path, out: Path, *extra: str, models: str = "S_x4,S_x4_noT1") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / "train_all.py"), "--pack", str(pack), "--out", str(out),
         "--models", models, "--minutes", "0.03", "--checkpoint-minutes", "10", "--device", "cpu",
         "--threads", "1", "--batch-size", "1", *extra],
        capture_output=True, text=True, timeout=600, cwd=ROOT)


@pytest.mark.slow  # six training processes
def test_train_all_trains_each_model_and_the_next_call_resumes(tmp_path: Path) -> None:
    pack = _pack(tmp_path)
    first = _call(pack, tmp_path / "runs")
    assert first.returncode == 0, first.stdout + first.stderr
    iterations = {name: json.loads((tmp_path / "runs" / name / "run.json").read_text())["iterations"]
                  for name in ("S_x4", "S_x4_noT1")}
    assert all(count >= 1 for count in iterations.values())
    second = _call(pack, tmp_path / "runs")
    assert second.returncode == 0, second.stdout + second.stderr
    for name, before in iterations.items():
        assert json.loads((tmp_path / "runs" / name / "run.json").read_text())["iterations"] > before
        assert "resumed from iteration" in (tmp_path / "runs" / f"{name}.log").read_text()
    summary = json.loads((tmp_path / "runs" / "summary.json").read_text())
    assert summary["S_x4"]["status"] == 0 and summary["S_x4_noT1"]["best"]["val_psnr"] > 0


@pytest.mark.slow  # six training processes
def test_train_all_fine_tunes_the_shipped_models_at_the_given_learning_rate(tmp_path: Path) -> None:
    """The GPU call's form: --init-from shipped starts each run from the shipped model of its name."""
    result = _call(_pack(tmp_path), tmp_path / "runs", "--init-from", "shipped", "--lr", "1.5e-4", models="S_x4_noT1")
    assert result.returncode == 0, result.stdout + result.stderr
    run = json.loads((tmp_path / "runs" / "S_x4_noT1" / "run.json").read_text())
    assert run["args"]["lr"] == 1.5e-4
    assert run["init"]["source"] == "shipped" and run["init"]["path"].endswith("cohft_S_x4_noT1.safetensors")


def test_the_through_plane_runs_fine_tune_the_shipped_networks_of_their_factor() -> None:
    """--init-from shipped: a through-plane run starts from the shipped network of its factor and T1 use (the
    trainer's own 'shipped' would start it from the in-plane x2 model)."""
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import train_all
    finally:
        sys.path.remove(str(ROOT / "tools"))
    assert train_all.shipped_weights("S_x3_noT1") == "shipped"
    assert Path(train_all.shipped_weights("S_through_plane_f4")).name == "cohft_S_through_plane_f4.safetensors"
    assert Path(train_all.shipped_weights("S_through_plane_f4_noT1")).name == "cohft_S_through_plane_f4_noT1.safetensors"
    assert ["--factors", "4"] == train_all.RUNS["S_through_plane_f4"][3][1:3]


def test_the_prepared_gpu_run_fits_one_device_call() -> None:
    """The tracked tree travels with every device call: it must leave room for the GPU pack and the wheels."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    files = [ROOT / name for name in listed.stdout.decode().split("\0") if name]
    tracked = sum(path.stat().st_size for path in files if path.is_file()) / 2**20
    margin = DEVICE_CALL_MIB - tracked - GPU_PACK_MIB - WHEELS_MIB
    print(f"tracked tree {tracked:.1f} MiB + pack {GPU_PACK_MIB} + wheels {WHEELS_MIB}: margin {margin:+.1f} MiB")
    assert margin >= 0
