"""CohfTSuperRes: 3D Slicer module that super-resolves an LR MR T2 volume guided by a registered HR T1.

All computation happens in the CohfTSuperResLib library (installed beside this file); the helpers in
CohfTSuperResSlicerLib/ move volumes between MRML and SimpleITK, decide which choices can run, handle
the Python packages and run the library's command line in a child process. This file holds:

- CohfTSuperRes: module description (and the sample data's registration);
- CohfTSuperResParameterNode: the GUI state, saved with the scene;
- CohfTSuperResWidget: the GUI (Qt and CTK are imported only inside it);
- CohfTSuperResLogic: everything scripts need, free of Qt and of the parameter node;
- CohfTSuperResRun: one child-process run of the GUI, polled from a QTimer;
- CohfTSuperResTest: the self-test on the shipped sample data.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pathlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
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


def _ensureLibraryImportable() -> None:
    """Put the folder holding CohfTSuperResLib on sys.path when it is not importable yet.

    Installed extension: the library sits beside this file (qt-scripted-modules/), which Slicer
    already has on sys.path. Source tree: it sits one folder up.
    """
    if importlib.util.find_spec("CohfTSuperResLib") is not None:
        return
    here = os.path.dirname(os.path.abspath(__file__))
    for folder in (here, os.path.dirname(here)):
        if os.path.isfile(os.path.join(folder, "CohfTSuperResLib", "__init__.py")):
            sys.path.append(folder)
            return


_ensureLibraryImportable()

from CohfTSuperResLib.errors import InferenceCancelled, WeightsError  # noqa: E402  (torch-free)
from CohfTSuperResLib.options import BACKENDS, DEVICES, SCALES, VARIANTS  # noqa: E402
from CohfTSuperResSlicerLib import childrun, choices, dependencies, nodes, samples  # noqa: E402
from CohfTSuperResSlicerLib.nodes import VolumeNodeError  # noqa: E402,F401  (part of the module's API)

POLL_INTERVAL_MS = 200  # the GUI reads the child's progress this often


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
high-resolution T1 of the same patient that is already registered to it (or without T1, where a
model trained without it ships), with the Cohf-T network (cross-modality high-frequency
transformer). The run happens in a separate Python process: Cancel stops it at once.
<br><br>
The output keeps the T2's origin and orientation; its in-plane spacing is the T2's divided by the
scale. Parent transforms of the inputs are taken into account; the inputs are never modified.
<br><br>
The model card (training data, measured quality, limits) and the licence of the sample data open
from the module's panel. Sample data: <i>Sample Data</i> module, category <i>Cohf-T super-resolution</i>.
The result is an estimate made by a neural network: it is not a measurement and must not replace
the acquired images for diagnosis.
<br><br>
Reference: C. Fang et al., "Cross-Modality High-Frequency Transformer for MR Image
Super-Resolution", ACM Multimedia 2022 (arXiv:2203.15314).
"""
        )
        self.parent.acknowledgementText = _(
            """
Network implemented from the paper's text for this extension. Runs on PyTorch (installed through
the PyTorch extension) or ONNX Runtime. Sample data: open_ms (Lesjak et al., Neuroinformatics 2017,
doi:10.1007/s12021-017-9348-7), CC-BY.
"""
        )
        if hasattr(slicer, "app"):
            slicer.app.connect("startupCompleted()", samples.registerSampleData)


#
# CohfTSuperResParameterNode
#


