"""tools/ship_models.py --replace: a guided and a no-T1 run replace their shipped entries, each with the held-out rows
that measured its weights, the files named as shipped (into a scratch Resources/Models), stored in float16;
--freeze-guide-check keeps the guide check's x2 pair apart from the x2 models that --replace ships; --rewrite-stored
stores files shipped in float32 again in float16; --through-plane --snapshots ships snapshots chosen on another
source."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from safetensors.torch import load_file

from CohfTSuperResLib.model import build_model
from CohfTSuperResLib.options import THROUGH_PLANE_SCALE
from CohfTSuperResLib.training.checkpoint import snapshot_path
from CohfTSuperResLib.weights.storage import load_model, read_metadata, save_weights, sha256_of

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def ship_models(monkeypatch, tmp_path):
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import ship_models
    finally:
        sys.path.remove(str(ROOT / "tools"))
    models = tmp_path / "Models"
    models.mkdir()
    monkeypatch.setattr(ship_models, "MODELS", models)
    return ship_models


def _run(folder: Path, use_t1: bool, seed: int, best_iteration: int = 10, init: dict | None = None,
         scale: int = 3) -> Path:
    folder.mkdir(parents=True)
    torch.manual_seed(seed)
    save_weights(build_model("S", scale, use_t1=use_t1), folder / "best.safetensors", {"iteration": best_iteration})
    (folder / "run.json").write_text(json.dumps({
        "command": "train.py ...", "iterations": 10, "train_seconds": 60.0, "hardware": "CPU", "data": {},
        "best": {"iteration": best_iteration}, "torch": "test", "init": init}))
    return folder


def _row(subject: str, guided: Path, no_t1: Path, registered: float, scale: int = 3) -> dict:
    return {"subject": subject, "scale": scale, "model": str(guided), "no_t1_model": str(no_t1), "every": 4,
            "metrics": {"registered": {"psnr": registered}, "no-T1 model": {"psnr": registered - 1}}}


def test_a_guided_and_a_no_t1_run_replace_their_entries(ship_models, tmp_path):
    guided, no_t1 = _run(tmp_path / "g", True, 0), _run(tmp_path / "n", False, 1)
    untouched = {"file": "cohft_S_x2.safetensors", "scale": 2}
    old = [{"file": "cohft_S_x3.safetensors", "old": True}, {"file": "cohft_S_x3_noT1.safetensors", "old": True}]
    (ship_models.MODELS / "models.json").write_text(json.dumps({"models": [untouched, *old]}))
    other_guided = tmp_path / "elsewhere" / "cohft_S_x3.safetensors"  # a row of another pair: not this run's
    rows = [_row("a", guided / "best.safetensors", no_t1 / "best.safetensors", 30.0),
            _row("b", guided / "best.safetensors", no_t1 / "best.safetensors", 31.0),
            _row("a", other_guided, tmp_path / "elsewhere" / "x.safetensors", 20.0)]
    robustness = tmp_path / "robustness.json"
    robustness.write_text(json.dumps(rows))

    ship_models.replace([guided, no_t1], [robustness], "S")

    manifest = json.loads((ship_models.MODELS / "models.json").read_text())
    entries = {entry["file"]: entry for entry in manifest["models"]}
    assert entries["cohft_S_x2.safetensors"] == untouched
    for name, run, this_model in (("cohft_S_x3.safetensors", guided, "registered"),
                                  ("cohft_S_x3_noT1.safetensors", no_t1, "no-T1 model")):
        entry = entries[name]
        assert "old" not in entry and entry["sha256"] == sha256_of(ship_models.MODELS / name)
        assert_stored_in_float16(ship_models.MODELS / name, run / "best.safetensors")
        assert entry["held_out"]["this_model"] == this_model
        assert [row["subject"] for row in entry["held_out"]["subjects"]] == ["a", "b"]
        for row in entry["held_out"]["subjects"]:  # the pair named by its shipped files, not best.safetensors
            assert (row["model"], row["no_t1_model"]) == ("cohft_S_x3.safetensors", "cohft_S_x3_noT1.safetensors")


def test_a_run_no_row_measured_is_refused(ship_models, tmp_path):
    run = _run(tmp_path / "n", False, 1)
    (ship_models.MODELS / "models.json").write_text(json.dumps({"models": []}))
    robustness = tmp_path / "robustness.json"
    robustness.write_text(json.dumps([_row("a", tmp_path / "g.safetensors", tmp_path / "other.safetensors", 30.0)]))
    with pytest.raises(SystemExit, match="no bench/guide_robustness.py row measured"):
        ship_models.replace([run], [robustness], "S")


def test_a_fine_tune_that_never_beat_its_start_is_refused(ship_models, tmp_path):
    run = _run(tmp_path / "g", True, 0, best_iteration=0, init={"path": "start.safetensors"})
    (ship_models.MODELS / "models.json").write_text(json.dumps({"models": []}))
    robustness = tmp_path / "robustness.json"
    robustness.write_text(json.dumps([_row("a", run / "best.safetensors", tmp_path / "n.safetensors", 30.0)]))
    with pytest.raises(SystemExit, match="no checkpoint beat the starting weights"):
        ship_models.replace([run], [robustness], "S")
    assert not (ship_models.MODELS / "cohft_S_x3.safetensors").exists()


def test_the_guide_checks_frozen_pair_outlives_a_new_x2_model(ship_models, tmp_path):
    shipped = {}
    for use_t1, seed in ((True, 2), (False, 3)):
        run = _run(tmp_path / f"old{int(use_t1)}", use_t1, seed, scale=2)
        name = ship_models.shipped_name("S", 2, use_t1)
        (ship_models.MODELS / name).write_bytes((run / "best.safetensors").read_bytes())
        shipped[name] = {"variant": "S", "scale": 2, "use_t1": use_t1, "file": name,
                         "sha256": sha256_of(run / "best.safetensors")}
    (ship_models.MODELS / "models.json").write_text(json.dumps({"models": list(shipped.values())}))

    ship_models.freeze_guide_check("S")
    ship_models.freeze_guide_check("S")  # again: the same two entries, not four
    new = _run(tmp_path / "new", True, 4, scale=2)
    robustness = tmp_path / "robustness.json"
    robustness.write_text(json.dumps([_row("a", new / "best.safetensors", tmp_path / "n.safetensors", 30.0, 2)]))
    ship_models.replace([new], [robustness], "S")

    entries = json.loads((ship_models.MODELS / "models.json").read_text())["models"]
    frozen = {entry["file"]: entry for entry in entries if entry.get("role") == "guide-check"}
    assert sorted(frozen) == ["cohft_S_x2_guide_check.safetensors", "cohft_S_x2_guide_check_noT1.safetensors"]
    for name, entry in frozen.items():
        source = shipped[entry["copied_from"]]
        assert entry["sha256"] == source["sha256"] == sha256_of(ship_models.MODELS / name)
        assert entry["use_t1"] == source["use_t1"]
    guided = next(entry for entry in entries if entry["file"] == "cohft_S_x2.safetensors")
    assert guided["sha256"] == sha256_of(ship_models.MODELS / "cohft_S_x2.safetensors")
    assert guided["sha256"] != shipped["cohft_S_x2.safetensors"]["sha256"]


def test_freezing_needs_both_x2_models(ship_models):
    (ship_models.MODELS / "models.json").write_text(json.dumps({"models": [
        {"variant": "S", "scale": 2, "use_t1": True, "file": "cohft_S_x2.safetensors", "sha256": "0"}]}))
    with pytest.raises(SystemExit, match="no shipped S x2 pair"):
        ship_models.freeze_guide_check("S")


def assert_stored_in_float16(shipped: Path, best: Path) -> None:
    """The shipped file holds best's weights rounded to float16 and best's header; the library runs it in float32."""
    stored, trained = load_file(str(shipped)), load_file(str(best))
    assert stored.keys() == trained.keys() and {tensor.dtype for tensor in stored.values()} == {torch.float16}
    assert all(torch.equal(stored[name], trained[name].half()) for name in trained)
    assert read_metadata(shipped) == read_metadata(best)
    assert {parameter.dtype for parameter in load_model(shipped).parameters()} == {torch.float32}


def test_files_shipped_in_float32_are_stored_again_in_float16(ship_models, tmp_path):
    run = _run(tmp_path / "old", True, 5, scale=2)
    name = ship_models.shipped_name("S", 2, True)
    (ship_models.MODELS / name).write_bytes((run / "best.safetensors").read_bytes())
    before = sha256_of(run / "best.safetensors")
    (ship_models.MODELS / "models.json").write_text(json.dumps({"models": [
        {"variant": "S", "scale": 2, "use_t1": True, "file": name, "sha256": before, "bytes": 1}]}))

    ship_models.rewrite_stored()
    ship_models.rewrite_stored()  # again: nothing left to rewrite, the record of the float32 file kept

    entry = json.loads((ship_models.MODELS / "models.json").read_text())["models"][0]
    assert entry["stored_from"] == {"sha256": before, "dtype": "float32"}
    assert entry["sha256"] == sha256_of(ship_models.MODELS / name) != before
    assert entry["bytes"] == (ship_models.MODELS / name).stat().st_size
    assert_stored_in_float16(ship_models.MODELS / name, run / "best.safetensors")


def test_a_shipped_file_that_fails_its_checksum_is_not_rewritten(ship_models, tmp_path):
    run = _run(tmp_path / "old", False, 6, scale=2)
    name = ship_models.shipped_name("S", 2, False)
    (ship_models.MODELS / name).write_bytes((run / "best.safetensors").read_bytes())
    (ship_models.MODELS / "models.json").write_text(json.dumps({"models": [
        {"variant": "S", "scale": 2, "use_t1": False, "file": name, "sha256": "0" * 64}]}))
    with pytest.raises(SystemExit, match="does not match its sha256"):
        ship_models.rewrite_stored()
    assert stored_types(ship_models.MODELS / name) == {torch.float32}


def stored_types(path: Path) -> set[torch.dtype]:
    return {tensor.dtype for tensor in load_file(str(path)).values()}


def _through_plane_run(folder: Path, use_t1: bool, seed: int, snapshots: tuple[int, ...]) -> Path:
    """A factor-6 fine-tune whose best on validation is its start, with snapshots kept (--keep-snapshots)."""
    run = _run(folder, use_t1, seed, best_iteration=0, init={"path": "start.safetensors"}, scale=THROUGH_PLANE_SCALE)
    for iteration in snapshots:
        torch.manual_seed(seed + iteration)
        save_weights(build_model("S", THROUGH_PLANE_SCALE, use_t1=use_t1), snapshot_path(run, iteration),
                     {"iteration": iteration, "factors": [6]})
    (run / "val_log.csv").write_text("iteration,train_seconds,val_psnr\n" + "".join(
        f"{iteration},{60.0 * iteration},30.0\n" for iteration in snapshots))
    return run


def test_through_plane_snapshots_chosen_on_another_source_ship_with_their_record(ship_models, tmp_path):
    runs = [_through_plane_run(tmp_path / "t1", True, 7, (0, 3)), _through_plane_run(tmp_path / "n", False, 8, (0, 3))]
    (ship_models.MODELS / "models.json").write_text(json.dumps({"models": []}))
    quality = tmp_path / "quality.json"

    def measured(iteration: int) -> None:
        quality.write_text(json.dumps({"guided": str(snapshot_path(runs[0], iteration)),
                                       "no_t1": str(snapshot_path(runs[1], iteration)), "rows": [{"subject": "a"}]}))

    measured(0)
    with pytest.raises(SystemExit, match="snapshot of iteration 0 is the starting weights"):
        ship_models.ship_through_plane(runs, quality, "S", None, [0, 0])
    with pytest.raises(SystemExit, match="measured .*it000000.safetensors, not .*it000003.safetensors"):
        ship_models.ship_through_plane(runs, quality, "S", None, [3, 3])
    measured(3)
    ship_models.ship_through_plane(runs, quality, "S", None, [3, 3])

    entries = {entry["file"]: entry for entry in
               json.loads((ship_models.MODELS / "models.json").read_text())["models"]}
    assert sorted(entries) == ["cohft_S_through_plane_f6.safetensors", "cohft_S_through_plane_f6_noT1.safetensors"]
    for name, run in zip(sorted(entries), runs):
        entry = entries[name]
        assert entry["factors"] == [6] and entry["held_out"]["subjects"] == [{"subject": "a"}]
        assert entry["training"]["selected"]["iteration"] == entry["training"]["iterations"] == 3
        assert entry["training"]["train_minutes"] == 3.0  # the snapshot's row of the validation log
        assert_stored_in_float16(ship_models.MODELS / name, snapshot_path(run, 3))
