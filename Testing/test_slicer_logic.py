"""The Slicer module's Logic on real MRML (PyPI `slicer-core`): geometry, voxels, inputs untouched, storage, bad inputs.

slicer-core has MRML, the volume / transform / storage node classes and
slicer.util, but no Qt, no slicer.app, no ScriptedLoadableModule and no
parameterNodeWrapper: the last two come from the test-only stand-in in
Testing/slicer_standin/ (see its README). The GUI is not exercised here.

Inputs: real axial slices of open_ms/mni/patient07 (T2 degraded in-plane by 2
in k-space, as in training; T1 at full resolution), placed on an oblique grid
with 3 mm slices; the T1 sits under a linear transform. Model: random-weight
Cohf-T S x2 (the voxel checks compare with the library, not with a truth).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
vtk = pytest.importorskip("vtk")

ROOT = Path(__file__).resolve().parents[1]
STANDIN = Path(__file__).resolve().parent / "slicer_standin" / "slicer"
SCALE = 2
SLICES = (80, 83, 86, 89)  # 1 mm MNI slices 3 mm apart
CROP = (slice(61, 157), slice(43, 139))  # 96 x 96 voxels around the brain's centre
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


# ---------- fixtures ----------


@pytest.fixture(scope="module")
def module():
    """CohfTSuperRes.py imported on slicer-core, with the stand-in base classes on slicer's package path."""
    if str(STANDIN) not in slicer.__path__:
        slicer.__path__.append(str(STANDIN))
    sys.path.insert(0, str(ROOT / "CohfTSuperRes"))
    try:
        import CohfTSuperRes
    finally:
        sys.path.remove(str(ROOT / "CohfTSuperRes"))
    return CohfTSuperRes


@pytest.fixture
def scene(module):
    """A fresh MRML scene with the default color nodes, set as slicer.mrmlScene."""
    mrml = slicer.vtkMRMLScene()
    application = slicer.vtkSlicerApplicationLogic()
    application.SetMRMLScene(mrml)
    colors = slicer.vtkSlicerColorLogic()
    colors.SetMRMLApplicationLogic(application)
    colors.SetMRMLScene(mrml)
    previous = getattr(slicer, "mrmlScene", None)
    slicer.mrmlScene = mrml
    yield mrml
    mrml.Clear(True)
    slicer.mrmlScene = previous


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """Random-weight Cohf-T S x2 saved as safetensors."""
    import torch

    from CohfTSuperResLib.model import build_model
    from CohfTSuperResLib.weights import save_weights

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "random_S_x2.safetensors"
    save_weights(build_model("S", SCALE), path)
    return path


def _rotation(axis, degrees) -> np.ndarray:
    axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    angle = np.deg2rad(degrees)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


DIRECTION_LPS = _rotation((1.0, 0.3, 0.2), 17.0)  # oblique acquisition
ORIGIN_LPS = (12.5, -30.25, 41.0)
T1_TRANSFORM_RAS = np.eye(4)  # parent transform of the T1 node (world <- local)
T1_TRANSFORM_RAS[:3, :3] = _rotation((0.2, -1.0, 0.4), 23.0)
T1_TRANSFORM_RAS[:3, 3] = (4.0, -7.5, 11.0)


@pytest.fixture(scope="module")
def images(open_ms):
    """Truth in world space as SimpleITK (LPS): LR T2 (int16, 1 x 1 x 3 mm) and HR T1 (float32, 0.5 x 0.5 x 3 mm)."""
    from CohfTSuperResLib.degrade import degrade

    voxels = {}
    for name in ("t1", "t2"):
        volume = sitk.GetArrayFromImage(sitk.ReadImage(str(open_ms / "mni" / "patient07" / f"{name}.nii.gz")))
        voxels[name] = np.stack([volume[k][CROP] for k in SLICES]).astype(np.float32)
    t2 = np.round(degrade(voxels["t2"], SCALE)).clip(-32768, 32767).astype(np.int16)

    def image(array, spacing):
        result = sitk.GetImageFromArray(array)
        result.SetSpacing(spacing)
        result.SetOrigin(ORIGIN_LPS)
        result.SetDirection(DIRECTION_LPS.ravel().tolist())
        return result

    return image(t2, (1.0, 1.0, 3.0)), image(voxels["t1"], (0.5, 0.5, 3.0))