@parameterNodeWrapper
class CohfTSuperResParameterNode:
    """GUI state saved with the scene.

    inputT2: the LR T2 volume. useT1 / guideT1: whether to use the registered HR T1, and which.
    outputVolume: where the result goes (None: a new volume). modelPath: a weights file of the
    user's ('': the shipped model of variant and scale; kept in step with its path field by the widget,
    because parameterNodeWrapper binds that field to pathlib.Path only, which shows '.' when empty).
    showResult: show the result in the slice views. scale, variant, device, backend: as in
    CohfTSuperResLogic.process.
    """

    inputT2: vtkMRMLScalarVolumeNode
    useT1: bool = True
    guideT1: vtkMRMLScalarVolumeNode
    outputVolume: vtkMRMLScalarVolumeNode
    scale: Annotated[int, Choice(list(SCALES))] = 2
    variant: Annotated[str, Choice(list(VARIANTS))] = "S"
    modelPath: str = ""
    device: Annotated[str, Choice(list(DEVICES))] = "auto"
    backend: Annotated[str, Choice(list(BACKENDS))] = "torch"
    showResult: bool = True


#
# CohfTSuperResLogic
#


@dataclass
class CohfTSuperResJob:
    """Everything one run needs, taken from the scene on the main thread (the checked images are copies)."""

    checked: object  # CohfTSuperResLib.inference.engine.InputCheck
    options: dict  # variant, model_path, device, backend, precision, batch_size (library names)
    t2NodeID: str
    outputNodeID: str | None
    outputName: str
    scene: object

    @property
    def messages(self) -> list[str]:
        """What the library's input check decided (notes) and is concerned about (warnings), one line each."""
        return [*self.checked.notes, *self.checked.warnings]


