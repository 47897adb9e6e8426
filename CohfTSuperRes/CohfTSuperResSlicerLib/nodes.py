"""Volume nodes <-> SimpleITK images in world coordinates, and why a node can not be used.

Conversion goes through numpy and the IJK-to-RAS matrix (RAS in MRML, LPS in SimpleITK), so it
behaves the same in Slicer and on slicer-core. The input nodes are never modified.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import vtk

import slicer
from CohfTSuperResLib.errors import InputError

from .text import _

# MRML node classes that derive from vtkMRMLScalarVolumeNode but are not grey-level volumes
NOT_GREY_LEVEL = {
    "vtkMRMLLabelMapVolumeNode": _("a label map"),
    "vtkMRMLVectorVolumeNode": _("a vector (e.g. RGB) volume"),
    "vtkMRMLDiffusionWeightedVolumeNode": _("a diffusion-weighted (4-D) volume"),
    "vtkMRMLDiffusionTensorVolumeNode": _("a diffusion tensor volume"),
    "vtkMRMLTensorVolumeNode": _("a tensor volume"),
    "vtkMRMLMultiVolumeNode": _("a multi-volume (4-D) node"),
}
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])  # its own inverse


class VolumeNodeError(InputError):
    """A node that cannot be used as given; the message names the node, the problem and what to do."""


def nodeName(node) -> str:
    """The node's name in quotes, for messages."""
    return f"'{node.GetName()}'"


def isGreyLevelVolumeNode(node) -> bool:
    """True for a scalar volume node that is not a label map, vector, tensor or 4-D volume."""
    return node.IsA("vtkMRMLScalarVolumeNode") and not any(node.IsA(name) for name in NOT_GREY_LEVEL)


def volumeNodeProblem(node, role: str) -> str | None:
    """Why `node` cannot be used as the `role` volume (a sentence without final stop), or None when it can."""
    if node is None:
        return _("select the {role} volume").format(role=role)
    name = nodeName(node)
    if not node.IsA("vtkMRMLScalarVolumeNode"):
        kind = node.GetClassName().removeprefix("vtkMRML").removesuffix("Node")
        return _("{role} {name} is a {kind}, not a grey-level volume").format(role=role, name=name, kind=kind)
    for className, kind in NOT_GREY_LEVEL.items():
        if node.IsA(className):
            return _("{role} {name} is {kind}; choose a grey-level (scalar) volume").format(role=role, name=name,
                                                                                        kind=kind)
    image = node.GetImageData()
    if image is None or image.GetPointData() is None or image.GetPointData().GetScalars() is None:
        return _("{role} {name} holds no voxels").format(role=role, name=name)
    if image.GetNumberOfScalarComponents() != 1:
        return _("{role} {name} has {count} components per voxel; convert it to a grey-level volume first").format(
            role=role, name=name, count=image.GetNumberOfScalarComponents())
    if 0 in image.GetDimensions():
        return _("{role} {name} is empty").format(role=role, name=name)
    return None


def vtkToNumpy(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    """4x4 numpy copy of a vtkMatrix4x4."""
    return np.array([[matrix.GetElement(row, column) for column in range(4)] for row in range(4)])


def numpyToVtk(array: np.ndarray) -> vtk.vtkMatrix4x4:
    """vtkMatrix4x4 of a 4x4 array."""
    matrix = vtk.vtkMatrix4x4()
    for row in range(4):
        for column in range(4):
            matrix.SetElement(row, column, float(array[row, column]))
    return matrix


def _isGridMatrix(ijkToRas: np.ndarray) -> bool:
    """True when the 3x3 part is a rotation/reflection times positive spacings (orthogonal columns)."""
    columns = ijkToRas[:3, :3]
    spacing = np.linalg.norm(columns, axis=0)
    if np.any(spacing <= 0):
        return False
    direction = columns / spacing
    return bool(np.abs(direction.T @ direction - np.eye(3)).max() < 1e-5)


def ijkToWorldMatrix(node) -> np.ndarray | None:
    """IJK-to-world (RAS) 4x4 of a volume node with its parent transforms applied.

    None when the parent transform is not linear, or is linear but shears the voxel grid:
    then the volume can only be brought to world space by resampling.
    """
    ijkToRas = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(ijkToRas)
    matrix = vtkToNumpy(ijkToRas)
    transformNode = node.GetParentTransformNode()
    if transformNode is not None:
        if not transformNode.IsTransformToWorldLinear():
            return None
        toWorld = vtk.vtkMatrix4x4()
        transformNode.GetMatrixTransformToWorld(toWorld)
        matrix = vtkToNumpy(toWorld) @ matrix
    return matrix if _isGridMatrix(matrix) else None


def _imageFromArray(voxels: np.ndarray, ijkToRas: np.ndarray) -> sitk.Image:
    """SimpleITK image (LPS) of (k, j, i) voxels on the grid of an IJK-to-RAS matrix."""
    ijkToLps = LPS_FROM_RAS @ ijkToRas
    spacing = np.linalg.norm(ijkToLps[:3, :3], axis=0)
    image = sitk.GetImageFromArray(voxels)
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(x) for x in ijkToLps[:3, 3]])
    image.SetDirection([float(x) for x in (ijkToLps[:3, :3] / spacing).ravel()])
    return image


