"""CohfTSuperRes: 3D Slicer module that super-resolves an LR MR T2 volume guided by a registered HR T1.

All computation happens in the CohfTSuperResLib library (installed beside this
file); this module only moves volumes between MRML and SimpleITK and offers a
GUI. The parts are:

- CohfTSuperRes: module description;
- CohfTSuperResParameterNode: the GUI state, saved with the scene;
- CohfTSuperResWidget: the GUI (Qt and CTK are imported only inside it);
- CohfTSuperResLogic: everything scripts need, free of Qt and of the parameter node;
- CohfTSuperResBackgroundRun: one run in a worker thread, polled from the GUI;
- CohfTSuperResTest: a self-test on a synthetic T1/T2 pair made in code.

Node <-> image conversion (`imageFromVolumeNode`, `updateVolumeNodeFromImage`)
is done here with numpy and the IJK-to-RAS matrix (RAS in MRML, LPS in
SimpleITK), so it behaves the same in Slicer and in slicer-core tests.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

import numpy as np
import SimpleITK as sitk
import vtk

import slicer
from slicer import vtkMRMLScalarVolumeNode
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

try:
    from slicer.i18n import tr as _
except ImportError:  # slicer-core has no translation support

    def _(text):
        return text


SCALES = (2, 3, 4)
VARIANTS = ("S", "M", "L")
DEVICES = ("auto", "cpu", "cuda")
BACKENDS = ("torch", "onnx")
MINIMUM_TORCH = ">=2.2"
# In Slicer the main thread holds Python's GIL while Qt waits for events, so a Python worker
# thread only runs while the main thread sleeps in Python. The GUI's timer therefore fires
# every POLL_INTERVAL_MS and hands the GIL to the worker for WORKER_SLICE_S each time:
# the GUI still handles its events at least every ~50 ms and the worker gets most of the time.
POLL_INTERVAL_MS = 10
WORKER_SLICE_S = 0.04

# MRML node classes that derive from vtkMRMLScalarVolumeNode but are not grey-level volumes
NOT_GREY_LEVEL = {
    "vtkMRMLLabelMapVolumeNode": "a label map",
    "vtkMRMLVectorVolumeNode": "a vector (e.g. RGB) volume",
    "vtkMRMLDiffusionWeightedVolumeNode": "a diffusion-weighted (4-D) volume",
    "vtkMRMLDiffusionTensorVolumeNode": "a diffusion tensor volume",
    "vtkMRMLTensorVolumeNode": "a tensor volume",
    "vtkMRMLMultiVolumeNode": "a multi-volume (4-D) node",
}
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])  # its own inverse


def _ensureLibraryImportable() -> None:
    """Put the folder holding CohfTSuperResLib on sys.path when it is not importable yet.

    Installed extension: the library sits beside this file (qt-scripted-modules/),
    which Slicer already has on sys.path. Source tree: it sits one folder up.
    """
    if importlib.util.find_spec("CohfTSuperResLib") is not None:
        return
    here = os.path.dirname(os.path.abspath(__file__))
    for folder in (here, os.path.dirname(here)):
        if os.path.isfile(os.path.join(folder, "CohfTSuperResLib", "__init__.py")):
            sys.path.append(folder)
            return


_ensureLibraryImportable()


#
# CohfTSuperRes
#


class CohfTSuperRes(ScriptedLoadableModule):
    """Module description shown in Slicer's module list and help panel."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Cohf-T Super-Resolution")
        self.parent.categories = ["Filtering"]
        self.parent.dependencies = []
        self.parent.contributors = ["CohfTSuperRes developers"]
        self.parent.helpText = _(
            """
Super-resolves a low-resolution MR T2 volume in-plane (x2, x3 or x4), guided by a
high-resolution T1 of the same patient that is already registered to it, with the
Cohf-T network (cross-modality high-frequency transformer). Each slice of the T2 is
processed with the T1 resampled onto the output grid; the slice axis is kept.
<br><br>
The output keeps the T2's origin and orientation; its in-plane spacing is the T2's
divided by the scale. Parent transforms of the inputs are taken into account; the
inputs are never modified. The result is a new volume named &lt;T2&gt;_SRx&lt;scale&gt;
unless an output volume is chosen.
<br><br>
The network weights, their training data and limits are described in the model card
(Resources/Models/MODEL_CARD.md, installed with the extension; the checksums are in
models.json beside it). Usage and scripting: docs/slicer.md of the extension's repository. The result is an
estimate made by a neural network: it is not a measurement and must not replace the
acquired images for diagnosis.
<br><br>
Reference: C. Fang et al., "Cross-Modality High-Frequency Transformer for MR Image
Super-Resolution", ACM Multimedia 2022 (arXiv:2203.15314).
"""
        )
        self.parent.acknowledgementText = _(
            """
Network implemented from the paper's text for this extension. Runs on PyTorch (installed
through the PyTorch extension) or ONNX Runtime.
"""
        )


