"""The Slicer module's Logic on real MRML (PyPI `slicer-core`): node <-> image geometry, the in-process run
(voxels, geometry, inputs untouched, storage), and bad inputs refused before any run.

Inputs: real axial slices of open_ms/mni/patient07 (T2 degraded in-plane by 2 in k-space, as in training;
T1 at full resolution), placed on an oblique grid with 3 mm slices; the T1 sits under a linear transform.
Model: random-weight Cohf-T S x2 (the voxel checks compare with the library, not with a truth). Also: the
GUI's child-process run polled to the end and cancelled, and the Python packages a run needs (installed only
after consent). More child-process checks: test_slicer_child.py; choices and the .ui file: test_slicer_choices.py.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import sys
import tomllib
import types
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from CohfTSuperResLib.options import RunOptions
from slicer_helpers import (  # noqa: F401  (fixtures)
    DIRECTION_LPS,
    LPS_FROM_RAS,
    ORIGIN_LPS,
    ROOT,
    SCALE,
    SLICES,
    T1_TRANSFORM_RAS,
    add_volume,
    ijk_to_ras,
    images,
    module,
    node_matrix,
    scene,
    slicer,
    snapshot,
    temporary_folders,
    tiny_weights,
    vtk,
    vtk_matrix,
    weights,
)


def library_result(tmp_path: Path, t2: sitk.Image, t1: sitk.Image, weights: Path) -> np.ndarray:
    """The library's result from files: the truth images written, read back and super-resolved.

    NRRD and MetaImage keep the geometry in double precision (NIfTI would round it to float32).
    """
    from CohfTSuperResLib.inference.engine import super_resolve
    from CohfTSuperResLib.imageio.volumes import read_volume

    sitk.WriteImage(t2, str(tmp_path / "t2.nrrd"))
    sitk.WriteImage(t1, str(tmp_path / "t1.mha"))
    result = super_resolve(read_volume(tmp_path / "t2.nrrd"), read_volume(tmp_path / "t1.mha"), SCALE,
                           model_path=weights, device="cpu", guide_check="off")
    return sitk.GetArrayFromImage(result)


# ---------- node <-> SimpleITK helper ----------


def test_node_to_image_matches_slicers_own_file_writer(module, scene, images, tmp_path):
    """The helper's LPS geometry equals what Slicer's NRRD storage node writes for the same node."""
    t2, _ = images
    node = add_volume(scene, t2, "T2")
    pulled = module.nodes.imageFromVolumeNode(node, "T2")
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(tmp_path / "written_by_mrml.nrrd"))
    assert storage.WriteData(node)
    written = sitk.ReadImage(str(tmp_path / "written_by_mrml.nrrd"))
    for image in (pulled, written):
        np.testing.assert_allclose(image.GetOrigin(), t2.GetOrigin(), atol=1e-9)
        np.testing.assert_allclose(image.GetSpacing(), t2.GetSpacing(), atol=1e-9)
        np.testing.assert_allclose(image.GetDirection(), t2.GetDirection(), atol=1e-9)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(t2))
    assert pulled.GetPixelID() == sitk.sitkInt16


def test_linear_parent_transform_is_applied_without_resampling(module, scene, images):
    _, t1 = images
    node = add_volume(scene, t1, "T1", transform_ras=T1_TRANSFORM_RAS)
    pulled = module.nodes.imageFromVolumeNode(node, "T1")
    np.testing.assert_allclose(pulled.GetOrigin(), t1.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(pulled.GetDirection(), t1.GetDirection(), atol=1e-9)
    np.testing.assert_allclose(pulled.GetSpacing(), t1.GetSpacing(), atol=1e-9)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(pulled), sitk.GetArrayFromImage(t1))
    # ignoring the transform would put the T1 elsewhere
    local = np.linalg.inv(T1_TRANSFORM_RAS) @ ijk_to_ras(t1)
    assert np.abs((LPS_FROM_RAS @ local)[:3, 3] - np.asarray(t1.GetOrigin())).max() > 1.0


def test_image_to_node_round_trip(module, scene, images):
    _, t1 = images
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "pushed")
    module.nodes.updateVolumeNodeFromImage(node, t1)
    np.testing.assert_allclose(node_matrix(node), ijk_to_ras(t1), atol=1e-12)
    back = module.nodes.imageFromVolumeNode(node, "pushed")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(t1))


def _thin_plate_warp(scene, source_points, target_points, name):
    warp = vtk.vtkThinPlateSplineTransform()
    source, target = vtk.vtkPoints(), vtk.vtkPoints()
    for point, moved in zip(source_points, target_points, strict=True):
        source.InsertNextPoint(*point)
        target.InsertNextPoint(*moved)
    warp.SetSourceLandmarks(source)
    warp.SetTargetLandmarks(target)
    warp.SetBasisToR()
    transform = scene.AddNewNodeByClass("vtkMRMLTransformNode", name)
    transform.SetAndObserveTransformToParent(warp)
    return transform


def test_non_linear_transform_t1_resampled_on_a_copy_t2_refused(module, scene, images):
    """A warped T1 is resampled into world space from a copy; a warped LR T2 is refused (it would blur the slices)."""
    t2, t1 = images
    centre = ijk_to_ras(t1) @ np.array([48, 48, 1.5, 1.0])
    offsets = ((30, 0, 0), (-30, 0, 0), (0, 30, 0), (0, -30, 0), (0, 0, 20), (0, 0, -20), (0, 0, 0))
    points = [centre[:3] + offset for offset in offsets]
    moved = [point + (1.5 if offset == (0, 0, 0) else 0.0) for point, offset in zip(points, offsets, strict=True)]
    transform = _thin_plate_warp(scene, points, moved, "warp")
    t1_node, t2_node = add_volume(scene, t1, "T1"), add_volume(scene, t2, "T2")
    for node in (t1_node, t2_node):
        node.SetAndObserveTransformNodeID(transform.GetID())
    before = snapshot(t1_node)
    pulled = module.nodes.imageFromVolumeNode(t1_node, "T1")
    assert snapshot(t1_node) == before
    assert pulled.GetSize() != t1.GetSize() or not np.array_equal(
        sitk.GetArrayFromImage(pulled), sitk.GetArrayFromImage(t1))
    with pytest.raises(module.VolumeNodeError, match="non-linear"):
        module.CohfTSuperResLogic().prepare(t2_node, t1_node, options=RunOptions(scale=SCALE, guide_check="off"))


def test_non_linear_transform_moves_the_voxels_where_it_says(module, scene):
    """A thin-plate-spline warp that is in fact a shift of (2, -3, 3) mm RAS moves the T1's content by it."""
    voxels = np.zeros((6, 40, 40), dtype=np.float32)
    voxels[1:5, 10:30, 12:28] = 100.0
    voxels[2:4, 15:20, 14:18] = 40.0
    image = sitk.GetImageFromArray(voxels)
    image.SetSpacing((1.0, 1.0, 3.0))
    image.SetOrigin((5.0, -7.0, 11.0))
    shift_ras = np.array([2.0, -3.0, 3.0])
    points = [np.array(p, dtype=float) for p in ((0, 0, 0), (100, 0, 0), (0, 100, 0), (0, 0, 100), (60, 60, 60),
                                                  (-50, 20, -30))]
    transform = _thin_plate_warp(scene, points, [p + shift_ras for p in points], "shift as a warp")
    node = add_volume(scene, image, "T1")
    node.SetAndObserveTransformNodeID(transform.GetID())
    pulled = module.nodes.imageFromVolumeNode(node, "T1")
    shift_lps = tuple(float(x) for x in shift_ras * (-1, -1, 1))
    back = sitk.Resample(pulled, image, sitk.TranslationTransform(3, shift_lps), sitk.sitkLinear, 0.0)
    np.testing.assert_allclose(sitk.GetArrayFromImage(back)[1:5, 3:-3, 3:-3], voxels[1:5, 3:-3, 3:-3], atol=0.5)
    unmoved = sitk.Resample(pulled, image, sitk.Transform(), sitk.sitkLinear, 0.0)
    assert np.abs(sitk.GetArrayFromImage(unmoved) - voxels).max() > 50  # the content did move


