"""Shared fixtures of the Slicer module's tests (test_slicer_*.py), on real MRML from the PyPI package slicer-core.

slicer-core has MRML, the volume / transform / storage node classes and slicer.util, but no Qt, no
slicer.app, no ScriptedLoadableModule and no parameterNodeWrapper: the last two come from the test-only
stand-in in Testing/slicer_standin/ (see its README). Import the fixtures a test module uses by name.
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
MODULE_DIR = ROOT / "CohfTSuperRes"
STANDIN = Path(__file__).resolve().parent / "slicer_standin" / "slicer"
SCALE = 2
SLICES = (80, 83, 86, 89)  # 1 mm MNI slices of mni/patient07, 3 mm apart
CROP = (slice(61, 157), slice(43, 139))  # 96 x 96 voxels around the brain's centre
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def import_module():
    """CohfTSuperRes.py imported on slicer-core, with the stand-in base classes on slicer's package path."""
    if str(STANDIN) not in slicer.__path__:
        slicer.__path__.append(str(STANDIN))
    sys.path.insert(0, str(MODULE_DIR))
    try:
        import CohfTSuperRes
    finally:
        sys.path.remove(str(MODULE_DIR))
    return CohfTSuperRes


@pytest.fixture(scope="module")
def module():
    return import_module()


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
    from CohfTSuperResLib.weights.storage import save_weights

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "random_S_x2.safetensors"
    save_weights(build_model("S", SCALE), path)
    return path


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    """A fast random-weight Cohf-T x2 with T1 (every block type, few channels)."""
    from inference_helpers import save_tiny

    return save_tiny(tmp_path_factory.mktemp("tiny"), SCALE)


def rotation(axis, degrees) -> np.ndarray:
    axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    angle = np.deg2rad(degrees)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


DIRECTION_LPS = rotation((1.0, 0.3, 0.2), 17.0)  # oblique acquisition
ORIGIN_LPS = (12.5, -30.25, 41.0)
T1_TRANSFORM_RAS = np.eye(4)  # parent transform of the T1 node (world <- local)
T1_TRANSFORM_RAS[:3, :3] = rotation((0.2, -1.0, 0.4), 23.0)
T1_TRANSFORM_RAS[:3, 3] = (4.0, -7.5, 11.0)


@pytest.fixture(scope="module")
def images(open_ms):
    """Truth in world space as SimpleITK (LPS): LR T2 (int16, 1 x 1 x 3 mm) and HR T1 (float32, 0.5 x 0.5 x 3 mm)
    from real slices of mni/patient07 on an oblique grid; the T2 degraded in-plane by 2 in k-space."""
    from CohfTSuperResLib.data.degradations import degrade

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


def ijk_to_ras(image: sitk.Image) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
    matrix[:3, 3] = image.GetOrigin()
    return LPS_FROM_RAS @ matrix


def vtk_matrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for row in range(4):
        for column in range(4):
            matrix.SetElement(row, column, array[row, column])
    return matrix


def numpy_matrix(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def node_matrix(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return numpy_matrix(matrix)


def add_volume(scene, image: sitk.Image, name: str, transform_ras: np.ndarray | None = None,
               cls="vtkMRMLScalarVolumeNode"):
    """A volume node of `image` (written here, independently of the module's helper) that lies, in world
    space, where `image` lies; under a new linear transform node when transform_ras is given."""
    node = scene.AddNewNodeByClass(cls, name)
    slicer.util.updateVolumeFromArray(node, sitk.GetArrayFromImage(image))
    ijk_to_world = ijk_to_ras(image)
    if transform_ras is None:
        node.SetIJKToRASMatrix(vtk_matrix(ijk_to_world))
    else:
        transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", f"{name}_transform")
        transform.SetMatrixTransformToParent(vtk_matrix(transform_ras))
        node.SetIJKToRASMatrix(vtk_matrix(np.linalg.inv(transform_ras) @ ijk_to_world))
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
        "ijk_to_ras": node_matrix(node).tobytes(),
        "transform": None if transform is None else (transform.GetID(), numpy_matrix(matrix).tobytes()),
        "mtime": (node.GetMTime(), node.GetImageData().GetMTime()),
        "name": node.GetName(),
    }


def temporary_folders() -> set[Path]:
    """The child runs' temporary folders that exist now."""
    import tempfile

    return {path for path in Path(tempfile.gettempdir()).glob("CohfTSuperRes-*") if path.is_dir()}