#
# CohfTSuperResParameterNode
#


@parameterNodeWrapper
class CohfTSuperResParameterNode:
    """GUI state saved with the scene.

    inputT2: the LR T2 volume. guideT1: the registered HR T1. outputVolume: where the
    result goes (None: a new volume). scale, variant, device, backend: as in
    CohfTSuperResLogic.process.
    """

    inputT2: vtkMRMLScalarVolumeNode
    guideT1: vtkMRMLScalarVolumeNode
    outputVolume: vtkMRMLScalarVolumeNode
    scale: Annotated[int, Choice(list(SCALES))] = 2
    variant: Annotated[str, Choice(list(VARIANTS))] = "S"
    device: Annotated[str, Choice(list(DEVICES))] = "auto"
    backend: Annotated[str, Choice(list(BACKENDS))] = "torch"


#
# Volume nodes <-> SimpleITK images
#


class VolumeNodeError(ValueError):
    """A node that cannot be used as given; the message names the node, the problem and what to do."""


def _nodeName(node) -> str:
    return f"'{node.GetName()}'"


def volumeNodeProblem(node, role: str) -> str | None:
    """Why `node` cannot be used as the `role` volume (a sentence), or None when it can."""
    if node is None:
        return _("select the {role} volume").format(role=role)
    if not node.IsA("vtkMRMLScalarVolumeNode"):
        return _("{role} {name} is a {kind}, not a grey-level volume").format(
            role=role, name=_nodeName(node), kind=node.GetClassName().removeprefix("vtkMRML").removesuffix("Node")
        )
    for className, kind in NOT_GREY_LEVEL.items():
        if node.IsA(className):
            return _("{role} {name} is {kind}; choose a grey-level (scalar) volume").format(
                role=role, name=_nodeName(node), kind=kind
            )
    image = node.GetImageData()
    if image is None or image.GetPointData() is None or image.GetPointData().GetScalars() is None:
        return _("{role} {name} holds no voxels").format(role=role, name=_nodeName(node))
    if image.GetNumberOfScalarComponents() != 1:
        return _("{role} {name} has {n} components per voxel; convert it to a grey-level volume first").format(
            role=role, name=_nodeName(node), n=image.GetNumberOfScalarComponents()
        )
    if 0 in image.GetDimensions():
        return _("{role} {name} is empty").format(role=role, name=_nodeName(node))
    return None


def _vtkToNumpy(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(row, column) for column in range(4)] for row in range(4)])