def test_non_linear_transform_keeps_what_it_moves_beyond_the_grid(module, scene):
    """A warp (a thin-plate spline that is in fact a 12 mm shift) moves much of the T1 beyond its own grid: the
    resampled copy covers where the warp put it, nothing is cut off."""
    voxels = np.zeros((6, 30, 40), dtype=np.float32)
    voxels[1:5, 5:25, 20:] = 100.0  # reaches the grid's last column
    image = sitk.GetImageFromArray(voxels)
    image.SetSpacing((1.0, 1.0, 2.0))
    points = [np.array(p, dtype=float) for p in ((0, 0, 0), (100, 0, 0), (0, 100, 0), (0, 0, 100), (60, 60, 60),
                                                  (-50, 20, -30))]
    shift_ras = np.array([-12.0, 0.0, 0.0])  # -12 mm in R is +12 mm along the LPS x axis, the columns
    transform = _thin_plate_warp(scene, points, [p + shift_ras for p in points], "shift as a warp")
    node = add_volume(scene, image, "T1")
    node.SetAndObserveTransformNodeID(transform.GetID())
    pulled = module.nodes.imageFromVolumeNode(node, "T1")
    volume = float(np.prod(pulled.GetSpacing()))
    assert sitk.GetArrayFromImage(pulled).sum() * volume == pytest.approx(voxels.sum() * 2.0, rel=0.02)
    back = sitk.Resample(pulled, image, sitk.TranslationTransform(3, (12.0, 0.0, 0.0)), sitk.sitkLinear, 0.0)
    np.testing.assert_allclose(sitk.GetArrayFromImage(back), voxels, atol=0.5)