def _ijk_to_ras(image: sitk.Image) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
    matrix[:3, 3] = image.GetOrigin()
    return LPS_FROM_RAS @ matrix


def _vtk_matrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for row in range(4):
        for column in range(4):
            matrix.SetElement(row, column, array[row, column])
    return matrix


def _numpy_matrix(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _node_matrix(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return _numpy_matrix(matrix)


def add_volume(scene, image: sitk.Image, name: str, transform_ras: np.ndarray | None = None,
               cls="vtkMRMLScalarVolumeNode"):
    """A volume node of `image` (written here, independently of the module's helper) that lies, in world
    space, where `image` lies; under a new linear transform node when transform_ras is given."""
    node = scene.AddNewNodeByClass(cls, name)
    slicer.util.updateVolumeFromArray(node, sitk.GetArrayFromImage(image))
    ijk_to_world = _ijk_to_ras(image)
    if transform_ras is None:
        node.SetIJKToRASMatrix(_vtk_matrix(ijk_to_world))
    else:
        transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", f"{name}_transform")
        transform.SetMatrixTransformToParent(_vtk_matrix(transform_ras))
        node.SetIJKToRASMatrix(_vtk_matrix(np.linalg.inv(transform_ras) @ ijk_to_world))
        node.SetAndObserveTransformNodeID(transform.GetID())
    node.CreateDefaultDisplayNodes()
    return node


def snapshot(node) -> dict:
    """Everything of a volume node the Logic must leave as it is."""
    transform = node.GetParentTransformNode()
    matrix = vtk.vtkMatrix4x4()
    if transform is not None:
        transform.GetMatrixTransformToParent(matrix)
    return {
        "voxels": slicer.util.arrayFromVolume(node).tobytes(),
        "dtype": slicer.util.arrayFromVolume(node).dtype,
        "ijk_to_ras": _node_matrix(node).tobytes(),
        "transform": None if transform is None else (transform.GetID(), _numpy_matrix(matrix).tobytes()),
        "mtime": (node.GetMTime(), node.GetImageData().GetMTime()),
        "name": node.GetName(),
    }


def library_result(tmp_path: Path, t2: sitk.Image, t1: sitk.Image, weights: Path) -> np.ndarray:
    """The library's result from files: the truth images written, read back and super-resolved.

    NRRD and MetaImage keep the geometry in double precision (NIfTI would round it to float32).
    """
    from CohfTSuperResLib.inference import super_resolve
    from CohfTSuperResLib.volume_io import read_volume

    sitk.WriteImage(t2, str(tmp_path / "t2.nrrd"))
    sitk.WriteImage(t1, str(tmp_path / "t1.mha"))
    result = super_resolve(read_volume(tmp_path / "t2.nrrd"), read_volume(tmp_path / "t1.mha"), SCALE,
                           model_path=weights, device="cpu")
    return sitk.GetArrayFromImage(result)


# ---------- node <-> SimpleITK helper ----------


def test_node_to_image_matches_slicers_own_file_writer(module, scene, images, tmp_path):
    """The helper's LPS geometry equals what Slicer's NRRD storage node writes for the same node."""
    t2, _ = images
    node = add_volume(scene, t2, "T2")
    pulled = module.imageFromVolumeNode(node, "T2")
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
    pulled = module.imageFromVolumeNode(node, "T1")
    np.testing.assert_allclose(pulled.GetOrigin(), t1.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(pulled.GetDirection(), t1.GetDirection(), atol=1e-9)
    np.testing.assert_allclose(pulled.GetSpacing(), t1.GetSpacing(), atol=1e-9)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(pulled), sitk.GetArrayFromImage(t1))
    # ignoring the transform would put the T1 elsewhere
    local = np.linalg.inv(T1_TRANSFORM_RAS) @ _ijk_to_ras(t1)
    assert np.abs((LPS_FROM_RAS @ local)[:3, 3] - np.asarray(t1.GetOrigin())).max() > 1.0


def test_image_to_node_round_trip(module, scene, images):
    _, t1 = images
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "pushed")
    module.updateVolumeNodeFromImage(node, t1)
    np.testing.assert_allclose(_node_matrix(node), _ijk_to_ras(t1), atol=1e-12)
    back = module.imageFromVolumeNode(node, "pushed")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(t1))