class CohfTSuperResLogic(ScriptedLoadableModuleLogic):
    """Super-resolution of volume nodes; usable from the Python console and `Slicer --python-script`.

    Nothing here imports Qt or uses the parameter node. process() runs synchronously, by default in a
    child process (inProcess=True runs the library in this process); startProcessing() starts a child
    process and returns at once. Errors are the library's (errors.LIBRARY_ERRORS): VolumeNodeError (an
    InputError) for unusable nodes, InputError and WeightsError for images and models, InferenceError
    with the child's message when the child process fails, InferenceCancelled when cancelled.
    """

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)

    # ---- what can run (no torch needed) ----

    @staticmethod
    def offer() -> choices.Offer:
        """The shipped models as choices (from models.json)."""
        return choices.offer()

    def inputProblem(self, t2Node, t1Node, outputNode=None, requireT1: bool = True) -> str | None:
        """Why these nodes cannot be processed (one sentence naming what to change), or None."""
        problem = nodes.volumeNodeProblem(t2Node, _("input T2"))
        if problem is None and (t1Node is not None or requireT1):
            problem = nodes.volumeNodeProblem(t1Node, _("guide T1"))
        if problem:
            return problem[0].upper() + problem[1:] + "."
        if t1Node is not None and t1Node is t2Node:
            return _("The same volume {name} is selected as T2 and as T1; select the registered T1 as guide.").format(
                name=nodes.nodeName(t2Node))
        if outputNode is not None:
            if outputNode is t2Node or outputNode is t1Node:
                return _("The output volume {name} is an input; choose 'Create new volume' or another volume.").format(
                    name=nodes.nodeName(outputNode))
            if not nodes.isGreyLevelVolumeNode(outputNode):
                return _("The output {name} is not a grey-level volume node; choose 'Create new volume'.").format(
                    name=nodes.nodeName(outputNode))
            if outputNode.GetParentTransformNode() is not None:
                return _(
                    "The output volume {name} is under transform '{transform}'; the result is computed in world "
                    "coordinates, so choose 'Create new volume' or remove that transform."
                ).format(name=nodes.nodeName(outputNode), transform=outputNode.GetParentTransformNode().GetName())
        return None

    def choiceProblem(self, t2Node, t1Node, outputNode=None, scale: int = 2, variant: str = "S", useT1: bool = True,
                      modelPath=None, backend: str = "torch") -> str | None:
        """Why Apply can not run these choices (nodes, then the model), or None: what the GUI shows under Apply."""
        return (self.inputProblem(t2Node, t1Node if useT1 else None, outputNode, requireT1=useT1)
                or choices.modelProblem(variant, scale, useT1, modelPath, backend))

    @staticmethod
    def documents() -> dict[str, pathlib.Path]:
        """Files a user can open from the module: the model card and the sample data's licence and attribution."""
        from CohfTSuperResLib.weights.registry import models_dir
        from CohfTSuperResLib.data.sample_data import sample_dir

        return {"Model card": models_dir() / "MODEL_CARD.md", "Data licence": sample_dir() / "README.md"}

    # ---- Python packages ----

    @staticmethod
    def missingPackages(backend: str = "torch", device: str = "auto", scale: int = 2, variant: str = "S",
                        useT1: bool = True, modelPath=None) -> list[dependencies.Missing]:
        """The packages this run needs that are absent or too old (ONNX export packages only when not cached)."""
        exportNeeded = backend == "onnx" and dependencies.onnxExportNeeded(
            dependencies.weightsSha256(variant, scale, useT1, modelPath))
        return dependencies.missingPackages(backend, device, exportNeeded)

    def ensureDependencies(self, confirm: Callable[[str], bool], backend: str = "torch", device: str = "auto",
                           scale: int = 2, variant: str = "S", useT1: bool = True, modelPath=None) -> bool:
        """True when the run's packages are there; missing ones are installed only when confirm(message) is True."""
        exportNeeded = backend == "onnx" and dependencies.onnxExportNeeded(
            dependencies.weightsSha256(variant, scale, useT1, modelPath))
        return dependencies.ensureDependencies(confirm, backend, device, exportNeeded)

    # ---- the steps of a run ----

    def prepare(self, t2Node, t1Node, outputNode=None, scale: int = 2, variant: str = "S", device: str = "auto",
                backend: str = "torch", modelPath=None, precision: str = "fp32", batchSize: int | None = None,
                sliceAxis: int | None = None) -> CohfTSuperResJob:
        """Check the nodes, the model and the device, copy the nodes into SimpleITK images in world space and run the
        library's input check on them, once (main thread; inputs untouched). t1Node None: a model without T1."""
        from CohfTSuperResLib.inference.devices import resolve_device
        from CohfTSuperResLib.inference.input_checks import check_inputs

        problem = self.inputProblem(t2Node, t1Node, outputNode, requireT1=False)
        if problem:
            raise VolumeNodeError(problem)
        problem = choices.modelProblem(variant, scale, t1Node is not None, modelPath, backend)
        if problem:
            raise WeightsError(problem)
        t2 = nodes.imageFromVolumeNode(t2Node, _("input T2"), resampleNonLinear=False)
        t1 = None if t1Node is None else nodes.imageFromVolumeNode(t1Node, _("guide T1"), resampleNonLinear=True)
        checked = check_inputs(t2, t1, scale, sliceAxis)
        resolve_device(device)  # InputError now for a GPU that is not there, not after the child has started
        userModel = str(modelPath) if choices.isUserModel(modelPath) else None
        job = CohfTSuperResJob(
            checked=checked,
            options=dict(variant=variant, model_path=userModel, device=device, backend=backend, precision=precision,
                         batch_size=batchSize),
            t2NodeID=t2Node.GetID(),
            outputNodeID=None if outputNode is None else outputNode.GetID(),
            outputName=f"{t2Node.GetName()}_SRx{scale}",
            scene=t2Node.GetScene(),
        )
        for message in job.messages:
            logging.warning(f"CohfTSuperRes: {message}")
        return job

    @staticmethod
    def runInProcess(job: CohfTSuperResJob, progressCallback=None, cancelCallback=None):
        """The library's super-resolution of a prepared job in this process (no MRML touched)."""
        from CohfTSuperResLib.inference.engine import super_resolve_checked

        return super_resolve_checked(job.checked, progress=progressCallback, cancel=cancelCallback, **job.options)

    @staticmethod
    def startChild(job: CohfTSuperResJob, logCallback: Callable[[str], None] | None = None) -> childrun.ChildRun:
        """Write the job's images to a temporary folder and start the library's command line on them in a child
        Python process (Slicer's PythonSlicer in Slicer); poll() or wait() the returned run."""
        checked = job.checked
        return childrun.ChildRun(checked.t2, checked.t1, checked.scale, checked.slice_axis, logCallback=logCallback,
                        **job.options)

    def finish(self, job: CohfTSuperResJob, image, showResult: bool = False):
        """Put the result into the output node (created if none was given) and return it (main thread)."""
        scene = job.scene
        t2Node = scene.GetNodeByID(job.t2NodeID)
        outputNode = scene.GetNodeByID(job.outputNodeID) if job.outputNodeID else None
        if outputNode is None:
            outputNode = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", scene.GenerateUniqueName(job.outputName))
        nodes.updateVolumeNodeFromImage(outputNode, image)
        if outputNode.GetDisplayNode() is None:
            outputNode.CreateDefaultDisplayNodes()
        inputDisplay = t2Node.GetDisplayNode() if t2Node is not None else None
        outputDisplay = outputNode.GetDisplayNode()
        if outputDisplay is not None and inputDisplay is not None and inputDisplay.IsA("vtkMRMLScalarVolumeDisplayNode"):
            outputDisplay.SetAutoWindowLevel(False)
            outputDisplay.SetWindowLevel(inputDisplay.GetWindow(), inputDisplay.GetLevel())
        if showResult:
            slicer.util.setSliceViewerLayers(background=outputNode, foreground=t2Node, foregroundOpacity=0.0, fit=True)
        return outputNode

    # ---- entry points ----

    def process(self, t2Node, t1Node, outputNode=None, scale: int = 2, variant: str = "S", device: str = "auto",
                backend: str = "torch", modelPath=None, precision: str = "fp32", batchSize: int | None = None,
                sliceAxis: int | None = None, progressCallback: Callable[[int, int], None] | None = None,
                cancelCallback: Callable[[], bool] | None = None, logCallback: Callable[[str], None] | None = None,
                showResult: bool = False, inProcess: bool = False):
        """Super-resolve the T2 node guided by the T1 node (None: a model without T1); return the output volume node.

        outputNode None: a new volume '<T2 name>_SRx<scale>'. modelPath None: the shipped model for (variant,
        scale, T1). sliceAxis None: the T2's thickest voxel axis (the library's choice, logged as a note).
        progressCallback(done, total) reports slices; cancelCallback() returning True stops the run
        (InferenceCancelled, no node created); logCallback(line) receives the child process's messages.
        inProcess=True runs the library in this process instead of a child process.
        """
        start = time.monotonic()
        job = self.prepare(t2Node, t1Node, outputNode, scale, variant, device, backend, modelPath, precision,
                           batchSize, sliceAxis)
        if inProcess:
            image = self.runInProcess(job, progressCallback, cancelCallback)
        else:
            image = self._waitForChild(self.startChild(job, logCallback), progressCallback, cancelCallback)
        result = self.finish(job, image, showResult)
        logging.info(f"CohfTSuperRes: {result.GetName()} computed in {time.monotonic() - start:.1f} s")
        return result

    @staticmethod
    def _waitForChild(child: childrun.ChildRun, progressCallback, cancelCallback):
        reported = None
        while not child.wait(0.1):
            if cancelCallback is not None and cancelCallback():
                child.cancel()
            elif progressCallback is not None and child.total and (child.done, child.total) != reported:
                reported = (child.done, child.total)
                progressCallback(*reported)
        if child.error is not None:
            raise child.error
        if progressCallback is not None and child.total and (child.done, child.total) != reported:
            progressCallback(child.done, child.total)
        return child.image

    def startProcessing(self, t2Node, t1Node, outputNode=None, showResult: bool = False,
                        logCallback: Callable[[str], None] | None = None, **options) -> CohfTSuperResRun:
        """Prepare here (options as in process), start the child process and return at once; poll() the run."""
        return CohfTSuperResRun(self, self.prepare(t2Node, t1Node, outputNode, **options), showResult, logCallback)

    @staticmethod
    def outcomeMessage(run: CohfTSuperResRun) -> str:
        """What the status line says about a finished run: the result, the cancellation, or the error's own message."""
        if run.error is None:
            return " ".join([_("Done: {name} in {time}.").format(
                name=run.outputNode.GetName(), time=formatSeconds(run.child.elapsedSeconds)), *run.job.messages])
        if isinstance(run.error, InferenceCancelled):
            return _("Cancelled; nothing was written.")
        text = str(run.error)
        return text[0].upper() + text[1:] if text else type(run.error).__name__