# ---------- the Logic end to end, in this process ----------


def test_process_in_process_geometry_voxels_inputs_and_storage(module, scene, images, weights, tmp_path):
    t2, t1 = images
    t2_node = add_volume(scene, t2, "patient07_T2")
    t1_node = add_volume(scene, t1, "patient07_T1", transform_ras=T1_TRANSFORM_RAS)
    t2_node.GetDisplayNode().SetAutoWindowLevel(False)
    t2_node.GetDisplayNode().SetWindowLevel(321.0, 123.0)
    before = {name: snapshot(node) for name, node in (("t2", t2_node), ("t1", t1_node))}
    reports = []

    output = module.CohfTSuperResLogic().process(
        t2_node, t1_node, options=RunOptions(scale=SCALE, device="cpu", model_path=weights, guide_check="off"), inProcess=True,
        progressCallback=lambda done, total: reports.append((done, total)),
    )

    # name, class, grid convention: origin and direction kept, in-plane spacing / s and size x s, slices untouched
    assert output.GetName() == "patient07_T2_SRx2" and output.GetClassName() == "vtkMRMLScalarVolumeNode"
    assert output.GetImageData().GetDimensions() == (96, 96, len(SLICES))
    expected = ijk_to_ras(t2)
    expected[:3, :2] /= SCALE
    np.testing.assert_allclose(node_matrix(output), expected, atol=1e-9)
    np.testing.assert_allclose(output.GetSpacing(), (0.5, 0.5, 3.0), atol=1e-12)
    np.testing.assert_allclose(output.GetOrigin(), t2_node.GetOrigin(), atol=1e-12)
    # voxels: exactly the library's result on files holding the same volumes
    voxels = slicer.util.arrayFromVolume(output)
    assert voxels.dtype == np.float32
    np.testing.assert_array_equal(voxels, library_result(tmp_path, t2, t1, weights))
    # inputs bit-identical (voxels, type, geometry, transform, not even marked modified)
    assert {"t2": snapshot(t2_node), "t1": snapshot(t1_node)} == before
    # progress reached the end; window/level copied from the input
    assert reports and reports[-1] == (len(SLICES), len(SLICES))
    assert output.GetDisplayNode().GetWindow() == 321.0 and output.GetDisplayNode().GetLevel() == 123.0
    # saved and re-read through storage nodes intact
    for suffix in (".nrrd", ".nii.gz"):
        writer = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
        writer.SetFileName(str(tmp_path / f"sr{suffix}"))
        assert writer.WriteData(output)
        reader = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
        reader.SetFileName(str(tmp_path / f"sr{suffix}"))
        reread = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", f"reread{suffix}")
        assert reader.ReadData(reread)
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(reread), voxels)
        np.testing.assert_allclose(node_matrix(reread), expected, atol=1e-5)


def test_t2_under_transform_output_in_world_space_and_existing_output_reused(module, scene, images, weights):
    t2, t1 = images
    t2_node = add_volume(scene, t2, "T2", transform_ras=T1_TRANSFORM_RAS)
    t1_node = add_volume(scene, t1, "T1")
    existing = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "my output")
    logic = module.CohfTSuperResLogic()
    output = logic.process(t2_node, t1_node, existing, RunOptions(scale=SCALE, device="cpu", model_path=weights, guide_check="off"),
                           inProcess=True)
    assert output is existing and output.GetName() == "my output"
    expected = ijk_to_ras(t2)
    expected[:3, :2] /= SCALE
    np.testing.assert_allclose(node_matrix(output), expected, atol=1e-6)
    assert output.GetParentTransformNode() is None


def test_prepare_checks_once_with_the_library_and_reports_its_notes(module, scene, images, monkeypatch):
    """prepare() calls the library's one input check (check_inputs) exactly once; its notes and warnings reach
    the job's messages (here: a T2 sliced along voxel axis 0, and a T1 covering half of it)."""
    import CohfTSuperResLib.inference.input_checks as checks

    t2, t1 = images
    thick_first = sitk.PermuteAxes(t2, [2, 0, 1])  # 3 mm voxels along axis 0 now
    half = t1[:, :, :2]  # the T1 covers two of the four slices
    t2_node, t1_node = add_volume(scene, thick_first, "T2"), add_volume(scene, half, "T1")
    calls = []
    real = checks.check_inputs
    monkeypatch.setattr(checks, "check_inputs", lambda *a, **k: calls.append(a) or real(*a, **k))
    job = module.CohfTSuperResLogic().prepare(t2_node, t1_node, options=RunOptions(scale=SCALE, guide_check="off"))
    assert len(calls) == 1 and job.checked.slice_axis == 0
    assert any("slice axis is voxel axis 0" in message for message in job.messages)
    assert any("covers only" in message for message in job.messages)