def test_non_linear_transform_t1_resampled_on_a_copy_t2_refused(module, scene, images):
    """A warped T1 is resampled into world space from a copy; a warped LR T2 is refused (it would blur the slices)."""
    t2, t1 = images
    warp = vtk.vtkThinPlateSplineTransform()
    source, target = vtk.vtkPoints(), vtk.vtkPoints()
    centre = _ijk_to_ras(t1) @ np.array([48, 48, 1.5, 1.0])
    for offset in ((30, 0, 0), (-30, 0, 0), (0, 30, 0), (0, -30, 0), (0, 0, 20), (0, 0, -20), (0, 0, 0)):
        point = centre[:3] + offset
        source.InsertNextPoint(*point)
        target.InsertNextPoint(*(point + (1.5 if offset == (0, 0, 0) else 0.0)))
    warp.SetSourceLandmarks(source)
    warp.SetTargetLandmarks(target)
    warp.SetBasisToR()
    transform = scene.AddNewNodeByClass("vtkMRMLTransformNode", "warp")
    transform.SetAndObserveTransformToParent(warp)
    t1_node, t2_node = add_volume(scene, t1, "T1"), add_volume(scene, t2, "T2")
    for node in (t1_node, t2_node):
        node.SetAndObserveTransformNodeID(transform.GetID())
    before = snapshot(t1_node)
    pulled = module.imageFromVolumeNode(t1_node, "T1")
    assert snapshot(t1_node) == before
    assert pulled.GetSize() != t1.GetSize() or not np.array_equal(
        sitk.GetArrayFromImage(pulled), sitk.GetArrayFromImage(t1))
    with pytest.raises(module.VolumeNodeError, match="non-linear"):
        module.CohfTSuperResLogic().prepare(t2_node, t1_node, scale=SCALE)


def test_non_linear_transform_moves_the_voxels_where_it_says(module, scene):
    """A thin-plate-spline warp that is in fact a shift of (2, -3, 3) mm RAS moves the T1's content by it."""
    voxels = np.zeros((6, 40, 40), dtype=np.float32)
    voxels[1:5, 10:30, 12:28] = 100.0
    voxels[2:4, 15:20, 14:18] = 40.0
    image = sitk.GetImageFromArray(voxels)
    image.SetSpacing((1.0, 1.0, 3.0))
    image.SetOrigin((5.0, -7.0, 11.0))
    shift_ras = np.array([2.0, -3.0, 3.0])
    warp = vtk.vtkThinPlateSplineTransform()
    source, target = vtk.vtkPoints(), vtk.vtkPoints()
    for point in ((0, 0, 0), (100, 0, 0), (0, 100, 0), (0, 0, 100), (60, 60, 60), (-50, 20, -30)):
        source.InsertNextPoint(*point)
        target.InsertNextPoint(*(np.array(point) + shift_ras))
    warp.SetSourceLandmarks(source)
    warp.SetTargetLandmarks(target)
    warp.SetBasisToR()
    transform = scene.AddNewNodeByClass("vtkMRMLTransformNode", "shift as a warp")
    transform.SetAndObserveTransformToParent(warp)
    node = add_volume(scene, image, "T1")
    node.SetAndObserveTransformNodeID(transform.GetID())
    pulled = module.imageFromVolumeNode(node, "T1")
    shift_lps = tuple(float(x) for x in shift_ras * (-1, -1, 1))
    back = sitk.Resample(pulled, image, sitk.TranslationTransform(3, shift_lps), sitk.sitkLinear, 0.0)
    np.testing.assert_allclose(sitk.GetArrayFromImage(back)[1:5, 3:-3, 3:-3], voxels[1:5, 3:-3, 3:-3], atol=0.5)
    assert np.abs(sitk.GetArrayFromImage(pulled) - voxels).max() > 50  # the content did move


# ---------- the Logic end to end ----------


