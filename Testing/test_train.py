"""Training entrypoint (training/train.py): a tiny run, exact resume, and DistributedDataParallel on 2 CPU processes."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import SimpleITK as sitk
import torch
from safetensors.torch import load_file

from CohfTSuperResLib.training import train
from CohfTSuperResLib.data.pairs import read_manifest, write_manifest
from CohfTSuperResLib.model import build_model
from CohfTSuperResLib.data.degradations import GuideRandomisation
from CohfTSuperResLib.errors import InputError, WeightsError
from CohfTSuperResLib.weights.registry import find_model
from CohfTSuperResLib.weights.storage import load_model, read_metadata, save_weights, sha256_of

ROOT = Path(__file__).resolve().parents[1]
OPEN_MS = ROOT.parent / "shared" / "data" / "open_ms"
TINY = ["--variant", "S", "--scale", "2", "--patch", "8", "--batch-size", "2", "--threads", "1", "--device", "cpu",
        "--no-progress", "--log-every", "1", "--seed", "5"]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two small (48 x 48 x 2) T2/T1 pairs as .nii.gz, one to train and one to validate: cropped real MNI
    volumes where the shared data is present, else the project's synthetic phantom."""
    folder = tmp_path_factory.mktemp("data")
    pairs = {}
    if OPEN_MS.is_dir():
        for subject in ("patient07", "patient19"):  # never the held-out test subject patient26
            pairs[subject] = [sitk.ReadImage(str(OPEN_MS / "mni" / subject / f"{name}.nii.gz"))[67:115, 85:133, 88:90]
                              for name in ("t2", "t1")]
    else:
        from CohfTSuperResLib.data.phantom import brain_phantom

        for seed, subject in enumerate(("a", "b")):
            pairs[subject] = list(brain_phantom(size=48, slices=2, seed=seed))
    rows = ["subject,role,t2,t1"]
    for (subject, (t2, t1)), role in zip(pairs.items(), ("train", "val")):
        sitk.WriteImage(t2, str(folder / f"{subject}_t2.nii.gz"))
        sitk.WriteImage(t1, str(folder / f"{subject}_t1.nii.gz"))
        rows.append(f"{subject},{role},{subject}_t2.nii.gz,{subject}_t1.nii.gz")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    return folder / "manifest.csv"


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _run(manifest: Path, out: Path, *extra: str) -> None:
    assert train.main(["--manifest", str(manifest), "--out", str(out), *TINY, *extra]) == 0