class CohfTSuperResRun:
    """One child-process run started by the GUI; poll() from a QTimer reads its progress and, at the end,
    puts the result into the scene (MRML is only touched in poll())."""

    def __init__(self, logic: CohfTSuperResLogic, job: CohfTSuperResJob, showResult: bool = False,
                 logCallback: Callable[[str], None] | None = None):
        self.logic, self.job, self.showResult = logic, job, showResult
        self.child = logic.startChild(job, logCallback)
        self.outputNode = None
        self.error: BaseException | None = None
        self.finished = False

    @property
    def progress(self) -> tuple[int, int]:
        """(slices done, slices in all); (0, 0) until the child's first report."""
        return self.child.done, self.child.total

    def remainingSeconds(self) -> float | None:
        return self.child.remainingSeconds()

    def cancel(self) -> None:
        """Kill the child process now; the next poll() ends the run with InferenceCancelled."""
        self.child.cancel()

    def poll(self) -> bool:
        """True once the run has ended; then outputNode (success) or error is set. Call on the main thread."""
        if self.finished:
            return True
        if not self.child.poll():
            return False
        self.error = self.child.error
        if self.error is None:
            try:
                self.outputNode = self.logic.finish(self.job, self.child.image, self.showResult)
            except Exception as error:  # reported like any other failure of the run
                self.error = error
        self.finished = True
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the child ends (scripts and tests), then poll(); True when finished."""
        return self.child.wait(timeout) and self.poll()


def formatSeconds(seconds: float) -> str:
    """'42 s' or '3 min 05 s'."""
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


#
# CohfTSuperResWidget
#


class CohfTSuperResWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The GUI. Qt and CTK are imported here only; every decision is the Logic's."""

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
        import ctk
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
        self.ui.modelPathLineEdit.filters = ctk.ctkPathLineEdit.Files
        self.ui.modelPathLineEdit.nameFilters = ["Cohf-T weights (*.safetensors *.onnx)"]
        self.ui.modelPathLineEdit.connect("currentPathChanged(QString)", self._onModelPathChanged)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        for name, button in (("Model card", self.ui.modelCardButton), ("Data licence", self.ui.dataLicenceButton)):
            button.connect("clicked(bool)", lambda checked, name=name: self._openDocument(name))
        self.initializeParameterNode()

    def _offerShippedChoices(self) -> None:
        """Grey out the variants and scales that no shipped model has (they stay usable with a weights file).
        Called after each connectGui, which refills the combo boxes."""
        offer = self.logic.offer()
        shipped = _("Shipped models: {models}.").format(models=offer.describe())
        for comboBox, values, offered in ((self.ui.variantComboBox, VARIANTS, offer.variants),
                                          (self.ui.scaleComboBox, SCALES, offer.scales)):
            for index, value in enumerate(values):
                comboBox.model().item(index).setEnabled(value in offered)
            comboBox.toolTip = shipped
        self.ui.useT1CheckBox.toolTip = shipped

    def _openDocument(self, name: str) -> None:
        import qt

        path = self.logic.documents()[name]
        if not path.is_file():
            slicer.util.errorDisplay(_("{name} not found: {path}").format(name=name, path=path))
            return
        qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(path)))

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
            self._offerShippedChoices()
        self._updateApplyButton()

    def _onModelPathChanged(self, path: str) -> None:
        if self._parameterNode is not None:
            self._parameterNode.modelPath = path

    def _updateApplyButton(self, caller=None, event=None) -> None:
        """Apply is enabled only for choices that can run; the status line says why not. While running it is Cancel."""
        if self._run is not None:
            self.ui.applyButton.text = _("Cancel")
            self.ui.applyButton.enabled = True
            return
        self.ui.applyButton.text = _("Apply")
        node = self._parameterNode
        if node is None:
            problem = _("No parameter node.")
        else:
            userModel = choices.isUserModel(node.modelPath)
            if self.ui.modelPathLineEdit.currentPath != node.modelPath:
                self.ui.modelPathLineEdit.currentPath = node.modelPath
            self.ui.t1Selector.enabled = node.useT1
            self.ui.variantComboBox.enabled = not userModel
            problem = self.logic.choiceProblem(node.inputT2, node.guideT1, node.outputVolume, node.scale, node.variant,
                                               node.useT1, node.modelPath, node.backend)
        self.ui.applyButton.enabled = problem is None
        self.ui.applyButton.toolTip = problem or _("Super-resolve the T2 volume.")
        # show the problem; clear it once fixed, but keep the last run's outcome otherwise
        if problem or self.ui.statusLabel.text == self._shownProblem:
            self.ui.statusLabel.text = problem or ""
        self._shownProblem = problem

    def _options(self) -> dict:
        node = self._parameterNode
        return dict(scale=node.scale, variant=node.variant, device=node.device, backend=node.backend,
                    modelPath=node.modelPath if choices.isUserModel(node.modelPath) else None)

    def _log(self, line: str) -> None:
        self.ui.logTextEdit.appendPlainText(line)

    def onApplyButton(self) -> None:
        if self._run is not None:
            self._run.cancel()  # the child is killed now; the next poll reports it
            return
        node = self._parameterNode
        options = self._options()

        def confirm(message: str) -> bool:
            return slicer.util.confirmOkCancelDisplay(message, windowTitle=_("Install Python packages"))

        with slicer.util.tryWithErrorDisplay(_("Installing the required packages failed."), waitCursor=True):
            if not self.logic.ensureDependencies(confirm, useT1=node.useT1, **options):
                self.ui.statusLabel.text = _("Not run: the required packages are not installed.")
                return
        with slicer.util.tryWithErrorDisplay(_("Cannot start the super-resolution."), waitCursor=True):
            self.ui.logTextEdit.clear()
            self._run = self.logic.startProcessing(
                node.inputT2, node.guideT1 if node.useT1 else None, node.outputVolume, showResult=node.showResult,
                logCallback=self._log, **options)
            for message in self._run.job.messages:
                self._log(message)
            self.ui.progressBar.setMaximum(0)  # busy until the child's first report
            self.ui.progressBar.show()
            self.ui.statusLabel.text = " ".join([_("Starting..."), *self._run.job.messages])
            self._updateApplyButton()
            self._timer.start()

    def _onPoll(self) -> None:
        run = self._run
        if run is None:
            self._timer.stop()
            return
        if not run.poll():
            done, total = run.progress
            if total:
                self.ui.progressBar.setMaximum(total)
                self.ui.progressBar.setValue(done)
                remaining = run.remainingSeconds()
                text = _("Slices {done} / {total}").format(done=done, total=total)
                if remaining is not None:
                    text += _(", about {time} left").format(time=formatSeconds(remaining))
                self.ui.progressBar.setFormat(text)
            return
        self._timer.stop()
        self._run = None
        self.ui.progressBar.hide()
        message = self.logic.outcomeMessage(run)
        self.ui.statusLabel.text = message
        self._log(message)
        if run.error is not None and not isinstance(run.error, InferenceCancelled):
            logging.error(f"CohfTSuperRes: {message}")
            slicer.util.errorDisplay(message, windowTitle=_("Cohf-T super-resolution"))
        self._updateApplyButton()