def test_background_run_polls_to_the_end_and_cancel_leaves_nothing(module, scene, images, tiny_weights):
    """The GUI's run: a child process polled to the end gives a node; one cancelled at once leaves no node,
    no process and no temporary file."""
    t2, t1 = images
    t2_node, t1_node = add_volume(scene, t2, "T2"), add_volume(scene, t1, "T1")
    logic = module.CohfTSuperResLogic()
    folders = temporary_folders()
    run = logic.startProcessing(t2_node, t1_node, options=RunOptions(scale=SCALE, device="cpu", model_path=tiny_weights,
                                                                  batch_size=1, guide_check="off"))
    while not run.poll():  # what the GUI's QTimer does
        run.child.wait(0.2)
    assert run.error is None and run.outputNode.GetName() == "T2_SRx2"
    assert run.progress == (len(SLICES), len(SLICES))
    assert logic.outcomeMessage(run).startswith("Done: T2_SRx2 in ")

    volumes = scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
    run = logic.startProcessing(t2_node, t1_node, options=RunOptions(scale=SCALE, device="cpu",
                                                                  model_path=tiny_weights, guide_check="off"))
    run.cancel()
    assert run.poll() and type(run.error).__name__ == "InferenceCancelled" and run.outputNode is None
    assert run.child.process.returncode is not None and temporary_folders() == folders
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == volumes


# ---------- bad inputs: clear errors, inputs unchanged, no output ----------


