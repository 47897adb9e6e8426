"""The cohft-sr command line: run (single and cohort), demo, info, export-onnx, train / evaluate dispatch, errors."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from inference_helpers import guide_for, save_tiny, volume

from CohfTSuperResLib.cli import main

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("weights"), 2)


@pytest.fixture
def files(tmp_path):
    t2 = volume((3, 22, 26))
    paths = {"t2": tmp_path / "t2.nrrd", "t1": tmp_path / "t1.nii.gz"}
    sitk.WriteImage(t2, str(paths["t2"]))
    sitk.WriteImage(guide_for(t2, 2), str(paths["t1"]))
    return paths


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("cohft-sr: error:")]
    assert len(errors) >= 1 and "Traceback" not in "\n".join(err)
    return errors[0]


def test_run_single_pair(files, weights, tmp_path, capsys):
    output = tmp_path / "out" / "sr.mha"
    code = main(["run", "--t2", str(files["t2"]), "--t1", str(files["t1"]), "--scale", "2", "-o", str(output),
                 "--model", str(weights), "--device", "cpu"])
    assert code == 0 and output.is_file()
    assert sitk.ReadImage(str(output)).GetSize() == (52, 44, 3)
    assert not [p for p in output.parent.iterdir() if p.name != "sr.mha"]  # no temporary left behind
    assert main(["run", "--t2", str(files["t2"]), "--t1", str(files["t1"]), "-o", str(output),
                 "--model", str(weights)]) == 1
    assert "--overwrite" in _one_error_line(capsys)


@pytest.mark.parametrize(
    "arguments,message",
    [
        (["--t2", "{missing}", "--t1", "{t1}", "-o", "{out}"], "input not found"),
        (["--t2", "{t2}", "--t1", "{t1}", "-o", "{tmp}/sr.jpg"], "cannot write sr.jpg"),
        (["--t2", "{t2}", "-o", "{out}"], "needs the registered HR T1"),
        (["--t2", "{t1_bad}", "--t1", "{t1}", "-o", "{out}"], "cannot read"),
        (["--t2", "{t2}", "--t1", "{t1}"], "--output"),
    ],
)
def test_run_errors_are_one_line(files, weights, tmp_path, capsys, arguments, message):
    (tmp_path / "bad.nii.gz").write_bytes(b"not an image")
    names = {"missing": tmp_path / "absent.nii.gz", "t1": files["t1"], "t2": files["t2"], "out": tmp_path / "sr.nii.gz",
             "tmp": tmp_path, "t1_bad": tmp_path / "bad.nii.gz"}
    argv = ["run", *(a.format(**names) for a in arguments), "--model", str(weights), "--device", "cpu"]
    assert main(argv) == 1
    assert message in _one_error_line(capsys)
    assert not (tmp_path / "sr.nii.gz").exists()


def test_bad_argument_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--t2", "a.nii", "--scale", "5"])
    assert exit_info.value.code == 2


def test_cohort_resumable_and_sharded(files, weights, tmp_path, capsys, monkeypatch):
    manifest = tmp_path / "cases.csv"
    rows = ["t2,t1,output"] + [f"t2.nrrd,t1.nii.gz,out/case{i}.nii.gz" for i in range(3)]
    rows.append("absent.nii.gz,t1.nii.gz,out/bad.nii.gz")
    manifest.write_text("\n".join(rows) + "\n")
    base = ["run", "--manifest", str(manifest), "--model", str(weights), "--device", "cpu"]
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(base) == 1  # rank 1 takes rows 1 and 3; row 3 is missing
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["case1.nii.gz"]
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("cohft-sr: error:")]
    assert len(errors) == 2 and "cases.csv line 5 (absent.nii.gz): input not found" in errors[0]
    assert errors[1] == "cohft-sr: error: 1 of 2 row(s) failed: line 5"
    assert "cohort: 1 written, 0 skipped (exist), 1 failed of 2 row(s)" in captured.out
    monkeypatch.setenv("RANK", "0")
    assert main(base) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["case0.nii.gz", "case1.nii.gz", "case2.nii.gz"]
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    capsys.readouterr()
    main(base)
    assert [line for line in capsys.readouterr().out.splitlines() if line.startswith("skip ")] == [
        f"skip {tmp_path / 'out' / f'case{i}.nii.gz'} (exists)" for i in range(3)]


def test_manifest_without_columns_or_rows(tmp_path, weights, capsys):
    manifest = tmp_path / "cases.csv"
    manifest.write_text("image,result\na,b\n")
    assert main(["run", "--manifest", str(manifest), "--model", str(weights)]) == 1
    assert "lacks column(s) t2, output" in _one_error_line(capsys)
    manifest.write_text("t2,t1,output\n")
    assert main(["run", "--manifest", str(manifest), "--model", str(weights)]) == 1
    assert "has a header but no rows: nothing to run" in _one_error_line(capsys)


def test_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "devices:" in out and "torch" in out and "models folder" in out


def test_demo_needs_a_model_then_runs_on_the_phantom(weights, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("CohfTSuperResLib.weights.registry.models_dir", lambda: tmp_path / "no_models")
    assert main(["demo", "--phantom", "-o", str(tmp_path / "demo")]) == 1
    assert "--model PATH" in _one_error_line(capsys)
    assert main(["demo", "--phantom", "-o", str(tmp_path / "demo"), "--model", str(weights), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "input: brain phantom generated in code" in out and "PSNR vs HR truth at x2" in out and "bicubic" in out
    assert sitk.ReadImage(str(tmp_path / "demo" / "sr_t2.nii.gz")).GetSize() == (192, 192, 12)
    png = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "demo" / "comparison.png")))
    from CohfTSuperResLib.evaluation.demo import caption as caption_bar

    caption = caption_bar(["two", "lines"], 10).shape[0]  # each panel has a title and a measurement line
    assert png.dtype == np.uint8 and png.shape == (caption + 384, 4 * 384 + 3 * 2)  # 192-pixel slices shown x2
    for panel in range(4):  # every panel has its caption: ink in the bar above the image
        assert png[:caption, panel * 386 : panel * 386 + 384].max() > 200


def test_demo_runs_on_the_shipped_sample_by_default(weights, tmp_path, capsys):
    """Without --phantom the demo reads the real sample slab (no outside data) and its x2 input is the shipped LR T2."""
    from CohfTSuperResLib.data.sample_data import read_sample

    assert main(["demo", "-o", str(tmp_path / "demo"), "--model", str(weights), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "input: open_ms mni/patient26 slab" in out
    psnrs = [float(word) for line in out.splitlines() if line.startswith("PSNR") for word in line.split()
             if word.replace(".", "", 1).isdigit()]
    assert len(psnrs) == 2 and all(np.isfinite(psnrs))  # measured, printed with two decimals
    sample = read_sample()
    lr = sitk.ReadImage(str(tmp_path / "demo" / "lr_t2.nii.gz"))
    shipped = sitk.GetArrayFromImage(sample["lr_t2"])  # made by the same synthesis, on another CPU: FFT rounding
    np.testing.assert_allclose(sitk.GetArrayFromImage(lr), shipped, rtol=0, atol=1e-6 * np.abs(shipped).max())
    assert sitk.ReadImage(str(tmp_path / "demo" / "sr_t2.nii.gz")).GetSize() == sample["hr_t2"].GetSize()


def test_train_and_evaluate_are_delegated(monkeypatch):
    calls = []
    for name, path in (("train", "training.train"), ("evaluate", "evaluation.evaluate")):
        module = types.ModuleType(f"CohfTSuperResLib.{path}")
        module.main = lambda argv, name=name: calls.append((name, argv)) or 3
        monkeypatch.setitem(sys.modules, f"CohfTSuperResLib.{path}", module)
    assert main(["train", "--epochs", "2"]) == 3
    assert main(["evaluate", "--help"]) == 3
    assert calls == [("train", ["--epochs", "2"]), ("evaluate", ["--help"])]


def test_demo_caption_draws_each_line_left_aligned_and_clipped():
    from CohfTSuperResLib.evaluation.demo import LINE_HEIGHT, MARGIN, caption

    bar = caption(["PSNR 28.44 dB", "x2"], width=60)
    assert bar.dtype == np.uint8 and bar.shape == (MARGIN + 2 * LINE_HEIGHT, 60)
    first, second = bar[MARGIN:MARGIN + LINE_HEIGHT], bar[MARGIN + LINE_HEIGHT:]
    assert first.max() > 200 and second.max() > 200  # ink on both lines
    assert first[:, -3:].max() > 0  # the long line reaches the right edge: clipped, not wrapped
    inked = np.flatnonzero(second.max(axis=0) > 0)
    assert MARGIN - 2 <= inked[0] <= MARGIN + 2 and inked[-1] < 30  # the short one: left-aligned after the margin


def test_output_equal_to_an_input_is_refused_with_overwrite(files, weights, tmp_path, capsys):
    before = files["t2"].read_bytes()
    for output in (files["t2"], tmp_path / "sub" / ".." / "t2.nrrd"):
        assert main(["run", "--t2", str(files["t2"]), "--t1", str(files["t1"]), "-o", str(output), "--overwrite",
                     "--model", str(weights), "--device", "cpu"]) == 1
        assert "is the input" in _one_error_line(capsys)
    assert files["t2"].read_bytes() == before


def test_a_second_run_on_the_same_output_is_refused(files, weights, tmp_path, capsys):
    from CohfTSuperResLib.imageio.volumes import OutputLock

    output = tmp_path / "sr.nii.gz"
    with OutputLock(output):  # what another run holds while it works
        assert main(["run", "--t2", str(files["t2"]), "--t1", str(files["t1"]), "-o", str(output),
                     "--model", str(weights), "--device", "cpu"]) == 1
    assert "another run is writing" in _one_error_line(capsys)
    assert not output.exists()


def test_png_output_is_refused_before_the_run(files, weights, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("CohfTSuperResLib.inference.engine.super_resolve", lambda *a, **k: pytest.fail("inference ran"))
    assert main(["run", "--t2", str(files["t2"]), "--t1", str(files["t1"]), "-o", str(tmp_path / "sr.png"),
                 "--model", str(weights), "--device", "cpu"]) == 1
    assert "cannot write sr.png" in _one_error_line(capsys)


def test_cohort_row_with_an_unexpected_error_does_not_stop_the_others(files, weights, tmp_path, capsys, monkeypatch):
    import CohfTSuperResLib.inference.engine as inference

    real = inference.super_resolve
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise ZeroDivisionError("a bug in row one")
        return real(*args, **kwargs)

    monkeypatch.setattr(inference, "super_resolve", flaky)
    manifest = tmp_path / "cases.csv"
    manifest.write_text("t2,t1,output\n" + "".join(f"t2.nrrd,t1.nii.gz,out/case{i}.nii.gz\n" for i in range(2)))
    assert main(["run", "--manifest", str(manifest), "--model", str(weights), "--device", "cpu"]) == 1
    captured = capsys.readouterr()
    assert "cases.csv line 2 (t2.nrrd): unexpected ZeroDivisionError: a bug in row one" in captured.err
    assert "1 of 2 row(s) failed: line 2" in captured.err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["case1.nii.gz"]


SLOW_WRITE = """
import sys, time
import CohfTSuperResLib.imageio.volumes as volume_io
real = volume_io.sitk.WriteImage
def slow_write(image, path, useCompression=False):
    real(image, path, useCompression)
    print("WRITING", flush=True)
    time.sleep(30)
