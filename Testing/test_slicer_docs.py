"""The batch script of docs/slicer.md, taken from the page and run on real MRML (slicer-core) on a small cohort:
it calls the dependency step, super-resolves the good cases in child processes with the shipped model, reports
the bad case with the library's own error type and exits 1. slicer-core has no IO manager, so loadVolume,
saveNode and exit are stand-ins built on MRML's own storage nodes."""

from __future__ import annotations

import re
import sys

import pytest
import SimpleITK as sitk
from slicer_helpers import ROOT, images, module, scene, slicer  # noqa: F401  (fixtures)

DOCS = ROOT / "docs" / "slicer.md"


def batch_script() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.DOTALL)
    [script] = [block for block in blocks if "LIBRARY_ERRORS" in block and "sys.argv" in block]
    return script


def _load_volume(path: str):
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    storage = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(path)
    assert storage.ReadData(node)
    node.CreateDefaultDisplayNodes()
    return node


def _save_node(node, path: str) -> bool:
    storage = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(path)
    return bool(storage.WriteData(node))


def _exit(code: int) -> None:
    raise SystemExit(code)


def test_the_documented_batch_script_runs_and_reports_bad_cases(module, scene, images, tmp_path, monkeypatch, capsys):
    from CohfTSuperResLib.weights.registry import available_models

    if ("S", 2, True) not in available_models():
        pytest.skip("no shipped S x2 model with T1")
    t2, t1 = images
    far = sitk.Image(t1)
    far.SetOrigin((900.0, 900.0, 900.0))
    cohort = tmp_path / "cohort"
    for case, guide in (("case1", t1), ("case2", far), ("case3", t1)):
        (cohort / case).mkdir(parents=True)
        sitk.WriteImage(t2, str(cohort / case / "t2.nii.gz"))
        sitk.WriteImage(guide, str(cohort / case / "t1.nii.gz"))
    monkeypatch.setattr(slicer.util, "loadVolume", _load_volume, raising=False)
    monkeypatch.setattr(slicer.util, "saveNode", _save_node, raising=False)
    monkeypatch.setattr(slicer.util, "exit", _exit, raising=False)
    monkeypatch.setattr(sys, "argv", ["sr_cohort.py", str(cohort), str(tmp_path / "out")])
    with pytest.raises(SystemExit) as ended:
        exec(compile(batch_script(), "sr_cohort.py", "exec"), {"__name__": "__main__"})
    assert ended.value.code == 1
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["case1_t2_SRx2.nrrd", "case3_t2_SRx2.nrrd"]
    assert sitk.ReadImage(str(tmp_path / "out" / "case1_t2_SRx2.nrrd")).GetSize() == (96, 96, 4)
    printed = capsys.readouterr().out
    assert "case2: InputError: the T1 does not overlap the T2" in printed