#
# CohfTSuperResTest
#


class CohfTSuperResTest(ScriptedLoadableModuleTest):
    """Self-test on the shipped sample (a real slab of a held-out subject). Without torch it tests what it can
    (sample, nodes, choices, packages) and skips the super-resolution with a message. Set modelPath to test
    other weights; inProcess to run the library in Slicer's process."""

    modelPath = None  # None: the shipped model
    requireBetterThanBicubic = True
    inProcess = False

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_SampleData()

    def test_SampleData(self):
        self.delayDisplay("Loading the sample data (open_ms mni/patient26 slab)")
        loaded = samples.loadSampleIntoScene(slicer.mrmlScene)
        t2Node, t1Node, truthNode = loaded["lr_t2"], loaded["t1"], loaded["hr_t2"]
        self.assertEqual(t2Node.GetImageData().GetDimensions(), (72, 90, 24))
        for node, spacing in ((t2Node, (2.0, 2.0, 3.0)), (t1Node, (1.0, 1.0, 1.0)), (truthNode, (1.0, 1.0, 3.0))):
            self.assertEqual(tuple(round(s, 9) for s in node.GetSpacing()), spacing)
        logic = CohfTSuperResLogic()
        self.assertIsNone(logic.inputProblem(t2Node, t1Node))
        problem = logic.choiceProblem(t2Node, t1Node, scale=2, modelPath=self.modelPath)
        if problem is not None and self.modelPath is None:
            self.delayDisplay(f"Skipped the super-resolution: {problem}")
            return
        self.assertIsNone(problem)
        missing = logic.missingPackages(scale=2, modelPath=self.modelPath)
        if missing:
            self.delayDisplay("Skipped the super-resolution, which needs "
                              + ", ".join(package.describe() for package in missing))
            return
        self._superResolveAndCompare(logic, t2Node, t1Node, truthNode)

    def _superResolveAndCompare(self, logic, t2Node, t1Node, truthNode):
        from CohfTSuperResLib.imageio.normalize import robust_scale
        from CohfTSuperResLib.data.synthetic_volumes import bicubic_volume

        before = [nodes.voxelCopy(node.GetImageData()) for node in (t2Node, t1Node)]
        self.delayDisplay("Super-resolving x2" + (" in Slicer's process" if self.inProcess else " in a child process"))
        outputNode = logic.process(t2Node, t1Node, scale=2, device="cpu", modelPath=self.modelPath,
                                   inProcess=self.inProcess)
        self.assertEqual(outputNode.GetName(), "patient26_T2_LR_SRx2")
        self.assertEqual(outputNode.GetImageData().GetDimensions(), truthNode.GetImageData().GetDimensions())
        np.testing.assert_allclose(nodes.ijkToWorldMatrix(outputNode), nodes.ijkToWorldMatrix(truthNode), atol=1e-6)
        for node, voxels in zip((t2Node, t1Node), before, strict=True):
            np.testing.assert_array_equal(nodes.voxelCopy(node.GetImageData()), voxels)

        truth = nodes.voxelCopy(truthNode.GetImageData()).astype(np.float64)
        result = nodes.voxelCopy(outputNode.GetImageData())
        bicubic = sitk.GetArrayFromImage(bicubic_volume(nodes.imageFromVolumeNode(t2Node), 2))
        reference = robust_scale(truth)
        psnrResult, psnrBicubic = (_psnr(volume / reference, truth / reference) for volume in (result, bicubic))
        self.delayDisplay(f"PSNR against the HR truth: Cohf-T {psnrResult:.2f} dB, bicubic {psnrBicubic:.2f} dB")
        if self.requireBetterThanBicubic:
            self.assertGreater(psnrResult, psnrBicubic)
        self.delayDisplay("Test passed")


def _psnr(estimate, truth) -> float:
    """PSNR in dB, data range 1 (the library's metrics module needs pytorch_msssim, which Slicer does not install)."""
    error = float(np.mean((np.asarray(estimate, np.float64) - truth) ** 2))
    return float(10 * np.log10(1.0 / max(error, 1e-20)))