def test_process_geometry_voxels_inputs_and_storage(module, scene, images, weights, tmp_path):
    t2, t1 = images
    t2_node = add_volume(scene, t2, "patient07_T2")
    t1_node = add_volume(scene, t1, "patient07_T1", transform_ras=T1_TRANSFORM_RAS)
    t2_node.GetDisplayNode().SetAutoWindowLevel(False)
    t2_node.GetDisplayNode().SetWindowLevel(321.0, 123.0)
    before = {name: snapshot(node) for name, node in (("t2", t2_node), ("t1", t1_node))}
    reports = []

    output = module.CohfTSuperResLogic().process(
        t2_node, t1_node, scale=SCALE, device="cpu", modelPath=str(weights),
        progressCallback=lambda done, total: reports.append((done, total)),
    )

    # name, class, grid convention: origin and direction kept, in-plane spacing / s and size x s, slices untouched
    assert output.GetName() == "patient07_T2_SRx2" and output.GetClassName() == "vtkMRMLScalarVolumeNode"
    assert output.GetImageData().GetDimensions() == (96, 96, len(SLICES))
    expected = _ijk_to_ras(t2)
    expected[:3, :2] /= SCALE
    np.testing.assert_allclose(_node_matrix(output), expected, atol=1e-9)
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
        np.testing.assert_allclose(_node_matrix(reread), expected, atol=1e-5)


def test_t2_under_transform_output_in_world_space_and_existing_output_reused(module, scene, images, weights):
    t2, t1 = images
    t2_node = add_volume(scene, t2, "T2", transform_ras=T1_TRANSFORM_RAS)
    t1_node = add_volume(scene, t1, "T1")
    existing = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "my output")
    logic = module.CohfTSuperResLogic()
    output = logic.process(t2_node, t1_node, existing, scale=SCALE, device="cpu", modelPath=str(weights))
    assert output is existing and output.GetName() == "my output"
    expected = _ijk_to_ras(t2)
    expected[:3, :2] /= SCALE
    np.testing.assert_allclose(_node_matrix(output), expected, atol=1e-6)
    assert output.GetParentTransformNode() is None


def test_background_run_polls_to_the_end_and_cancel_leaves_nothing(module, scene, images, weights):
    from CohfTSuperResLib.errors import InferenceCancelled

    t2, t1 = images
    t2_node, t1_node = add_volume(scene, t2, "T2"), add_volume(scene, t1, "T1")
    logic = module.CohfTSuperResLogic()
    run = logic.startProcessing(t2_node, t1_node, scale=SCALE, device="cpu", modelPath=str(weights), batchSize=1)
    while not run.poll():  # what the GUI's QTimer does
        run._ended.wait(0.05)
    assert run.error is None and run.outputNode.GetName() == "T2_SRx2"
    assert (run.done, run.total) == (len(SLICES), len(SLICES))

    volumes = scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
    run = logic.startProcessing(t2_node, t1_node, scale=SCALE, device="cpu", modelPath=str(weights), batchSize=1)
    run.cancel()
    assert run.wait(60)
    assert isinstance(run.error, InferenceCancelled) and run.outputNode is None
    with pytest.raises(InferenceCancelled):
        logic.process(t2_node, t1_node, scale=SCALE, device="cpu", modelPath=str(weights), cancelCallback=lambda: True)
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == volumes


# ---------- bad inputs: clear errors, inputs unchanged, no output ----------


def _bad_cases(scene, images, module):
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
    }