def _numpyToVtk(array: np.ndarray) -> vtk.vtkMatrix4x4:
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

    None when the parent transform is not linear, or is linear but shears the
    voxel grid: then the volume can only be brought to world space by resampling.
    """
    ijkToRas = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(ijkToRas)
    matrix = _vtkToNumpy(ijkToRas)
    transformNode = node.GetParentTransformNode()
    if transformNode is not None:
        if not transformNode.IsTransformToWorldLinear():
            return None
        toWorld = vtk.vtkMatrix4x4()
        transformNode.GetMatrixTransformToWorld(toWorld)
        matrix = _vtkToNumpy(toWorld) @ matrix
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


def _voxelCopy(imageData) -> np.ndarray:
    """A numpy copy, in (k, j, i) order, of the scalars of a vtkImageData."""
    from vtk.util import numpy_support

    dimensions = imageData.GetDimensions()
    view = numpy_support.vtk_to_numpy(imageData.GetPointData().GetScalars())
    return np.array(view, copy=True).reshape(tuple(reversed(dimensions)))


def imageFromVolumeNode(node, role: str = "input", resampleNonLinear: bool = True) -> sitk.Image:
    """A SimpleITK copy of a scalar volume node in world coordinates (LPS), the node left untouched.

    Linear parent transforms are folded into the geometry (no resampling). A
    non-linear (or shearing) parent transform is applied by resampling a copy when
    resampleNonLinear is True, else it is refused with a VolumeNodeError.
    """
    problem = volumeNodeProblem(node, role)
    if problem:
        raise VolumeNodeError(problem[0].upper() + problem[1:] + ".")
    matrix = ijkToWorldMatrix(node)
    if matrix is not None:
        return _imageFromArray(_voxelCopy(node.GetImageData()), matrix)
    transformNode = node.GetParentTransformNode()
    if not resampleNonLinear:
        raise VolumeNodeError(
            _(
                "{role} {name} is under the non-linear (or shearing) transform '{transform}'. "
                "Resampling it would blur the acquired slices before super-resolution: harden the "
                "transform on a copy in the Transforms module, or use a rigid transform."
            ).format(role=role, name=_nodeName(node), transform=transformNode.GetName())
        )
    toWorld = vtk.vtkGeneralTransform()
    transformNode.GetTransformToWorld(toWorld)
    # resample a stand-alone copy (never added to the scene), so the input node stays as it is
    copy = slicer.vtkMRMLScalarVolumeNode()
    imageData = vtk.vtkImageData()
    imageData.DeepCopy(node.GetImageData())
    copy.SetAndObserveImageData(imageData)
    ijkToRas = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(ijkToRas)
    copy.SetIJKToRASMatrix(ijkToRas)
    copy.ApplyNonLinearTransform(toWorld)
    resampledIjkToWorld = vtk.vtkMatrix4x4()
    copy.GetIJKToRASMatrix(resampledIjkToWorld)
    return _imageFromArray(_voxelCopy(copy.GetImageData()), _vtkToNumpy(resampledIjkToWorld))


def updateVolumeNodeFromImage(node, image: sitk.Image) -> None:
    """Replace the voxels and geometry of a volume node by those of a 3-D SimpleITK image (LPS)."""
    voxels = sitk.GetArrayFromImage(image)
    ijkToLps = np.eye(4)
    ijkToLps[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
    ijkToLps[:3, 3] = image.GetOrigin()
    wasModifying = node.StartModify()
    try:
        slicer.util.updateVolumeFromArray(node, voxels)
        node.SetIJKToRASMatrix(_numpyToVtk(LPS_FROM_RAS @ ijkToLps))
    finally:
        node.EndModify(wasModifying)


#
# Dependencies (checked without importing them)
#


def missingPackages(backend: str = "torch", device: str = "auto") -> list[str]:
    """pip requirements of the packages the chosen backend needs that are not installed.

    torch and safetensors are always needed (weights are read with safetensors and the
    ONNX export path uses torch too); onnxruntime (-gpu for CUDA) only for the ONNX backend.
    """
    missing = []
    if importlib.util.find_spec("torch") is None:
        missing.append(f"torch{MINIMUM_TORCH}")
    if importlib.util.find_spec("safetensors") is None:
        missing.append("safetensors>=0.4")
    if backend == "onnx" and importlib.util.find_spec("onnxruntime") is None:
        missing.append("onnxruntime-gpu>=1.17" if device == "cuda" else "onnxruntime>=1.17")
    return missing


def _protectingConstraints() -> str:
    """Path of a pip constraints file pinning the numpy and SimpleITK that Slicer ships, so no install changes them."""
    import importlib.metadata

    lines = []
    for package in ("numpy", "SimpleITK"):
        try:
            lines.append(f"{package}=={importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    handle, path = tempfile.mkstemp(prefix="CohfTSuperRes-constraints-", suffix=".txt")
    with os.fdopen(handle, "w") as file:
        file.write("\n".join(lines) + "\n")
    return path


def ensureDependencies(backend: str, device: str, confirm: Callable[[str], bool]) -> bool:
    """True when the packages the backend needs are importable.

    Missing packages are installed only when confirm(message) returns True (the GUI passes a
    confirmation dialog); otherwise nothing is installed and False is returned.
    """
    missing = missingPackages(backend, device)
    if not missing:
        return True
    message = _(
        "Cohf-T super-resolution needs these Python packages, which are not installed:\n\n{packages}\n\n"
        "Install them now? PyTorch is installed through the PyTorch extension and may take several "
        "minutes; Slicer's own numpy and SimpleITK are left as they are."
    ).format(packages="\n".join(missing))
    if not confirm(message):
        logging.info("CohfTSuperRes: installation of %s declined", ", ".join(missing))
        return False
    installPackages(missing)
    return not missingPackages(backend, device)


def installPackages(requirements: list[str]) -> None:
    """Install the requirements; call only after the user agreed (see ensureDependencies).

    torch goes through the PyTorch extension's PyTorchUtils when it is there (it picks
    the build matching the GPU driver); everything else through pip, with numpy and
    SimpleITK pinned to the versions Slicer ships.
    """
    others = [requirement for requirement in requirements if not requirement.startswith("torch")]
    if len(others) < len(requirements):
        try:
            import PyTorchUtils
        except ImportError:
            PyTorchUtils = None
        if PyTorchUtils is not None:
            torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
                askConfirmation=False, torchVersionRequirement=MINIMUM_TORCH  # the user agreed already
            )
            if torch is None:
                raise RuntimeError(_("PyTorch was not installed."))
        else:
            others.insert(0, f"torch{MINIMUM_TORCH}")
    if others:
        constraints = _protectingConstraints()
        try:
            slicer.util.pip_install([*others, "-c", constraints])
        finally:
            os.remove(constraints)
    importlib.invalidate_caches()  # so that missingPackages() sees what was just installed


#
# CohfTSuperResLogic
#


@dataclass
class CohfTSuperResJob:
    """Everything one run needs, taken from the scene on the main thread (images are copies)."""

    t2: sitk.Image
    t1: sitk.Image | None
    options: dict
    t2NodeID: str
    outputNodeID: str | None
    outputName: str
    scene: object
    warnings: list[str] = field(default_factory=list)


class CohfTSuperResLogic(ScriptedLoadableModuleLogic):
    """Super-resolution of volume nodes; usable from the Python console and `Slicer --python-script`.

    Nothing here imports Qt or uses the parameter node, so scripts and tests use it
    directly. process() runs synchronously; startProcessing() runs in a worker thread.
    Errors: VolumeNodeError (a ValueError) for unusable nodes; the library's InputError
    (a ValueError), WeightsError (a ValueError) and InferenceCancelled propagate as raised.
    """

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)

    # ---- checks (no torch needed) ----

    def inputProblem(self, t2Node, t1Node, outputNode=None, requireT1: bool = True) -> str | None:
        """Why these nodes cannot be processed (one sentence naming what to change), or None."""
        problem = volumeNodeProblem(t2Node, _("input T2"))
        if problem is None and (t1Node is not None or requireT1):
            problem = volumeNodeProblem(t1Node, _("guide T1"))
        if problem:
            return problem[0].upper() + problem[1:] + "."
        if t1Node is not None and t1Node is t2Node:
            return _("The same volume {name} is selected as T2 and as T1; select the registered T1 as guide.").format(
                name=_nodeName(t2Node)
            )
        if outputNode is not None:
            if outputNode is t2Node or outputNode is t1Node:
                return _("The output volume {name} is an input; choose 'Create new volume' or another volume.").format(
                    name=_nodeName(outputNode)
                )
            if not outputNode.IsA("vtkMRMLScalarVolumeNode") or any(outputNode.IsA(c) for c in NOT_GREY_LEVEL):
                return _("The output {name} is not a grey-level volume node; choose 'Create new volume'.").format(
                    name=_nodeName(outputNode)
                )
            if outputNode.GetParentTransformNode() is not None:
                return _(
                    "The output volume {name} is under transform '{transform}'; the result is computed in world "
                    "coordinates, so choose 'Create new volume' or remove that transform."
                ).format(name=_nodeName(outputNode), transform=outputNode.GetParentTransformNode().GetName())
        return None

    def checkInputs(self, t2Node, t1Node, outputNode=None, requireT1: bool = True) -> None:
        """VolumeNodeError with the reason when the nodes cannot be processed."""
        problem = self.inputProblem(t2Node, t1Node, outputNode, requireT1)
        if problem:
            raise VolumeNodeError(problem)

    # ---- the three steps of a run ----

    def prepare(
        self,
        t2Node,
        t1Node,
        outputNode=None,
        scale: int = 2,
        variant: str = "S",
        device: str = "auto",
        backend: str = "torch",
        modelPath: str | None = None,
        precision: str = "fp32",
        batchSize: int | None = None,
        sliceAxis: int = 2,
    ) -> CohfTSuperResJob:
        """Check the nodes and copy them into SimpleITK images in world space (main thread; inputs untouched).

        t1Node may be None only for a model trained without T1.
        """
        self.checkInputs(t2Node, t1Node, outputNode, requireT1=False)
        t2 = imageFromVolumeNode(t2Node, _("input T2"), resampleNonLinear=False)
        t1 = None if t1Node is None else imageFromVolumeNode(t1Node, _("guide T1"), resampleNonLinear=True)
        job = CohfTSuperResJob(
            t2=t2,
            t1=t1,
            options=dict(
                scale=scale, variant=variant, model_path=modelPath, device=device, backend=backend,
                precision=precision, batch_size=batchSize, slice_axis=sliceAxis,
            ),
            t2NodeID=t2Node.GetID(),
            outputNodeID=None if outputNode is None else outputNode.GetID(),
            outputName=f"{t2Node.GetName()}_SRx{scale}",
            scene=t2Node.GetScene(),
        )
        if t1 is not None:  # checked here too, so that the GUI refuses before starting and can show the warning
            from CohfTSuperResLib.geometry import Grid, check_coverage
            from CohfTSuperResLib.inference import COVERAGE_WARNING

            fraction = check_coverage(t1, Grid.of(t2))  # InputError when they do not overlap at all
            if fraction < COVERAGE_WARNING:
                job.warnings.append(
                    _("The guide T1 covers only {percent:.1f}% of the T2; the rest is super-resolved without guidance.")
                    .format(percent=100 * fraction)
                )
                logging.warning(job.warnings[-1])
        return job

    @staticmethod
    def run(job: CohfTSuperResJob, progressCallback=None, cancelCallback=None) -> sitk.Image:
        """The library's super-resolution of a prepared job; touches no MRML node (safe in a worker thread)."""
        from CohfTSuperResLib.inference import super_resolve

        return super_resolve(job.t2, job.t1, progress=progressCallback, cancel=cancelCallback, **job.options)

    def finish(self, job: CohfTSuperResJob, image: sitk.Image, showResult: bool = False):
        """Put the result into the output node (created if none was given) and return it (main thread)."""
        scene = job.scene
        t2Node = scene.GetNodeByID(job.t2NodeID)
        outputNode = scene.GetNodeByID(job.outputNodeID) if job.outputNodeID else None
        if outputNode is None:
            outputNode = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", scene.GenerateUniqueName(job.outputName))
        updateVolumeNodeFromImage(outputNode, image)
        if outputNode.GetDisplayNode() is None:
            outputNode.CreateDefaultDisplayNodes()
        inputDisplay = t2Node.GetDisplayNode() if t2Node is not None else None
        outputDisplay = outputNode.GetDisplayNode()
        if outputDisplay is not None and inputDisplay is not None and inputDisplay.IsA(
            "vtkMRMLScalarVolumeDisplayNode"
        ):
            outputDisplay.SetAutoWindowLevel(False)
            outputDisplay.SetWindowLevel(inputDisplay.GetWindow(), inputDisplay.GetLevel())
        if showResult:
            slicer.util.setSliceViewerLayers(background=outputNode, foreground=t2Node, foregroundOpacity=0.0, fit=True)
        return outputNode

    # ---- entry points ----

    def process(
        self,
        t2Node,
        t1Node,
        outputNode=None,
        scale: int = 2,
        variant: str = "S",
        device: str = "auto",
        backend: str = "torch",
        modelPath: str | None = None,
        precision: str = "fp32",
        batchSize: int | None = None,
        sliceAxis: int = 2,
        progressCallback: Callable[[int, int], None] | None = None,
        cancelCallback: Callable[[], bool] | None = None,
        showResult: bool = False,
    ):
        """Super-resolve the T2 node guided by the T1 node; return the output volume node.

        outputNode None: a new volume '<T2 name>_SRx<scale>'. modelPath None: the shipped
        model for (variant, scale). progressCallback(done, total) reports slices;
        cancelCallback() returning True stops the run (InferenceCancelled, nothing written).
        """
        start = time.time()
        job = self.prepare(
            t2Node, t1Node, outputNode, scale, variant, device, backend, modelPath, precision, batchSize, sliceAxis
        )
        image = self.run(job, progressCallback, cancelCallback)
        result = self.finish(job, image, showResult)
        logging.info(f"CohfTSuperRes: {result.GetName()} computed in {time.time() - start:.1f} s")
        return result

    def startProcessing(
        self, t2Node, t1Node, outputNode=None, showResult: bool = False, **options
    ) -> CohfTSuperResBackgroundRun:
        """Prepare on this thread (options as in process), run in a worker thread; poll() the returned run."""
        return CohfTSuperResBackgroundRun(self, self.prepare(t2Node, t1Node, outputNode, **options), showResult)