def test_tiny_run_writes_a_loadable_best_model_and_logs(manifest: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    _run(manifest, out, "--iterations", "4", "--checkpoint-every", "2")
    model = load_model(out / "best.safetensors")
    assert model.config.scale == 2 and model.config.use_t1
    metadata = read_metadata(out / "best.safetensors")
    assert metadata["patch"] == 8 and "LR T2 volume" in metadata["normalisation"]
    summary = json.loads((out / "run.json").read_text())
    assert summary["iterations"] == 4 and summary["world_size"] == 1
    assert summary["data"]["train_slices"] == 2 and summary["data"]["val_slices"] == 2
    val = _rows(out / "val_log.csv")
    assert [int(r["iteration"]) for r in val] == [2, 4]
    best = max(val, key=lambda r: float(r["val_score"]))  # the mean of the registered and moved-T1 PSNRs
    assert float(best["val_score"]) == pytest.approx((float(best["val_psnr"]) + float(best["val_psnr_moved_t1"])) / 2)
    assert summary["best"]["iteration"] == int(best["iteration"]) == metadata["iteration"]
    assert summary["best"]["val_psnr"] == pytest.approx(float(best["val_psnr"]))
    assert summary["guide_randomisation"]["misregistration"] > 0
    log = _rows(out / "train_log.csv")
    assert [int(r["iteration"]) for r in log] == [1, 2, 3, 4]
    assert all(float(r["loss_total"]) > 0 and float(r["sec_per_it"]) > 0 for r in log)
    last = load_model(out / "last.safetensors")
    assert summary["rank_weights_sha256"] == [train.state_digest(last)]
    torch.manual_seed(5)
    assert train.state_digest(build_model("S", 2)) != summary["rank_weights_sha256"][0]  # it did train


def test_snapshots_keep_the_weights_of_every_checkpoint(manifest: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    _run(manifest, out, "--iterations", "4", "--checkpoint-every", "2", "--keep-snapshots")
    snapshots = sorted((out / "snapshots").glob("*.safetensors"))
    assert [path.name for path in snapshots] == ["it000002.safetensors", "it000004.safetensors"]
    second, last = load_model(snapshots[0]), load_model(out / "last.safetensors")
    assert read_metadata(snapshots[0])["iteration"] == 2 and read_metadata(snapshots[1])["iteration"] == 4
    assert train.state_digest(load_model(snapshots[1])) == train.state_digest(last)  # no step after the last one
    assert train.state_digest(second) != train.state_digest(last)
    _run(manifest, tmp_path / "plain", "--iterations", "2", "--checkpoint-every", "2")
    assert not (tmp_path / "plain" / "snapshots").exists()


def test_resume_continues_exactly(manifest: Path, tmp_path: Path) -> None:
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _run(manifest, straight, "--iterations", "4")
    _run(manifest, resumed, "--iterations", "2")
    first_half = load_file(str(resumed / "last.safetensors"))
    _run(manifest, resumed, "--iterations", "4", "--resume")
    a, b = load_file(str(straight / "last.safetensors")), load_file(str(resumed / "last.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert not all(torch.equal(a[name], first_half[name]) for name in a)
    assert [int(r["iteration"]) for r in _rows(resumed / "train_log.csv")] == [1, 2, 3, 4]
    assert [r["loss_total"] for r in _rows(resumed / "train_log.csv")] == \
        [r["loss_total"] for r in _rows(straight / "train_log.csv")]
    state = json.loads((resumed / "checkpoint" / "state.json").read_text())
    assert state["iteration"] == 4


def test_pack_and_manifest_train_the_same(manifest: Path, tmp_path: Path) -> None:
    from CohfTSuperResLib.data.pack import main as pack_main

    assert pack_main(["--manifest", str(manifest), "--out", str(tmp_path / "p.npz")]) == 0
    _run(manifest, tmp_path / "from_manifest", "--iterations", "2")
    assert train.main(["--pack", str(tmp_path / "p.npz"), "--out", str(tmp_path / "from_pack"), *TINY,
                       "--iterations", "2"]) == 0
    a = load_file(str(tmp_path / "from_manifest" / "last.safetensors"))
    b = load_file(str(tmp_path / "from_pack" / "last.safetensors"))
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_network_switches_reach_the_weights_header(manifest: Path, tmp_path: Path) -> None:
    _run(manifest, tmp_path / "paper", "--iterations", "1", "--cross-position", "none", "--adain-modulation", "pixel",
         "--no-guide-input", "--optimizer", "adam")
    config = load_model(tmp_path / "paper" / "best.safetensors").config
    assert (config.cross_position, config.adain_modulation, config.guide_input) == ("none", "pixel", False)
    val = _rows(tmp_path / "paper" / "val_log.csv")[0]
    assert float(val["cross_qk_rms"]) > 0 and 0 < float(val["cross_entropy"]) <= 1


def test_a_finished_run_is_kept_unless_resumed(manifest: Path, tmp_path: Path, capsys) -> None:
    """A second run into the folder of a finished one is refused (nothing changed); a resume with another network
    or optimiser is refused in one line; the checkpoint left as checkpoint.old by a crash between its two renames is
    resumed; each invocation is recorded in run.json."""
    out = tmp_path / "run"
    _run(manifest, out, "--iterations", "2")
    before = (out / "best.safetensors").read_bytes()
    with pytest.raises(InputError, match="already holds a training run: add --resume"):
        _run(manifest, out, "--iterations", "1")
    assert (out / "best.safetensors").read_bytes() == before
    for flags, message in ((["--no-t1"], r"another network than the flags describe: use_t1 True \(flags: False\)"),
                           (["--optimizer", "adam"], "trained with AdamW, the flags ask for Adam")):
        with pytest.raises(InputError, match=message) as error:
            _run(manifest, out, "--iterations", "3", "--resume", *flags)
        assert len(str(error.value)) < 300
    (out / "checkpoint").rename(out / "checkpoint.old")
    copy = tmp_path / "copy.csv"
    write_manifest(read_manifest(manifest), copy)
    _run(copy, out, "--iterations", "3", "--resume")  # on another manifest: said, and recorded
    assert f"note: resuming on {copy}; the run's last invocation trained on {manifest}" in capsys.readouterr().err
    summary = json.loads((out / "run.json").read_text())
    assert [call["from_iteration"] for call in summary["invocations"]] == [0, 2]
    assert [call["data"] for call in summary["invocations"]] == [str(manifest), str(copy)]
    with pytest.raises(InputError, match="no checkpoint in .* to resume from"):
        _run(manifest, tmp_path / "empty", "--iterations", "1", "--resume")


@pytest.mark.parametrize("flags", [["--iterations", "-5"], ["--lr", "0"], ["--lr", "nan"], ["--batch-size", "0"],
                                   ["--log-every", "0"], ["--checkpoint-every", "0"], ["--val-max-slices", "0"],
                                   ["--alpha", "5"], ["--threads", "0"], ["--time-budget-minutes=-1"],
                                   ["--lr-halve-every", "0"]])
def test_absurd_numbers_are_refused_by_the_parser(flags: list[str], tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        train.build_parser().parse_args(["--pack", "p.npz", "--out", str(tmp_path), *flags])
    assert stop.value.code == 2 and flags[0].split("=")[0] in capsys.readouterr().err


def test_a_patch_too_small_for_the_loss_and_zero_iterations_from_scratch_are_refused(manifest, tmp_path) -> None:
    with pytest.raises(InputError, match="--patch 4 gives HR patches of 8 pixels a side; .* use --patch 6 or more"):
        _run(manifest, tmp_path / "a", "--iterations", "1", "--patch", "4")
    with pytest.raises(InputError, match="--iterations 0 trains nothing"):
        _run(manifest, tmp_path / "b", "--iterations", "0")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_damaged_pack_or_manifest_is_one_error_naming_the_file(manifest: Path, tmp_path: Path) -> None:
    from CohfTSuperResLib.data.pack import build_pack, read_pack, write_pack

    pack = write_pack(build_pack(manifest), tmp_path / "pack.npz")
    pack.write_bytes(pack.read_bytes()[: pack.stat().st_size // 2])
    with pytest.raises(InputError, match=f"{pack} is not a readable training pack .*rebuild it"):
        read_pack(pack)
    with pytest.raises(InputError, match="a training pack is an .npz file"):
        write_pack([], tmp_path / "pack.zip")
    (tmp_path / "empty.csv").write_text("subject,role,t2,t1\n")
    (tmp_path / "broken.json").write_text("{\"pairs\": [")
    for path, message in ((tmp_path / "empty.csv", "has no rows"), (tmp_path / "broken.json", "can not be read")):
        with pytest.raises(InputError, match=message):
            read_manifest(path)


def test_a_stopped_run_writes_its_checkpoint_for_resume(manifest: Path, tmp_path: Path, monkeypatch) -> None:
    """Ctrl-C (or SIGTERM, errors.Terminated) in the middle: a checkpoint where it stopped, resumed from there."""
    out, calls = tmp_path / "run", []
    real = train.Trainer.step

    def step(self, iteration):
        calls.append(iteration)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, iteration)

    monkeypatch.setattr(train.Trainer, "step", step)
    with pytest.raises(KeyboardInterrupt):
        _run(manifest, out, "--iterations", "6")
    assert json.loads((out / "checkpoint" / "state.json").read_text())["iteration"] == 2
    monkeypatch.setattr(train.Trainer, "step", real)
    _run(manifest, out, "--iterations", "4", "--resume")
    assert [int(r["iteration"]) for r in _rows(out / "train_log.csv")] == [1, 2, 3, 4]


def test_t1_model_needs_t1_and_validation_data(manifest: Path, tmp_path: Path) -> None:
    specs = read_manifest(manifest)
    for spec in specs:
        spec.t1 = None
    write_manifest(specs, tmp_path / "no_t1.csv")
    with pytest.raises(ValueError, match="no t1"):
        _run(tmp_path / "no_t1.csv", tmp_path / "x", "--iterations", "1")
    write_manifest([spec for spec in read_manifest(manifest) if spec.role == "train"], tmp_path / "no_val.csv")
    with pytest.raises(ValueError, match="no validation slices"):
        _run(tmp_path / "no_val.csv", tmp_path / "y", "--iterations", "1")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()  # a refused run leaves no folder


def test_init_fine_tunes_from_a_weights_file_and_resume_keeps_the_record(manifest: Path, tmp_path: Path) -> None:
    _run(manifest, tmp_path / "base", "--iterations", "2")
    start = tmp_path / "base" / "last.safetensors"
    _run(manifest, tmp_path / "loaded", "--iterations", "0", "--init", str(start))
    a, b = load_file(str(start)), load_file(str(tmp_path / "loaded" / "last.safetensors"))
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert [int(r["iteration"]) for r in _rows(tmp_path / "loaded" / "val_log.csv")] == [0]  # validated once
    tuned = tmp_path / "tuned"
    _run(manifest, tuned, "--iterations", "1", "--init", str(start))
    _run(manifest, tuned, "--iterations", "2", "--init", str(start), "--resume")
    rows = _rows(tuned / "val_log.csv")
    assert [int(r["iteration"]) for r in rows] == [0, 1, 2]  # the starting weights first
    base_score = float(_rows(tmp_path / "base" / "val_log.csv")[-1]["val_score"])
    assert float(rows[0]["val_score"]) == pytest.approx(base_score)
    best = json.loads((tuned / "run.json").read_text())["best"]
    assert best["val_score"] == pytest.approx(max(float(r["val_score"]) for r in rows))
    c = load_file(str(tuned / "last.safetensors"))
    assert not all(torch.equal(a[name], c[name]) for name in a)
    record = json.loads((tuned / "run.json").read_text())["init"]
    assert record == {"source": str(start), "path": str(start), "sha256": sha256_of(start)}


def _flags_of(config) -> list[str]:
    """The train flags that build the network of a config (its switches)."""
    flags = ["--cross-position", config.cross_position, "--adain-modulation", config.adain_modulation]
    return flags + ([] if config.guide_input else ["--no-guide-input"])


def test_init_shipped_starts_from_the_shipped_model(manifest: Path, tmp_path: Path) -> None:
    shipped = find_model("S", 2)
    _run(manifest, tmp_path / "ft", "--iterations", "0", "--init", "shipped", *_flags_of(shipped.load().config))
    record = json.loads((tmp_path / "ft" / "run.json").read_text())["init"]
    assert record["source"] == "shipped" and record["sha256"] == shipped.sha256
    a, b = load_file(str(shipped.path)), load_file(str(tmp_path / "ft" / "last.safetensors"))
    assert all(torch.equal(a[name].float(), b[name]) for name in a)


def test_init_refuses_missing_weights_and_another_network(manifest: Path, tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not found"):
        _run(manifest, tmp_path / "x", "--iterations", "0", "--init", str(tmp_path / "none.safetensors"))
    save_weights(build_model("S", 3), tmp_path / "x3.safetensors")
    with pytest.raises(WeightsError, match=r"another network.*scale 3 \(flags: 2\)"):
        _run(manifest, tmp_path / "y", "--iterations", "0", "--init", str(tmp_path / "x3.safetensors"))


@pytest.mark.slow  # torchrun with two ranks
def test_distributed_two_cpu_ranks_end_with_identical_weights(manifest: Path, tmp_path: Path) -> None:
    """torchrun with 2 gloo processes: DDP keeps the ranks in step; each rank's final weight digest is in run.json."""
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "CohfTSuperResLib.training.train", "--manifest", str(manifest), "--out", str(out), *TINY,
               "--iterations", "3"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "run.json").read_text())
    assert summary["world_size"] == 2 and summary["iterations"] == 3
    digests = summary["rank_weights_sha256"]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert digests[0] == train.state_digest(load_model(out / "last.safetensors"))
    torch.manual_seed(5)
    assert digests[0] != train.state_digest(build_model("S", 2))


def test_guide_randomisation_parts_take_their_own_chances() -> None:
    chosen = train.guide_randomisation("misregistration=0.3, dropout")
    assert chosen.misregistration == 0.3 and chosen.dropout == GuideRandomisation().dropout
    assert chosen.resolution == 0.0 and chosen.intensity == 0.0
    assert train.guide_randomisation("all") == GuideRandomisation()
    # in-plane the parallel slices run only where named: 'all' keeps the recipe of the runs made before that part
    assert train.guide_randomisation("all", in_plane=True) == replace(GuideRandomisation(), parallel_slices=0.0)
    assert train.guide_randomisation("dropout,parallel_slices=0.3", in_plane=True).parallel_slices == 0.3
    for bad in ("misregistration=1.5", "misregistration=often", "all=0.2", "blur"):
        with pytest.raises(InputError, match="--guide-randomisation"):
            train.guide_randomisation(bad)