volume_io.sitk.WriteImage = slow_write
from CohfTSuperResLib.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGHUP"])
def test_a_signal_during_the_write_leaves_the_old_output_and_no_temporary_file(files, weights, tmp_path, signal_name):
    import os
    import signal
    import subprocess

    output = tmp_path / "out" / "sr.nii.gz"
    output.parent.mkdir()
    output.write_bytes(b"the earlier result")
    root = str(__import__("pathlib").Path(__file__).resolve().parents[1])
    child = subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITE, "run", "--t2", str(files["t2"]), "--t1", str(files["t1"]), "-o", str(output),
         "--overwrite", "--model", str(weights), "--device", "cpu"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": root},
    )
    assert child.stdout.readline().strip() == "WRITING"
    child.send_signal(getattr(signal, signal_name))
    _out, err = child.communicate(timeout=60)
    assert child.returncode == {"SIGTERM": 143, "SIGHUP": 129}[signal_name]
    assert f"cohft-sr: error: stopped by {signal_name}" in err and "Traceback" not in err
    assert output.read_bytes() == b"the earlier result"
    assert sorted(p.name for p in output.parent.iterdir()) == ["sr.nii.gz"]  # no temporary, no lock file


def test_cohort_manifest_that_would_overwrite_its_own_inputs_is_refused(files, weights, tmp_path, capsys):
    manifest = tmp_path / "cases.csv"
    for rows, message in (
        (["t2.nrrd,t1.nii.gz,out/a.nii.gz", "t2.nrrd,t1.nii.gz,out/./a.nii.gz"], "lines 2 and 3 write the same output"),
        (["t2.nrrd,t1.nii.gz,out/a.nii.gz", "t2.nrrd,t1.nii.gz,t1.nii.gz"], "line 3: the output t1.nii.gz is an input"),
    ):
        manifest.write_text("\n".join(["t2,t1,output", *rows]) + "\n")
        assert main(["run", "--manifest", str(manifest), "--model", str(weights), "--device", "cpu",
                     "--overwrite"]) == 1
        assert message in _one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_cohort_manifest_with_a_byte_order_mark(files, weights, tmp_path, capsys):
    manifest = tmp_path / "cases.csv"
    manifest.write_text("\ufefft2,t1,output\nt2.nrrd,t1.nii.gz,out/a.nii.gz\n", encoding="utf-8")
    assert main(["run", "--manifest", str(manifest), "--model", str(weights), "--device", "cpu"]) == 0
    assert (tmp_path / "out" / "a.nii.gz").is_file()