class CohfTSuperResBackgroundRun:
    """One run in a worker thread. The GUI calls poll() from a QTimer; MRML is only touched in poll()."""

    def __init__(self, logic: CohfTSuperResLogic, job: CohfTSuperResJob, showResult: bool = False):
        self.logic, self.job, self.showResult = logic, job, showResult
        self.done, self.total = 0, 0
        self.startTime = time.time()
        self._rateStart = None  # (time, slices done) at the first progress report
        self._image = None
        self.error: BaseException | None = None
        self.outputNode = None
        self.finished = False
        self._cancel = threading.Event()
        self._ended = threading.Event()
        self._thread = threading.Thread(target=self._work, name="CohfTSuperRes", daemon=True)
        self._thread.start()

    def _progress(self, done: int, total: int) -> None:
        if self._rateStart is None:
            self._rateStart = (time.time(), done)
        self.done, self.total = done, total

    def _work(self) -> None:
        try:
            self._image = self.logic.run(self.job, self._progress, self._cancel.is_set)
        except BaseException as error:  # reported to the main thread by poll()
            self.error = error
        finally:
            self._ended.set()

    def cancel(self) -> None:
        """Ask the worker to stop after the current batch; poll() then reports InferenceCancelled."""
        self._cancel.set()

    @property
    def cancelRequested(self) -> bool:
        return self._cancel.is_set()

    def remainingSeconds(self) -> float | None:
        """Estimated seconds left from the rate since the first progress report (None until known)."""
        if self._rateStart is None or self.total == 0:
            return None
        startTime, startDone = self._rateStart
        if self.done <= startDone:
            return None
        rate = (self.done - startDone) / max(time.time() - startTime, 1e-6)
        return (self.total - self.done) / rate

    def poll(self) -> bool:
        """True once the run has ended; then outputNode (success) or error is set. Call on the main thread."""
        if self.finished:
            return True
        if not self._ended.is_set():
            return False
        self._thread.join()
        if self.error is None:
            try:
                self.outputNode = self.logic.finish(self.job, self._image, self.showResult)
            except Exception as error:
                self.error = error
        self._image = None
        self.finished = True
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the worker ends (scripts and tests), then poll(); True when finished."""
        self._ended.wait(timeout)
        return self.poll()


#
# CohfTSuperResWidget
#


class CohfTSuperResWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The GUI. Qt and CTK are imported here only, so the rest of the file loads without them."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._run = None
        self._timer = None
        self._shownProblem = None

    def setup(self) -> None:
        import qt

        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/CohfTSuperRes.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = CohfTSuperResLogic()
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self._onPoll)
        self.ui.progressBar.hide()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self._run is not None:
            self._run.cancel()
        if self._timer is not None:
            self._timer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateApplyButton)

    def onSceneStartClose(self, caller, event) -> None:
        if self._run is not None:
            self._run.cancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(CohfTSuperResParameterNode(self.logic.getParameterNode()))

    def setParameterNode(self, parameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateApplyButton)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateApplyButton)
        self._updateApplyButton()

    def _updateApplyButton(self, caller=None, event=None) -> None:
        """Apply is enabled only for valid inputs; the status line says why not. While running it is Cancel."""
        if self._run is not None:
            self.ui.applyButton.text = _("Cancel")
            self.ui.applyButton.enabled = not self._run.cancelRequested
            return
        self.ui.applyButton.text = _("Apply")
        node = self._parameterNode
        if node is None:
            problem = _("No parameter node.")
        else:
            problem = self.logic.inputProblem(node.inputT2, node.guideT1, node.outputVolume)
        self.ui.applyButton.enabled = problem is None
        self.ui.applyButton.toolTip = problem or _("Super-resolve the T2 volume.")
        # show the problem; clear it once fixed, but keep the last run's outcome otherwise
        if problem or self.ui.statusLabel.text == self._shownProblem:
            self.ui.statusLabel.text = problem or ""
        self._shownProblem = problem

    def ensureDependencies(self) -> bool:
        """True when the backend's packages are importable; missing ones are installed only after the user agreed."""
        node = self._parameterNode

        def confirm(message: str) -> bool:
            return slicer.util.confirmOkCancelDisplay(message, windowTitle=_("Install dependencies"))

        with slicer.util.tryWithErrorDisplay(_("Installing the required packages failed.")):
            if ensureDependencies(node.backend, node.device, confirm):
                return True
            self.ui.statusLabel.text = _("Not run: the required packages are not installed.")
        return False

    def onApplyButton(self) -> None:
        if self._run is not None:
            self._run.cancel()
            self.ui.statusLabel.text = _("Cancelling after the current batch...")
            self._updateApplyButton()
            return
        if not self.ensureDependencies():
            return
        node = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Cannot start the super-resolution."), waitCursor=True):
            run = self.logic.startProcessing(
                node.inputT2, node.guideT1, node.outputVolume,
                showResult=True, scale=node.scale, variant=node.variant, device=node.device, backend=node.backend,
            )
            self._run = run
            self.ui.progressBar.setValue(0)
            self.ui.progressBar.show()
            self.ui.statusLabel.text = " ".join([_("Starting..."), *run.job.warnings])
            self._updateApplyButton()
            self._timer.start()

    def _onPoll(self) -> None:
        run = self._run
        if run is None:
            self._timer.stop()
            return
        run.wait(WORKER_SLICE_S)  # lets the worker thread run (see POLL_INTERVAL_MS)
        if not run.finished:
            if run.total:
                self.ui.progressBar.setMaximum(run.total)
                self.ui.progressBar.setValue(run.done)
                remaining = run.remainingSeconds()
                text = _("Slices {done} / {total}").format(done=run.done, total=run.total)
                if remaining is not None:
                    text += _(", about {time} left").format(time=_formatSeconds(remaining))
                self.ui.progressBar.setFormat(text)
            return
        self._timer.stop()
        self._run = None
        self.ui.progressBar.hide()
        error = run.error
        if error is None:
            seconds = time.time() - run.startTime
            self.ui.statusLabel.text = " ".join(
                [
                    _("Done: {name} in {time}.").format(name=run.outputNode.GetName(), time=_formatSeconds(seconds)),
                    *run.job.warnings,
                ]
            )
        elif type(error).__name__ == "InferenceCancelled":
            self.ui.statusLabel.text = _("Cancelled; nothing was written.")
        elif isinstance(error, ValueError):  # bad input or weights: the message says what to do
            self.ui.statusLabel.text = str(error)
            slicer.util.errorDisplay(str(error), windowTitle=_("Cohf-T super-resolution"))
        else:
            logging.error("CohfTSuperRes failed", exc_info=error)
            self.ui.statusLabel.text = _("Failed: {error}").format(error=error)
            slicer.util.errorDisplay(
                _("Super-resolution failed: {error}\n\nSee the Python console for details.").format(error=error),
                windowTitle=_("Cohf-T super-resolution"),
            )
        self._updateApplyButton()


