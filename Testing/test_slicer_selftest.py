"""The module's self-test (what *Reload and Test* runs in Slicer) on the shipped sample data, with and without
torch, and the sample data's registration in Slicer's Sample Data module (slicer-core; SampleData and
slicer.app are replaced by recorders here, because slicer-core has neither)."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import types
import urllib.request
from pathlib import Path

import pytest
from slicer_helpers import MODULE_DIR, STANDIN, module, slicer, temporary_folders, tiny_weights  # noqa: F401


def _self_test_script(model_path: Path | None = None) -> str:
    """A fresh Python that imports the module as Slicer does (slicer-core, the stand-in base classes), runs its
    self-test (with model_path: those weights, without the comparison with interpolation), then says what it loaded
    and whether torch was ever imported into this process (Slicer's)."""
    test = ("CohfTSuperRes.CohfTSuperResTest()" if model_path is None else
            "type('RandomWeights', (CohfTSuperRes.CohfTSuperResTest,), "
            f"dict(modelPath=pathlib.Path({str(model_path)!r}), requireBetterThanInterpolation=False))()")
    return f"""
import logging, pathlib, sys
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
import slicer
slicer.__path__.append({str(STANDIN)!r})
sys.path.insert(0, {str(MODULE_DIR)!r})
slicer.mrmlScene = slicer.vtkMRMLScene()
import CohfTSuperRes
{test}.runTest()
print("nodes:", sorted((slicer.mrmlScene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode").GetName(),
                        slicer.mrmlScene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode").GetImageData().GetDimensions())
                       for i in range(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"))))
print("torch imported:", any(name == "torch" or name.startswith("torch.") for name, m in sys.modules.items() if m))
"""


def _run_python(script: str) -> subprocess.CompletedProcess:
    process = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stderr[-3000:]
    return process


def test_self_test_runs_on_the_sample_in_a_child_process_and_slicer_never_imports_torch(tiny_weights):
    """With torch installed: the whole run on the sample slab (random tiny weights, so without the comparison with
    interpolation, which needs the trained model: test_shipped_models.py runs the demo on the same slab for that),
    the network in the child process only: torch never enters Slicer's process."""
    folders = temporary_folders()
    output = _run_python(_self_test_script(tiny_weights)).stdout
    assert "('patient26_T2_LR_SRx2', (144, 180, 24))" in output
    assert "torch imported: False" in output
    assert temporary_folders() == folders


def test_self_test_without_torch_tests_what_it_can_and_says_what_it_skipped():
    script = _self_test_script().replace(  # as on a Slicer without PyTorch: `import torch` fails
        "import slicer\n", "import slicer\nsys.modules['torch'] = None\n", 1)
    output = _run_python(script).stdout
    assert "Loading the sample data" in output
    assert ("SKIPPED the super-resolution part of the self-test: it needs torch>=2.2 (not installed; runs the network)"
            in output)
    assert "nodes: [('patient26_T1', (144, 180, 72)), ('patient26_T2_HR_truth', (144, 180, 24)), " \
           "('patient26_T2_LR', (72, 90, 24))]" in output
    assert "torch imported: False" in output


def test_sample_data_is_registered_with_checked_local_files(module, tmp_path, monkeypatch):
    """The keyword arguments given to SampleData.SampleDataLogic.registerCustomSampleDataSource, and the download
    step that Slicer's Sample Data module does with them (urlretrieve into its cache, then the sha256 check)."""
    from CohfTSuperResLib.data.sample_data import sample_files

    registered = []
    sample_data = types.SimpleNamespace(SampleDataLogic=types.SimpleNamespace(
        registerCustomSampleDataSource=lambda **kwargs: registered.append(kwargs)))
    monkeypatch.setitem(sys.modules, "SampleData", sample_data)
    module.samples.registerSampleData()
    [source] = registered
    assert source["category"] == "Cohf-T super-resolution" and source["sampleName"] == module.samples.SAMPLE_NAME
    assert source["nodeNames"] == ["patient26_T2_LR", "patient26_T1", "patient26_T2_HR_truth"]
    assert source["loadFileTypes"] == ["VolumeFile"] * 3
    files = sample_files()
    assert source["thumbnailFileName"] == str(files.thumbnail) and files.thumbnail.is_file()
    for uri, name, checksum in zip(source["uris"], source["fileNames"], source["checksums"], strict=True):
        assert uri.startswith("file://")
        copy = tmp_path / name
        urllib.request.urlretrieve(uri, copy)
        assert checksum == "SHA256:" + hashlib.sha256(copy.read_bytes()).hexdigest()


def test_a_damaged_sample_is_not_registered_and_says_why(module, tmp_path, monkeypatch, caplog):
    registered = []
    monkeypatch.setitem(sys.modules, "SampleData", types.SimpleNamespace(SampleDataLogic=types.SimpleNamespace(
        registerCustomSampleDataSource=lambda **kwargs: registered.append(kwargs))))
    monkeypatch.setattr("CohfTSuperResLib.data.sample_data.sample_dir", lambda: tmp_path)
    module.samples.registerSampleData()
    assert registered == [] and "sample data not registered: the sample data is not installed" in caplog.text


def test_module_registers_the_sample_once_slicer_has_started(module, monkeypatch):
    connections = []
    monkeypatch.setattr(slicer, "app", types.SimpleNamespace(connect=lambda *a: connections.append(a)), raising=False)
    parent = types.SimpleNamespace()
    module.CohfTSuperRes(parent)
    assert connections == [("startupCompleted()", module.samples.registerSampleData)]
    assert parent.categories == ["Filtering"] and "CC-BY" in parent.acknowledgementText
    homepage = re.search(r'set\(EXTENSION_HOMEPAGE "([^"]+)"\)', (MODULE_DIR.parent / "CMakeLists.txt").read_text())
    assert f'href="{homepage.group(1)}"' in parent.helpText  # the help links the extension's documentation


def test_sample_files_are_checked_against_their_sha256(tmp_path, monkeypatch):
    import shutil

    from CohfTSuperResLib.errors import InputError
    from CohfTSuperResLib.data.sample_data import sample_dir, sample_files

    copy = tmp_path / "SampleData"
    shutil.copytree(sample_dir(), copy)
    monkeypatch.setenv("COHFT_SR_SAMPLE_DATA", str(copy))
    assert sample_files().folder == copy
    with open(copy / "patient26_slab_T1.nii.gz", "r+b") as handle:
        handle.seek(1000)
        handle.write(b"\x00")
    with pytest.raises(InputError, match="patient26_slab_T1.nii.gz fails its checksum"):
        sample_files()
    monkeypatch.setattr("CohfTSuperResLib.data.sample_data.sample_dir", lambda: tmp_path / "nowhere")
    with pytest.raises(InputError, match="sample data is not installed .*cohft-sr demo --phantom"):
        sample_files()