def test_the_t2_given_as_its_own_t1_is_refused(files, weights, tmp_path, capsys):
    assert main(["run", "--t2", str(files["t2"]), "--t1", str(files["t2"]), "-o", str(tmp_path / "sr.nii.gz"),
                 "--model", str(weights), "--device", "cpu"]) == 1
    assert "the T1 and the T2 are the same file" in _one_error_line(capsys)


def test_cohort_rows_choose_their_guide_check_and_the_summary_records_what_ran(files, weights, tmp_path, capsys,
                                                                                monkeypatch):
    """A guide_check column overrides --guide-check per row; the summary CSV beside the manifest says, per row, what
    happened, which model ran and what the check measured (here a check that finds the T1 unhelpful)."""
    import csv

    from CohfTSuperResLib.inference.guide_check import GuideVerdict

    monkeypatch.setattr("CohfTSuperResLib.inference.engine.check_guide",
                        lambda checked, options: GuideVerdict(-1.0, False, 0.5, 3, (3.0, 0.0, 0.0), 0.1))
    manifest = tmp_path / "cases.csv"
    manifest.write_text("t2,t1,output,guide_check\n"
                        "t2.nrrd,t1.nii.gz,out/warned.nrrd,warn\n"
                        "t2.nrrd,t1.nii.gz,out/refused.nrrd,refuse\n"
                        "t2.nrrd,t1.nii.gz,out/unchecked.nrrd,off\n")
    assert main(["run", "--manifest", str(manifest), "--model", str(weights), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "cohft-sr: note: guide check: the T1 does not help" in err and "seems shifted by about 3 mm" in err
    with open(tmp_path / "cases_summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["status"] for row in rows] == ["written", "failed", "written"]
    assert rows[0]["model"] == weights.name and rows[0]["guide_check"].startswith("benefit_db=-1.000")
    assert "guide check 'refuse'" in rows[1]["message"] and rows[2]["guide_check"] == "off"
    written = sitk.ReadImage(str(tmp_path / "out" / "warned.nrrd"))
    assert written.GetMetaData("cohft_guide_check").startswith("benefit_db=-1.000")
    assert main(["run", "--manifest", str(manifest), "--model", str(weights), "--device", "cpu"]) == 1  # resumed
    with open(tmp_path / "cases_summary.csv", newline="") as handle:
        again = list(csv.DictReader(handle))
    assert [row["status"] for row in again] == ["skipped (exists)", "failed", "skipped (exists)"]
    assert [(row["model"], row["guide_check"]) for row in again[::2]] == [(row["model"], row["guide_check"])
                                                                          for row in rows[::2]]  # kept from the first
    with pytest.raises(SystemExit):
        main(["run", "--t2", str(files["t2"]), "-o", str(tmp_path / "x.nrrd"), "--guide-check", "sometimes"])