def _bad_cases(scene, images):
    t2, t1 = images
    t2_node, t1_node = add_volume(scene, t2, "T2"), add_volume(scene, t1, "T1")
    label = add_volume(scene, sitk.Cast(t2, sitk.sitkUInt8), "labels", cls="vtkMRMLLabelMapVolumeNode")
    rgb = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "rgb")
    slicer.util.updateVolumeFromArray(rgb, np.zeros((4, 8, 8, 3), dtype=np.uint8))
    far = sitk.Image(t1)
    far.SetOrigin((900.0, 900.0, 900.0))
    far_node = add_volume(scene, far, "T1 elsewhere")
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "segments")
    nan = sitk.Cast(t2, sitk.sitkFloat32)
    nan[3, 3, 1] = float("nan")
    nan_node = add_volume(scene, nan, "T2 with NaN")
    moved_output = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "moved output")
    moved_output.SetAndObserveTransformNodeID(scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift").GetID())
    return {
        "same node twice": ((t2_node, t2_node, None), "same volume"),
        "output is the T2": ((t2_node, t1_node, t2_node), "is an input"),
        "output is the T1": ((t2_node, t1_node, t1_node), "is an input"),
        "label map T2": ((label, t1_node, None), "label map"),
        "label map T1": ((t2_node, label, None), "label map"),
        "vector volume": ((rgb, t1_node, None), "vector"),
        "segmentation": ((segmentation, t1_node, None), "not a grey-level volume"),
        "no voxels": ((empty, t1_node, None), "holds no voxels"),
        "no overlap": ((t2_node, far_node, None), "does not overlap"),
        "NaN voxels": ((nan_node, t1_node, None), "NaN"),
        "output under a transform": ((t2_node, t1_node, moved_output), "under transform"),
        "T2 missing": ((None, t1_node, None), "Select the input T2"),
        "no model without T1 at x2": ((t2_node, None, None), "No shipped S x2 model without"),
    }


CASES = [
    "same node twice", "output is the T2", "output is the T1", "label map T2", "label map T1", "vector volume",
    "segmentation", "no voxels", "no overlap", "NaN voxels", "output under a transform", "T2 missing",
    "no model without T1 at x2",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_raises_clear_error_and_changes_nothing(module, scene, images, case, monkeypatch):
    from CohfTSuperResLib.errors import InputError, WeightsError

    monkeypatch.setattr("CohfTSuperResLib.weights.registry.available_models", lambda: [("S", 2, True)])
    module.choices._offer.cache_clear()  # the model list changed under an unchanged models.json
    monkeypatch.setattr(module.choices, "_offer", module.choices._offer.__wrapped__)
    (t2_node, t1_node, output), message = _bad_cases(scene, images)[case]
    volumes = [node for node in (t2_node, t1_node, output) if node is not None and node.IsA("vtkMRMLVolumeNode")]
    before = [snapshot(node) for node in volumes if node.GetImageData() is not None]
    count = scene.GetNumberOfNodes()
    with pytest.raises((InputError, WeightsError), match=message):  # the library's own error types
        module.CohfTSuperResLogic().process(t2_node, t1_node, output, RunOptions(scale=SCALE, device="cpu", guide_check="off"))
    assert [snapshot(node) for node in volumes if node.GetImageData() is not None] == before
    assert scene.GetNumberOfNodes() == count


@pytest.mark.parametrize("in_process", [False, True])
def test_unavailable_device_is_a_clear_error_and_adds_nothing(module, scene, images, weights, in_process):
    """Checked where the network runs (the child process reports it), so that Slicer's process needs no torch."""
    from CohfTSuperResLib.errors import InferenceError, InputError

    t2, t1 = images
    t2_node, t1_node = add_volume(scene, t2, "T2"), add_volume(scene, t1, "T1")
    folders, count = temporary_folders(), scene.GetNumberOfNodes()
    with pytest.raises(InputError if in_process else InferenceError, match="CUDA GPU"):
        module.CohfTSuperResLogic().process(t2_node, t1_node, options=RunOptions(
            scale=SCALE, device="cuda:63", model_path=weights, guide_check="off"), inProcess=in_process)
    assert temporary_folders() == folders and scene.GetNumberOfNodes() == count


def test_input_problem_is_what_the_apply_button_shows(module, scene, images):
    t2, t1 = images
    t2_node, t1_node = add_volume(scene, t2, "T2"), add_volume(scene, t1, "T1")
    logic = module.CohfTSuperResLogic()
    assert logic.inputProblem(t2_node, t1_node) is None
    assert "guide T1" in logic.inputProblem(t2_node, None)
    assert logic.inputProblem(t2_node, None, requireT1=False) is None


# ---------- Python packages ----------


@pytest.fixture
def installed(monkeypatch):
    """Pretend exactly these packages are importable, at these versions."""
    def use(versions: dict[str, str]):
        real_find, real_version = importlib.util.find_spec, importlib.metadata.version
        watched = {"torch", "safetensors", "onnxruntime", "onnx", "onnxscript"}
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: (
            (types.SimpleNamespace(name=name) if name in versions else None) if name in watched else real_find(name, *a)))

        def version(name):
            if name in watched | {"onnxruntime-gpu"}:
                if name not in versions:
                    raise importlib.metadata.PackageNotFoundError(name)
                return versions[name]
            return real_version(name)

        monkeypatch.setattr(importlib.metadata, "version", version)
    return use


def test_missing_packages_are_reported_not_installed(module, installed, monkeypatch):
    installs = []
    monkeypatch.setattr(slicer.util, "pip_install", lambda *a, **k: installs.append(a), raising=False)
    missing = module.dependencies.missingPackages
    installed({"torch": "2.13.0+cpu", "safetensors": "0.8.0"})
    assert missing("torch") == []
    installed({"torch": "1.13.1", "safetensors": "0.8.0"})  # an old torch left by another extension
    [torch] = missing("torch")
    assert (torch.requirement, torch.installed) == ("torch>=2.2", "1.13.1") and "too old" in torch.describe()
    installed({"torch": "2.5.0", "safetensors": "0.8.0"})
    assert [p.requirement for p in missing("onnx", "cpu")] == ["onnxruntime>=1.17"]  # running needs the runtime only
    assert [p.requirement for p in missing("onnx", "cuda")] == ["onnxruntime-gpu>=1.17"]
    assert [p.requirement for p in missing("onnx", "cpu", exportNeeded=True)] == [
        "onnxruntime>=1.17", "onnx>=1.15", "onnxscript>=0.4"]  # exporting also needs onnx and onnxscript
    assert installs == []


def test_export_packages_only_when_no_trusted_export_is_cached(module, tiny_weights, tmp_path, monkeypatch):
    monkeypatch.setenv("COHFT_SR_CACHE", str(tmp_path / "cache"))
    from CohfTSuperResLib.imageio.file_integrity import sha256_of
    from CohfTSuperResLib.inference.onnx_cache import cached_path, record

    logic = module.CohfTSuperResLogic
    onnx_names = {"onnx", "onnxscript"}

    def needs_export() -> bool:
        monkeypatch.setattr(module.dependencies, "installedVersion", lambda name: None if name in onnx_names else "9")
        options = RunOptions(backend="onnx", device="cpu", model_path=tiny_weights, guide_check="off")
        return onnx_names <= {p.name for p in logic.missingPackages(options)}

    assert needs_export()
    cached = cached_path(sha256_of(tiny_weights))
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"an exported model")
    assert needs_export()  # no recorded digest: not trusted
    record(cached)
    assert not needs_export()
    onnx_file = tmp_path / "mine.onnx"
    assert not onnx_names & {p.name for p in logic.missingPackages(RunOptions(backend="onnx", model_path=onnx_file, guide_check="off"))}