CASES = [
    "same node twice", "output is the T2", "output is the T1", "label map T2", "label map T1", "vector volume",
    "segmentation", "no voxels", "no overlap", "NaN voxels", "output under a transform", "T2 missing",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_raises_clear_error_and_changes_nothing(module, scene, images, case):
    (t2_node, t1_node, output), message = _bad_cases(scene, images, module)[case]
    volumes = [node for node in (t2_node, t1_node, output) if node is not None and node.IsA("vtkMRMLVolumeNode")]
    before = [snapshot(node) for node in volumes if node.GetImageData() is not None]
    count = scene.GetNumberOfNodes()
    with pytest.raises(ValueError, match=message):
        module.CohfTSuperResLogic().process(t2_node, t1_node, output, scale=SCALE, device="cpu")
    assert [snapshot(node) for node in volumes if node.GetImageData() is not None] == before
    assert scene.GetNumberOfNodes() == count


def test_input_problem_is_what_the_apply_button_shows(module, scene, images):
    t2, t1 = images
    t2_node, t1_node = add_volume(scene, t2, "T2"), add_volume(scene, t1, "T1")
    logic = module.CohfTSuperResLogic()
    assert logic.inputProblem(t2_node, t1_node) is None
    assert "guide T1" in logic.inputProblem(t2_node, None)
    assert logic.inputProblem(t2_node, None, requireT1=False) is None


def test_missing_packages_are_reported_not_installed(module, monkeypatch):
    """Dependency check only looks; installing happens in installPackages, which only the GUI calls after consent."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("torch", "onnxruntime") else real(name, *a))
    installs = []
    monkeypatch.setattr(slicer.util, "pip_install", lambda *a, **k: installs.append(a), raising=False)
    assert module.missingPackages("torch") == ["torch>=2.2"]
    assert module.missingPackages("onnx", "cuda") == ["torch>=2.2", "onnxruntime-gpu>=1.17"]
    assert module.missingPackages("onnx", "cpu")[-1] == "onnxruntime>=1.17"
    assert installs == []


def test_dependencies_installed_only_after_consent(module, monkeypatch, tmp_path):
    """Declining installs nothing; agreeing installs exactly what is missing, torch through pip when the
    PyTorch extension is absent, with Slicer's numpy and SimpleITK pinned by a constraints file."""
    import importlib.metadata
    import importlib.util

    real = importlib.util.find_spec
    installed = set()
    monkeypatch.setattr(
        importlib.util, "find_spec",
        lambda name, *a: None if name in ("torch", "onnxruntime") and name not in installed else real(name, *a),
    )
    monkeypatch.setitem(sys.modules, "PyTorchUtils", None)  # the PyTorch extension is not installed
    calls = []

    def pip_install(requirements):
        constraints = Path(requirements[requirements.index("-c") + 1])
        calls.append((requirements[: requirements.index("-c")], constraints.read_text().split()))
        installed.update(("torch", "onnxruntime"))

    monkeypatch.setattr(slicer.util, "pip_install", pip_install, raising=False)
    questions = []
    assert not module.ensureDependencies("onnx", "cpu", lambda text: questions.append(text) or False)
    assert calls == [] and "torch>=2.2" in questions[0] and "onnxruntime>=1.17" in questions[0]
    assert module.ensureDependencies("onnx", "cpu", lambda text: True)
    pins = [f"numpy=={importlib.metadata.version('numpy')}", f"SimpleITK=={importlib.metadata.version('SimpleITK')}"]
    assert calls == [(["torch>=2.2", "onnxruntime>=1.17"], pins)]
    assert not list(Path(module.tempfile.gettempdir()).glob("CohfTSuperRes-constraints-*"))  # removed afterwards
    assert module.ensureDependencies("onnx", "cpu", lambda text: pytest.fail("asked although nothing is missing"))


def test_torch_goes_through_the_pytorch_extension_when_present(module, monkeypatch):
    import types

    requested = []

    class PyTorchUtilsLogic:
        def installTorch(self, askConfirmation=False, forceComputationBackend=None, torchVersionRequirement=None):
            requested.append((askConfirmation, torchVersionRequirement))
            return types.SimpleNamespace(__version__="2.5")

    monkeypatch.setitem(sys.modules, "PyTorchUtils", types.SimpleNamespace(PyTorchUtilsLogic=PyTorchUtilsLogic))
    pip = []
    monkeypatch.setattr(slicer.util, "pip_install", lambda requirements: pip.append(requirements), raising=False)
    module.installPackages(["torch>=2.2"])
    assert requested == [(False, ">=2.2")] and pip == []  # the user was already asked by ensureDependencies
    module.installPackages(["torch>=2.2", "safetensors>=0.4"])
    assert [r[: r.index("-c")] for r in pip] == [["safetensors>=0.4"]]


def test_self_test_runs_on_the_synthetic_pair(module, scene, weights):
    """The in-Slicer self-test with random weights (without its 'beats bicubic' check: that needs trained weights)."""

    class RandomWeightsTest(module.CohfTSuperResTest):
        modelPath = str(weights)
        requireBetterThanBicubic = False

    test = RandomWeightsTest()
    test.runTest()
    assert slicer.util.getFirstNodeByName("synthetic_T2_SRx2") is not None
