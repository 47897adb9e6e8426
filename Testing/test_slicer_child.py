"""Child-process runs of the Slicer module on real MRML (slicer-core): the library's command line in a child
Python (here this venv's python; in Slicer, PythonSlicer), polled like the GUI's QTimer does.

Checks: the child gives the in-process Logic's voxels; progress arrives while it runs; cancel kills it and
leaves no process, no temporary file and no node; a failing or crashing child reports its message in the status
line and leaves Slicer's process running. Timings (cancel latency, poll cost) on the sample data:
`pytest -m slow` (printed).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from CohfTSuperResLib.options import RunOptions
from slicer_helpers import (  # noqa: F401  (fixtures)
    SCALE,
    SLICES,
    add_volume,
    images,
    module,
    node_matrix,
    scene,
    slicer,
    temporary_folders,
    weights,
)


def _relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b).max() / np.abs(b).max())


def test_child_process_gives_the_in_process_voxels(module, scene, images, weights):
    t2, t1 = images
    t2_node, t1_node = add_volume(scene, t2, "T2"), add_volume(scene, t1, "T1")
    logic = module.CohfTSuperResLogic()
    options = RunOptions(scale=SCALE, device="cpu", model_path=weights, guide_check="off")
    reference = logic.process(t2_node, t1_node, options=options, inProcess=True)
    folders, reports, log = temporary_folders(), [], []
    child = logic.process(t2_node, t1_node, options=options, progressCallback=lambda d, t: reports.append((d, t)),
                          logCallback=log.append)
    assert child.GetName() == "T2_SRx2_1" and child is not reference
    np.testing.assert_allclose(node_matrix(child), node_matrix(reference), atol=1e-9)
    assert _relative_difference(slicer.util.arrayFromVolume(child), slicer.util.arrayFromVolume(reference)) < 1e-5
    assert reports[-1] == (len(SLICES), len(SLICES))
    assert any(line.startswith("wrote ") for line in log)  # the child's own output reached the log
    assert temporary_folders() == folders


def test_command_line_is_the_librarys_run_with_json_progress(module, tmp_path):
    from CohfTSuperResSlicerLib import childrun

    command = childrun.commandLine("python", tmp_path, True, RunOptions(
        scale=3, slice_axis=2, variant="S", device="cpu", backend="onnx", precision="fp32", batch_size=2, guide_check="off"))
    assert command[:4] == ["python", "-c", childrun.CLI_ENTRY, "run"]
    arguments = dict(zip(command[4::2], command[5::2], strict=False))
    assert arguments["--t2"] == str(tmp_path / "t2.nrrd") and arguments["--t1"] == str(tmp_path / "t1.nrrd")
    assert (arguments["--scale"], arguments["--slice-axis"], arguments["--backend"]) == ("3", "2", "onnx")
    assert "--progress-json" in command and "--variant" in command and "--model" not in command
    no_t1 = childrun.commandLine("python", tmp_path, False,
                                        RunOptions(scale=4, slice_axis=2, model_path="/m.safetensors", guide_check="off"))
    assert "--t1" not in no_t1 and no_t1[no_t1.index("--model") + 1] == "/m.safetensors" and "--variant" not in no_t1


@pytest.fixture
def sample(module, scene):
    """The shipped sample slab (LR T2 72 x 90 x 24, T1, HR truth) as nodes."""
    return module.samples.loadSampleIntoScene(scene)


def test_gui_run_reports_progress_and_cancel_kills_the_child_at_once(module, scene, sample, weights):
    """What the GUI does: startProcessing, poll every 0.2 s, Cancel while the child computes."""
    logic = module.CohfTSuperResLogic()
    volumes = scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
    folders = temporary_folders()
    run = logic.startProcessing(sample["lr_t2"], sample["t1"], options=RunOptions(
        scale=SCALE, device="cpu", model_path=weights, batch_size=1, guide_check="off"))
    while run.progress[0] < 1:  # until the first slice is done: the network is running in the child
        assert not run.poll(), run.error
        time.sleep(0.2)
    assert run.progress[1] == 24 and run.remainingSeconds() is not None
    pid, folder = run.child.process.pid, run.child.folder
    run.cancel()
    assert run.poll()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the child is gone (and reaped)
    assert not folder.exists() and temporary_folders() == folders
    assert run.outputNode is None and scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == volumes
    assert logic.outcomeMessage(run) == "Cancelled; nothing was written."


def test_process_cancel_callback_stops_the_child(module, scene, sample, weights):
    from CohfTSuperResLib.errors import InferenceCancelled

    logic = module.CohfTSuperResLogic()
    volumes, folders, seen = scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"), temporary_folders(), []
    with pytest.raises(InferenceCancelled):
        logic.process(sample["lr_t2"], sample["t1"], options=RunOptions(
            scale=SCALE, device="cpu", model_path=weights, batch_size=1, guide_check="off"),
            progressCallback=lambda done, total: seen.append(total), cancelCallback=lambda: bool(seen))
    assert seen and temporary_folders() == folders
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == volumes


def _damaged_weights(weights: Path, folder: Path) -> Path:
    """The weights with an intact header (so the check before Apply accepts them) but truncated tensors."""
    data = weights.read_bytes()
    header = 8 + int.from_bytes(data[:8], "little")
    damaged = folder / "damaged_S_x2.safetensors"
    damaged.write_bytes(data[: header + 1000])
    return damaged


def test_failing_child_reports_its_error_message_in_the_status(module, scene, images, weights, tmp_path):
    t2, t1 = images
    t2_node, t1_node = add_volume(scene, t2, "T2"), add_volume(scene, t1, "T1")
    damaged = _damaged_weights(weights, tmp_path)
    logic = module.CohfTSuperResLogic()
    options = RunOptions(scale=SCALE, device="cpu", model_path=damaged, guide_check="off")
    assert logic.choiceProblem(t2_node, t1_node, options=options) is None  # knowable only by loading
    volumes, folders = scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"), temporary_folders()
    run = logic.startProcessing(t2_node, t1_node, options=options)
    assert run.wait(300)
    status = logic.outcomeMessage(run)
    child_errors = [line for line in run.child.messages if line.startswith("cohft-sr: error: ")]
    assert len(child_errors) == 1 and damaged.name in child_errors[0]
    assert child_errors[0].removeprefix("cohft-sr: error: ").lower() in status.lower()  # the child's own words
    assert type(run.error).__name__ == "InferenceError" and run.outputNode is None
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == volumes and temporary_folders() == folders


def test_crashing_child_is_reported_and_this_process_goes_on(module, scene, images, weights, monkeypatch):
    """A native crash (here the child kills itself with SIGSEGV) ends the child only."""
    t2, t1 = images
    t2_node, t1_node = add_volume(scene, t2, "T2"), add_volume(scene, t1, "T1")
    from CohfTSuperResSlicerLib import childrun

    monkeypatch.setattr(childrun, "CLI_ENTRY", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    folders = temporary_folders()
    run = module.CohfTSuperResLogic().startProcessing(t2_node, t1_node,
                                                      options=RunOptions(scale=SCALE, model_path=weights, guide_check="off"))
    assert run.wait(120)
    assert f"killed by signal {int(signal.SIGSEGV)}" in str(run.error) and "Slicer is unaffected" in str(run.error)
    assert temporary_folders() == folders


@pytest.mark.slow
def test_timings_on_the_sample_with_the_shipped_model(module, scene, sample):
    """Child-process run vs in-process run of the shipped S x2 model on the sample, and cancel latency (printed for
    docs/slicer.md; the bounds only catch gross regressions)."""
    logic = module.CohfTSuperResLogic()
    options = RunOptions(scale=SCALE, device="cpu", guide_check="off")
    start = time.monotonic()
    in_process = logic.process(sample["lr_t2"], sample["t1"], options=options, inProcess=True)
    in_process_s = time.monotonic() - start
    start, polls = time.monotonic(), []
    run = logic.startProcessing(sample["lr_t2"], sample["t1"], options=options)  # as the GUI does: poll every 0.2 s
    while True:
        poll_start = time.monotonic()
        finished = run.poll()
        polls.append(time.monotonic() - poll_start)
        if finished:
            break
        time.sleep(0.2)
    child_s = time.monotonic() - start
    assert run.error is None, run.error
    difference = _relative_difference(slicer.util.arrayFromVolume(run.outputNode),
                                      slicer.util.arrayFromVolume(in_process))
    latencies = []
    for _ in range(3):
        run = logic.startProcessing(sample["lr_t2"], sample["t1"], options=RunOptions(scale=SCALE, device="cpu",
                                                                                       batch_size=1, guide_check="off"))
        while run.progress[0] < 1:
            assert not run.poll(), run.error
            time.sleep(0.2)
        start = time.monotonic()
        run.cancel()
        assert run.poll()
        latencies.append(time.monotonic() - start)
    print(f"\nsample x2, shipped S: in-process {in_process_s:.1f} s, child process {child_s:.1f} s "
          f"({child_s - in_process_s:+.1f} s), max relative difference {difference:.1e}; main thread per poll: "
          f"max {max(polls[:-1]) * 1000:.1f} ms over {len(polls) - 1} polls, {polls[-1] * 1000:.0f} ms for the last "
          "(reading the result into the node); cancel latency " + ", ".join(f"{t * 1000:.0f} ms" for t in latencies))
    assert difference < 1e-5