def test_a_shipped_through_plane_run_needs_an_export_of_the_network_of_each_factor(module, tmp_path, monkeypatch):
    """Through-plane, the run picks the network of its factor: the export packages are needed until every shipped
    through-plane network of that T1 use has a trusted export (an in-plane model's export does not count)."""
    import json

    from CohfTSuperResLib.inference.onnx_cache import cached_path, record
    from CohfTSuperResLib.weights import registry
    from CohfTSuperResLib.weights.storage import save_weights

    from inference_helpers import tiny_model

    monkeypatch.setenv("COHFT_SR_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "Models"
    entries = [{"variant": "S", "scale": scale, "use_t1": True, "file": f"{name}.safetensors",
                "sha256": save_weights(tiny_model(scale, True, seed), folder / f"{name}.safetensors")} | extra
               for name, scale, seed, extra in (("x2", 2, 0, {}), ("every", 1, 1, {}), ("four", 1, 2, {"factors": [4]}))]
    (folder / "models.json").write_text(json.dumps({"models": entries}))
    monkeypatch.setenv(registry.MODELS_ENV, str(folder))
    options = RunOptions(backend="onnx", device="cpu", mode="through-plane", guide_check="off")
    needed = []
    for entry in entries:
        needed.append(module.dependencies.runPackages(options, True)[2])
        cached = cached_path(entry["sha256"])
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_bytes(b"an exported model")
        record(cached)
    assert needed == [True, True, True] and not module.dependencies.runPackages(options, True)[2]


def test_minimum_versions_are_pyprojects(module):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["onnx"]
    floors = {}
    for requirement in requirements:
        match = re.match(r"([A-Za-z0-9_-]+)>=([0-9.]+)", requirement)
        if match:
            floors[match[1]] = match[2]
    for name, minimum in module.dependencies.MINIMUM_VERSIONS.items():
        assert floors[name] == minimum, name


def test_dependencies_installed_only_after_consent(module, installed, monkeypatch):
    """Declining installs nothing; agreeing installs exactly what is missing: pip for the others, with Slicer's
    numpy and SimpleITK pinned by a constraints file that is removed after, and torch through the PyTorch extension,
    which is itself installed from the Extensions Manager when it is absent (then Slicer must restart); torch never
    goes through plain pip."""
    import tempfile

    versions = {"safetensors": "0.8.0"}
    installed(versions)
    monkeypatch.setitem(sys.modules, "PyTorchUtils", None)  # the PyTorch extension is not installed
    calls, extensions = [], []

    def pip_install(requirements):
        constraints = Path(requirements[requirements.index("-c") + 1])
        calls.append((requirements[: requirements.index("-c")], constraints.read_text().split()))
        versions.update(onnxruntime="1.20.0")

    class Manager:
        interactive = True

        def isExtensionInstalled(self, name):
            return name in extensions

        def installExtensionFromServer(self, name, restart=True, update=False):  # Slicer's defaults
            assert not self.interactive  # the user agreed already: no second question
            assert not restart  # a restart now would close Slicer without asking
            extensions.append(name)
            return True

    monkeypatch.setattr(slicer.util, "pip_install", pip_install, raising=False)
    manager = Manager()
    monkeypatch.setattr(slicer, "app", types.SimpleNamespace(extensionsManagerModel=lambda: manager), raising=False)
    questions = []
    ensure = module.dependencies.ensureDependencies
    assert not ensure(lambda text: questions.append(text) or False, "onnx", "cpu")
    assert calls == [] and extensions == []
    assert "torch>=2.2 (not installed" in questions[0] and "onnxruntime>=1.17" in questions[0]
    assert "PyTorch extension is not installed" in questions[0]
    with pytest.raises(module.dependencies.RestartNeeded, match="restart Slicer"):
        ensure(lambda text: True, "onnx", "cpu")
    assert extensions == ["PyTorch"] and calls == []  # torch is not pip-installed behind the extension's back
    assert manager.interactive  # the manager asks its own questions again afterwards
    versions["torch"] = "2.5.0"  # after the restart, the PyTorch extension's torch
    assert ensure(lambda text: True, "onnx", "cpu")
    pins = [f"numpy=={importlib.metadata.version('numpy')}", f"SimpleITK=={importlib.metadata.version('SimpleITK')}"]
    assert calls == [(["onnxruntime>=1.17"], pins)]
    assert not list(Path(tempfile.gettempdir()).glob("CohfTSuperRes-constraints-*"))
    assert ensure(lambda text: pytest.fail("asked although nothing is missing"), "onnx", "cpu")


def test_torch_goes_through_the_pytorch_extension_when_present(module, installed, monkeypatch):
    versions = {"torch": "1.13.1", "safetensors": "0.8.0"}
    installed(versions)
    requested = []

    class PyTorchUtilsLogic:
        def installTorch(self, askConfirmation=False, forceComputationBackend=None, torchVersionRequirement=None):
            requested.append((askConfirmation, torchVersionRequirement))
            versions["torch"] = "2.9.0"
            return types.SimpleNamespace(__version__="2.9.0")

    monkeypatch.setitem(sys.modules, "PyTorchUtils", types.SimpleNamespace(PyTorchUtilsLogic=PyTorchUtilsLogic))
    pip = []
    monkeypatch.setattr(slicer.util, "pip_install", lambda requirements: pip.append(requirements), raising=False)
    questions = []
    assert module.dependencies.ensureDependencies(lambda text: questions.append(text) or True)
    assert "installed 1.13.1 is too old" in questions[0]
    assert requested == [(False, ">=2.2")] and pip == []  # the user was asked once, by the module


# ---------- the study, the caches ----------


def test_a_new_output_goes_into_the_t2s_study(module, scene, images, weights):
    """In the subject hierarchy the result lands beside its T2 (same patient and study), not at the top."""
    t2, t1 = images
    t2_node, t1_node = add_volume(scene, t2, "T2"), add_volume(scene, t1, "T1")
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    patient = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "patient07")
    study = hierarchy.CreateStudyItem(patient, "MR study")
    hierarchy.CreateItem(study, t2_node)  # as Slicer's subject hierarchy logic does when a study is loaded
    output = module.CohfTSuperResLogic().process(
        t2_node, t1_node, options=RunOptions(scale=SCALE, device="cpu", model_path=weights, guide_check="off"), inProcess=True)
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(output)) == study
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(t1_node)) != study  # nothing else was moved