def _formatSeconds(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


#
# CohfTSuperResTest
#


def makeSyntheticPair(scale: int = 2, size: int = 96, slices: int = 4):
    """(LR T2, HR T2 truth, HR T1) SimpleITK images of the library's brain phantom, oblique, 3 mm slices.

    The HR phantom is put on an oblique grid (0.5 mm in-plane, 3 mm slices); the LR T2
    is its in-plane k-space truncation by `scale` on the DFT grid, as in training.
    """
    from CohfTSuperResLib.degrade import degrade
    from CohfTSuperResLib.phantom import brain_phantom

    hrT2, t1 = brain_phantom(size=size, slices=slices, seed=3)
    angle = np.deg2rad(12.0)
    direction = (np.cos(angle), -np.sin(angle), 0.0, np.sin(angle), np.cos(angle), 0.0, 0.0, 0.0, 1.0)
    for image in (hrT2, t1):
        image.SetSpacing((0.5, 0.5, 3.0))
        image.SetOrigin((-20.0, 15.0, 30.0))
        image.SetDirection(direction)
    lr = sitk.GetImageFromArray(degrade(sitk.GetArrayFromImage(hrT2), scale).astype(np.float32))
    lr.SetSpacing((0.5 * scale, 0.5 * scale, 3.0))
    lr.SetOrigin(hrT2.GetOrigin())
    lr.SetDirection(direction)
    return lr, hrT2, t1


class CohfTSuperResTest(ScriptedLoadableModuleTest):
    """Self-test on a synthetic pair; needs no download. Set modelPath to test other weights."""

    modelPath = None  # None: the shipped model
    requireBetterThanBicubic = True

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_SyntheticPair()

    def _addVolume(self, image: sitk.Image, name: str):
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
        updateVolumeNodeFromImage(node, image)
        node.CreateDefaultDisplayNodes()
        return node

    def test_SyntheticPair(self):
        import torch

        from CohfTSuperResLib.errors import WeightsError
        from CohfTSuperResLib.models_registry import find_model
        from CohfTSuperResLib.upsample import upsample_cubic

        scale = 2
        if self.modelPath is None:
            try:
                find_model("S", scale)
            except WeightsError as error:
                self.delayDisplay(f"Skipped: {error}")
                return
        self.delayDisplay("Making the synthetic T1/T2 pair")
        lr, hr, t1 = makeSyntheticPair(scale)
        t2Node, t1Node = self._addVolume(lr, "synthetic_T2"), self._addVolume(t1, "synthetic_T1")
        before = (_voxelCopy(t2Node.GetImageData()), _voxelCopy(t1Node.GetImageData()))

        self.delayDisplay("Super-resolving")
        logic = CohfTSuperResLogic()
        outputNode = logic.process(t2Node, t1Node, scale=scale, device="cpu", modelPath=self.modelPath)

        self.assertEqual(outputNode.GetName(), "synthetic_T2_SRx2")
        self.assertEqual(outputNode.GetImageData().GetDimensions(), hr.GetSize())
        np.testing.assert_allclose(outputNode.GetSpacing(), hr.GetSpacing(), atol=1e-9)
        np.testing.assert_allclose(outputNode.GetOrigin(), t2Node.GetOrigin(), atol=1e-9)
        outputDirections, inputDirections = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
        outputNode.GetIJKToRASDirectionMatrix(outputDirections)
        t2Node.GetIJKToRASDirectionMatrix(inputDirections)
        np.testing.assert_allclose(_vtkToNumpy(outputDirections), _vtkToNumpy(inputDirections), atol=1e-9)
        np.testing.assert_array_equal(before[0], _voxelCopy(t2Node.GetImageData()))
        np.testing.assert_array_equal(before[1], _voxelCopy(t1Node.GetImageData()))

        truth = sitk.GetArrayFromImage(hr)
        result = _voxelCopy(outputNode.GetImageData())
        bicubic = upsample_cubic(torch.from_numpy(sitk.GetArrayFromImage(lr))[:, None], scale)[:, 0].numpy()
        psnrResult, psnrBicubic = _psnr(result, truth), _psnr(bicubic, truth)
        self.delayDisplay(f"PSNR: Cohf-T {psnrResult:.2f} dB, bicubic {psnrBicubic:.2f} dB")
        if self.requireBetterThanBicubic:
            self.assertGreater(psnrResult, psnrBicubic)
        self.delayDisplay("Test passed")


def _psnr(estimate: np.ndarray, truth: np.ndarray) -> float:
    """PSNR in dB with the truth's maximum as data range (the library's metrics module needs
    pytorch_msssim, which inference in Slicer does not, so the self-test does not import it)."""
    error = np.mean((estimate.astype(np.float64) - truth.astype(np.float64)) ** 2)
    return float(10 * np.log10(float(truth.max()) ** 2 / max(error, 1e-20)))