def voxelCopy(imageData) -> np.ndarray:
    """A numpy copy, in (k, j, i) order, of the scalars of a vtkImageData."""
    from vtk.util import numpy_support

    dimensions = imageData.GetDimensions()
    view = numpy_support.vtk_to_numpy(imageData.GetPointData().GetScalars())
    return np.array(view, copy=True).reshape(tuple(reversed(dimensions)))


def imageFromVolumeNode(node, role: str = "input", resampleNonLinear: bool = True) -> sitk.Image:
    """A SimpleITK copy of a scalar volume node in world coordinates (LPS), the node left untouched.

    Linear parent transforms are folded into the geometry (no resampling). A non-linear (or
    shearing) parent transform is applied by resampling a copy when resampleNonLinear is True,
    else it is refused with a VolumeNodeError.
    """
    problem = volumeNodeProblem(node, role)
    if problem:
        raise VolumeNodeError(problem[0].upper() + problem[1:] + ".")
    matrix = ijkToWorldMatrix(node)
    if matrix is not None:
        return _imageFromArray(voxelCopy(node.GetImageData()), matrix)
    transformNode = node.GetParentTransformNode()
    if not resampleNonLinear:
        raise VolumeNodeError(_(
            "{role} {name} is under the non-linear (or shearing) transform '{transform}'. Resampling it would blur "
            "the acquired slices before super-resolution: harden the transform on a copy in the Transforms module, "
            "or use a rigid transform."
        ).format(role=role[0].upper() + role[1:], name=nodeName(node), transform=transformNode.GetName()))
    toWorld = vtk.vtkGeneralTransform()
    transformNode.GetTransformToWorld(toWorld)
    # Resample a copy in a private scene (the input node and the user's scene stay as they are), under a transform
    # node holding the same warp: Slicer sizes the resampled grid from the bounds of the volume under its parent
    # transform, so a copy without one would keep the original grid and cut off what the warp moves beyond it.
    private = slicer.vtkMRMLScene()
    warp = private.AddNewNodeByClass("vtkMRMLTransformNode")
    warp.SetAndObserveTransformToParent(toWorld)
    copy = private.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    imageData = vtk.vtkImageData()
    imageData.DeepCopy(node.GetImageData())
    copy.SetAndObserveImageData(imageData)
    ijkToRas = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(ijkToRas)
    copy.SetIJKToRASMatrix(ijkToRas)
    copy.SetAndObserveTransformNodeID(warp.GetID())
    copy.ApplyNonLinearTransform(toWorld)
    resampledIjkToWorld = vtk.vtkMatrix4x4()
    copy.GetIJKToRASMatrix(resampledIjkToWorld)
    return _imageFromArray(voxelCopy(copy.GetImageData()), vtkToNumpy(resampledIjkToWorld))


def updateVolumeNodeFromImage(node, image: sitk.Image) -> None:
    """Replace the voxels and geometry of a volume node by those of a 3-D SimpleITK image (LPS)."""
    voxels = sitk.GetArrayFromImage(image)
    ijkToLps = np.eye(4)
    ijkToLps[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
    ijkToLps[:3, 3] = image.GetOrigin()
    wasModifying = node.StartModify()
    try:
        slicer.util.updateVolumeFromArray(node, voxels)
        node.SetIJKToRASMatrix(numpyToVtk(LPS_FROM_RAS @ ijkToLps))
    finally:
        node.EndModify(wasModifying)


def addVolumeNode(scene, image: sitk.Image, name: str):
    """A new scalar volume node in `scene` holding `image` (LPS), with default display nodes."""
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", scene.GenerateUniqueName(name))
    updateVolumeNodeFromImage(node, image)
    node.CreateDefaultDisplayNodes()
    return node


def placeInStudyOf(node, reference) -> None:
    """Put `node` in the subject hierarchy folder that holds `reference` (its study, or the scene's top level);
    its item is created there where it has none yet (Slicer's subject hierarchy logic makes one for every new node,
    MRML alone does not)."""
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(node.GetScene())
    referenceItem = hierarchy.GetItemByDataNode(reference) if hierarchy is not None else 0
    if not referenceItem:
        return
    parent, item = hierarchy.GetItemParent(referenceItem), hierarchy.GetItemByDataNode(node)
    if item:
        hierarchy.SetItemParent(item, parent)
    else:
        hierarchy.CreateItem(parent, node)


def addRigidTransform(scene, transform: sitk.Transform, name: str):
    """A linear transform node holding a rigid SimpleITK transform that maps T2 points to T1 points (LPS): its
    transform to parent is the inverse, in RAS, so that applied to the T1 node it moves the T1 onto the T2."""
    inverse = transform.GetInverse()
    lps = np.eye(4)
    origin = np.asarray(inverse.TransformPoint((0.0, 0.0, 0.0)))
    for axis in range(3):
        unit = [0.0, 0.0, 0.0]
        unit[axis] = 1.0
        lps[:3, axis] = np.asarray(inverse.TransformPoint(tuple(unit))) - origin
    lps[:3, 3] = origin
    node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", name)
    node.SetMatrixTransformToParent(numpyToVtk(LPS_FROM_RAS @ lps @ LPS_FROM_RAS))
    return node