def test_model_choices_are_read_once_per_file_version(module, monkeypatch, tmp_path, tiny_weights):
    """The GUI asks at every event: models.json and a weights file's header are read again only when they change."""
    import os
    import shutil

    import CohfTSuperResLib.weights.registry as registry

    module.choices._offer.cache_clear()
    reads = []
    real = registry.available_models
    monkeypatch.setattr(registry, "available_models", lambda: reads.append(1) or real())
    for _ in range(5):
        module.choices.offer()
    assert len(reads) == 1
    mine = tmp_path / "mine.safetensors"
    shutil.copyfile(tiny_weights, mine)
    headers = []
    real_metadata = module.choices.read_metadata
    monkeypatch.setattr(module.choices, "read_metadata", lambda path: headers.append(path) or real_metadata(path))
    options = RunOptions(scale=SCALE, model_path=mine, guide_check="off")
    for _ in range(5):
        assert module.choices.modelProblem(options, True) is None
    assert len(headers) == 1
    later = mine.stat().st_mtime_ns + 10**9  # the file is rewritten (a new modification time): read again
    os.utime(mine, ns=(later, later))
    module.choices.modelProblem(options, True)
    assert len(headers) == 2
    module.choices._offer.cache_clear()


def test_register_option_adds_the_transform_and_leaves_the_t1_node_alone(module, scene, weights):
    """With 'register' the T1 is registered to the T2 in Slicer's process: the T1 node is untouched, the rigid
    transform is a new transform node in the T2's study, and the job says what it did. The sample slab (72 x 90 x 24
    LR T2, its 1 mm T1 moved 2 mm to the right and then, under a transform of the user's, 3 mm anterior): put above
    the user's transform, the new one moves the T1 back onto the T2."""
    from CohfTSuperResLib.data.sample_data import read_sample

    sample = read_sample()
    moved = sitk.Image(sample["t1"])
    moved.SetOrigin(tuple(np.asarray(moved.GetOrigin()) + (-2.0, 0.0, 0.0)))  # LPS -x: 2 mm to the right
    t2_node, t1_node = add_volume(scene, sample["lr_t2"], "T2"), add_volume(scene, moved, "T1")
    users = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "user's")
    anterior = np.eye(4)
    anterior[1, 3] = 3.0
    users.SetMatrixTransformToParent(vtk_matrix(anterior))
    t1_node.SetAndObserveTransformNodeID(users.GetID())
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    study = hierarchy.CreateStudyItem(hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "patient26"), "MR")
    hierarchy.CreateItem(study, t2_node)
    before, count = snapshot(t1_node), scene.GetNumberOfNodesByClass("vtkMRMLLinearTransformNode")
    job = module.CohfTSuperResLogic().prepare(t2_node, t1_node, options=RunOptions(
        scale=SCALE, device="cpu", model_path=weights, guide_check="off", register=True))
    assert snapshot(t1_node) == before and not job.options.register  # done here, not again in the child
    assert t1_node.GetParentTransformNode() is users and users.GetParentTransformNode() is None
    assert any(message.startswith("registration: the T1 was moved by") for message in job.messages)
    assert scene.GetNumberOfNodesByClass("vtkMRMLLinearTransformNode") == count + 1
    node = scene.GetNodesByClass("vtkMRMLLinearTransformNode").GetItemAsObject(count)
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)) == study
    users.SetAndObserveTransformNodeID(node.GetID())  # as the docstring of Logic._registered says to apply it
    toWorld = vtk.vtkMatrix4x4()
    t1_node.GetParentTransformNode().GetMatrixTransformToWorld(toWorld)
    shift_ras = np.array([toWorld.GetElement(row, 3) for row in range(3)])
    np.testing.assert_allclose(shift_ras, (-2.0, 0.0, 0.0), atol=0.5)  # back 2 mm to the left (RAS -x), 3 mm undone


def test_the_output_node_says_which_model_ran_and_what_the_check_found(module, scene, images, weights):
    t2, t1 = images
    t2_node, t1_node = add_volume(scene, t2, "T2"), add_volume(scene, t1, "T1")
    output = module.CohfTSuperResLogic().process(
        t2_node, t1_node, options=RunOptions(scale=SCALE, device="cpu", model_path=weights, guide_check="off"),
        inProcess=True)
    assert output.GetAttribute("CohfTSuperRes.cohft_model") == weights.name
    assert output.GetAttribute("CohfTSuperRes.cohft_guide_check") == "off"


@pytest.mark.parametrize("thick_axis", [0, 2])  # a sagittal-like acquisition (thick along i) and an axial one (k)
def test_through_plane_on_an_oblique_thick_slice_node(module, scene, open_ms, thick_axis, tmp_path):
    """The through-plane mode from the Logic: thin slices tiling each 4 mm slice along the thick voxel axis, in world
    space, the voxels the library gives on files, the inputs untouched; the T1 under a linear transform."""
    from inference_helpers import save_tiny

    from CohfTSuperResLib.data.synthetic_volumes import thick_slice_volume
    from CohfTSuperResLib.imageio.volumes import read_volume
    from CohfTSuperResLib.inference.engine import super_resolve
    from CohfTSuperResLib.inference.geometry import Grid, thin_slice_grid

    def oblique(name: str) -> sitk.Image:
        voxels = sitk.GetArrayFromImage(sitk.ReadImage(str(open_ms / "mni" / "patient07" / f"{name}.nii.gz")))
        image = sitk.GetImageFromArray(voxels[70:94, 80:120, 70:110].astype(np.float32))
        image.SetOrigin(ORIGIN_LPS)
        image.SetDirection(DIRECTION_LPS.ravel().tolist())
        return image

    thick = sitk.Cast(sitk.Round(thick_slice_volume(oblique("t2"), 4, thick_axis)), sitk.sitkInt16)
    t1 = oblique("t1")
    weights = save_tiny(tmp_path, 1)
    t2_node = add_volume(scene, thick, "T2_thick")
    t1_node = add_volume(scene, t1, "T1", transform_ras=T1_TRANSFORM_RAS)
    before = {name: snapshot(node) for name, node in (("t2", t2_node), ("t1", t1_node))}
    reports = []
    options = RunOptions(mode="through-plane", device="cpu", model_path=weights, guide_check="off")
    output = module.CohfTSuperResLogic().process(t2_node, t1_node, options=options, inProcess=True,
                                                 progressCallback=lambda done, total: reports.append((done, total)))

    assert output.GetName() == "T2_thick_thin_x4"
    grid = thin_slice_grid(Grid.of(thick), 4, thick_axis)
    expected = ijk_to_ras(grid.image_from_array(np.zeros(tuple(reversed(grid.size)), np.float32)))
    np.testing.assert_allclose(node_matrix(output), expected, atol=1e-9)
    assert output.GetImageData().GetDimensions() == grid.size
    sitk.WriteImage(thick, str(tmp_path / "t2.nrrd"))
    sitk.WriteImage(t1, str(tmp_path / "t1.mha"))
    world_t1 = module.nodes.imageFromVolumeNode(t1_node, "T1")  # the T1 where its transform puts it
    library = super_resolve(read_volume(tmp_path / "t2.nrrd"), world_t1, mode="through-plane", model_path=weights,
                            device="cpu", guide_check="off")
    np.testing.assert_allclose(slicer.util.arrayFromVolume(output), sitk.GetArrayFromImage(library), atol=1e-4)
    assert {"t2": snapshot(t2_node), "t1": snapshot(t1_node)} == before
    assert reports and reports[-1][0] == reports[-1][1] == sum(grid.size) - grid.size[thick_axis]  # both families
    assert "through-plane x4" in output.GetAttribute("CohfTSuperRes.cohft_model")
