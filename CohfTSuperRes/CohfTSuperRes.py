"""CohfTSuperRes: 3D Slicer module that super-resolves an LR MR T2 volume guided by a registered HR T1.

All computation happens in the CohfTSuperResLib library (installed beside this file); the helpers in
CohfTSuperResSlicerLib/ move volumes between MRML and SimpleITK, decide which choices can run, handle
the Python packages and run the library's command line in a child process (runs.SceneRun). This file holds:

- CohfTSuperRes: module description (and the sample data's registration);
- CohfTSuperResParameterNode: the GUI state, saved with the scene;
- CohfTSuperResLogic: everything scripts need, free of Qt and of the parameter node;
- CohfTSuperResWidget: the GUI (Qt and CTK are imported only inside it);
- CohfTSuperResTest: the self-test on the shipped sample data.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import pathlib
import time
from collections.abc import Callable
from typing import Annotated

import numpy as np
import SimpleITK as sitk
import vtk

import slicer
from slicer import vtkMRMLScalarVolumeNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from CohfTSuperResLib.errors import InferenceCancelled, WeightsError  # torch-free
from CohfTSuperResLib.imageio.volumes import RECORD_KEYS
from CohfTSuperResLib.options import (
    BACKENDS,
    CONSISTENCY_PROFILES,
    DEVICES,
    GUIDE_CHECKS,
    MODES,
    SCALES,
    SELF_ENSEMBLES,
    VARIANTS,
    RunOptions,
    self_ensemble_for_mode,
)
from CohfTSuperResSlicerLib import choices, dependencies, nodes, samples
from CohfTSuperResSlicerLib.nodes import VolumeNodeError
from CohfTSuperResSlicerLib.runs import CohfTSuperResJob, SceneRun, formatSeconds
from CohfTSuperResSlicerLib.text import _, translate

POLL_INTERVAL_MS = 200  # the GUI reads the child's progress this often


#
# CohfTSuperRes
#


class CohfTSuperRes(ScriptedLoadableModule):
    """Module description shown in Slicer's module list and help panel."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Cohf-T Super-Resolution")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Filtering")]
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
Documentation: <a href="https://github.com/CohfTSuperRes/SlicerCohfTSuperRes/blob/main/docs/slicer.md">the
module's page</a>.
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
    outputVolume: where the result goes (None: a new volume). modelPath: a weights file of the user's (None:
    the shipped model of variant and scale; kept in step with its path field by the widget). showResult: show
    the result in the slice views. scale, variant, device, backend, guideCheck, registerT1 (register), mode: as in
    options.RunOptions. sliceSpacing: the through-plane thin slices' spacing in mm (0: the default). adaptSteps: the
    through-plane adaptation to the scan (options.RunOptions.adapt_steps; 0: off). sliceProfile, sliceGap: the
    through-plane consistency with the thick slices (options.RunOptions.slice_profile, slice_gap). selfEnsemble:
    copies of each slice run and averaged (options.RunOptions.self_ensemble; through-plane runs 8 as 4, the most its
    planes have).
    """

    inputT2: vtkMRMLScalarVolumeNode
    useT1: bool = True
    guideT1: vtkMRMLScalarVolumeNode
    outputVolume: vtkMRMLScalarVolumeNode
    scale: Annotated[int, Choice(list(SCALES))] = 2
    variant: Annotated[str, Choice(list(VARIANTS))] = "S"
    modelPath: pathlib.Path | None = None
    device: Annotated[str, Choice(list(DEVICES))] = "auto"
    backend: Annotated[str, Choice(list(BACKENDS))] = "torch"
    guideCheck: Annotated[str, Choice(list(GUIDE_CHECKS))] = "auto"
    registerT1: bool = False
    mode: Annotated[str, Choice(list(MODES))] = "in-plane"
    # the ranges bound the spin boxes: Slicer's GUI connectors replace the .ui's own limits by these
    sliceSpacing: Annotated[float, WithinRange(0.0, 10.0)] = 0.0
    adaptSteps: Annotated[int, WithinRange(0, 5000)] = 0
    sliceProfile: Annotated[str, Choice(list(CONSISTENCY_PROFILES))] = "off"
    sliceGap: Annotated[float, WithinRange(0.0, 0.9)] = 0.2
    selfEnsemble: Annotated[int, Choice(list(SELF_ENSEMBLES))] = 1
    showResult: bool = True

    def runOptions(self) -> RunOptions:
        """The run's options from the GUI state."""
        throughPlane = self.mode == "through-plane"
        consistency = {"slice_profile": self.sliceProfile, "slice_gap": self.sliceGap} if throughPlane else {}
        return RunOptions(scale=self.scale, variant=self.variant, model_path=self.modelPath, device=self.device,
                          backend=self.backend, guide_check=self.guideCheck, register=self.registerT1, mode=self.mode,
                          slice_spacing=self.sliceSpacing if throughPlane and self.sliceSpacing > 0 else None,
                          adapt_steps=self.adaptSteps if throughPlane and self.backend == "torch" else 0,
                          self_ensemble=self_ensemble_for_mode(self.selfEnsemble, self.mode), **consistency)


#
# CohfTSuperResLogic
#


class CohfTSuperResLogic(ScriptedLoadableModuleLogic):
    """Super-resolution of volume nodes; usable from the Python console and `Slicer --python-script`.

    Nothing here imports Qt or uses the parameter node. The choices of a run are one options.RunOptions.
    process() runs synchronously in a child process (inProcess=True: in this process), keeping Slicer's GUI
    responsive while it waits; startProcessing() starts the child and returns the run at once. Errors are the
    library's (errors.LIBRARY_ERRORS): VolumeNodeError (an InputError) for unusable nodes, InputError and
    WeightsError for images and models, InferenceError with the child's message when the child process fails,
    InferenceCancelled when cancelled.
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

    def choiceProblem(self, t2Node, t1Node, outputNode=None, options: RunOptions | None = None,
                      useT1: bool = True) -> str | None:
        """Why Apply can not run these choices (nodes, then the model), or None: what the GUI shows under Apply."""
        options = options or RunOptions()
        return (self.inputProblem(t2Node, t1Node if useT1 else None, outputNode, requireT1=useT1)
                or choices.modelProblem(options, useT1))

    @staticmethod
    def documents() -> dict[str, pathlib.Path]:
        """Files a user can open from the module: the model card and the sample data's licence and attribution."""
        from CohfTSuperResLib.data.sample_data import sample_dir
        from CohfTSuperResLib.weights.registry import models_dir

        return {"Model card": models_dir() / "MODEL_CARD.md", "Data licence": sample_dir() / "README.md"}

    # ---- Python packages ----

    @staticmethod
    def missingPackages(options: RunOptions | None = None, useT1: bool = True) -> list[dependencies.Missing]:
        """The packages this run needs that are absent or too old (ONNX export packages only when not cached)."""
        return dependencies.missingPackages(*dependencies.runPackages(options or RunOptions(), useT1))

    @staticmethod
    def ensureDependencies(confirm: Callable[[str], bool], options: RunOptions | None = None,
                           useT1: bool = True) -> bool:
        """True when the run's packages are there; missing ones are installed only when confirm(message) is True."""
        return dependencies.ensureDependencies(confirm, *dependencies.runPackages(options or RunOptions(), useT1))

    # ---- the steps of a run ----

    def prepare(self, t2Node, t1Node, outputNode=None, options: RunOptions | None = None) -> CohfTSuperResJob:
        """Check the nodes, the model and the device, copy the nodes into SimpleITK images in world space and run the
        library's input check on them, once (main thread; inputs untouched). t1Node None: a model without T1.
        Nothing here imports torch: the device is checked where the network runs (the child process, or
        runInProcess), so that Slicer's own process never loads it."""
        from CohfTSuperResLib.inference.input_checks import check_inputs

        options = options or RunOptions()
        problem = self.inputProblem(t2Node, t1Node, outputNode, requireT1=False)
        if problem:
            raise VolumeNodeError(problem)
        problem = choices.modelProblem(options, t1Node is not None)
        if problem:
            raise WeightsError(problem)
        t2 = nodes.imageFromVolumeNode(t2Node, _("input T2"), resampleNonLinear=False)
        t1 = None if t1Node is None else nodes.imageFromVolumeNode(t1Node, _("guide T1"), resampleNonLinear=True)
        checked = check_inputs(t2, t1, options.scale, options.slice_axis, options.mode, options.slice_spacing)
        if t1 is not None and options.register:  # here, so that the transform can go into the scene
            checked = self._registered(checked, t1Node, t2Node)
            options = dataclasses.replace(options, register=False)
        # through-plane, checked.scale is the thin slices per thick slice, not the in-plane scale
        suffix = f"thin_x{checked.scale}" if options.through_plane else f"SRx{checked.scale}"
        job = CohfTSuperResJob(
            checked=checked,
            options=dataclasses.replace(options, scale=options.scale if options.through_plane else checked.scale,
                                        slice_axis=checked.slice_axis),
            t2NodeID=t2Node.GetID(),
            outputNodeID=None if outputNode is None else outputNode.GetID(),
            outputName=f"{t2Node.GetName()}_{suffix}",
            scene=t2Node.GetScene(),
        )
        for message in job.messages:
            logging.warning(f"CohfTSuperRes: {message}")
        return job

    @staticmethod
    def _registered(checked, t1Node, t2Node):
        """The checked inputs with the T1 registered to the T2 (the T1 node untouched); the rigid transform is added
        to the T2's study as a transform node, to inspect or to reuse. It maps the T1 as it lies in world coordinates
        onto the T2: it moves the T1 onto the T2 when it is the T1's parent, or, where the T1 is already under
        transforms, the parent of the topmost of them."""
        from CohfTSuperResLib.inference.registration import register_t1

        registration = register_t1(checked.t2, checked.t1, checked.t2_scale)
        scene = t2Node.GetScene()
        name = scene.GenerateUniqueName(f"{t1Node.GetName()}_registered_to_{t2Node.GetName()}")
        transformNode = nodes.addRigidTransform(scene, registration.transform, name)
        nodes.placeInStudyOf(transformNode, t2Node)
        return dataclasses.replace(checked, t1=registration.t1, notes=(*checked.notes, registration.summary()))

    @staticmethod
    def runInProcess(job: CohfTSuperResJob, progressCallback=None, cancelCallback=None):
        """The library's super-resolution of a prepared job in this process (no MRML touched)."""
        from CohfTSuperResLib.inference import super_resolve_checked

        return super_resolve_checked(job.checked, job.options, progress=progressCallback, cancel=cancelCallback)

    def finish(self, job: CohfTSuperResJob, image, showResult: bool = False):
        """Put the result into the output node (a new one goes into the T2's study) and return it (main thread)."""
        scene = job.scene
        t2Node = scene.GetNodeByID(job.t2NodeID)
        outputNode = scene.GetNodeByID(job.outputNodeID) if job.outputNodeID else None
        if outputNode is None:
            outputNode = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", scene.GenerateUniqueName(job.outputName))
            if t2Node is not None:
                nodes.placeInStudyOf(outputNode, t2Node)
        nodes.updateVolumeNodeFromImage(outputNode, image)
        for key in RECORD_KEYS:  # which model ran, what the guide check measured
            if image.HasMetaDataKey(key):
                outputNode.SetAttribute(f"CohfTSuperRes.{key}", image.GetMetaData(key))
        if outputNode.GetDisplayNode() is None:
            outputNode.CreateDefaultDisplayNodes()
        inputDisplay = t2Node.GetDisplayNode() if t2Node is not None else None
        outputDisplay = outputNode.GetDisplayNode()
        if outputDisplay is not None and inputDisplay is not None and inputDisplay.IsA(
                "vtkMRMLScalarVolumeDisplayNode"):
            outputDisplay.SetAutoWindowLevel(False)
            outputDisplay.SetWindowLevel(inputDisplay.GetWindow(), inputDisplay.GetLevel())
        if showResult:
            # the views turn to the result's own slice planes, so an oblique acquisition is shown as acquired
            slicer.util.setSliceViewerLayers(background=outputNode, foreground=t2Node, foregroundOpacity=0.0, fit=True,
                                             rotateToVolumePlane=True)
        return outputNode

    # ---- entry points ----

    def process(self, t2Node, t1Node, outputNode=None, options: RunOptions | None = None,
                progressCallback: Callable[[int, int], None] | None = None,
                cancelCallback: Callable[[], bool] | None = None, logCallback: Callable[[str], None] | None = None,
                showResult: bool = False, inProcess: bool = False):
        """Super-resolve the T2 node guided by the T1 node (None: a model without T1); return the output volume node.

        options: the run's choices (None: RunOptions(), the shipped S model at x2). outputNode None: a new volume
        '<T2 name>_SRx<scale>' (through-plane: '<T2 name>_thin_x<thin slices per slice>') in the T2's study.
        progressCallback(done, total) reports slices; cancelCallback() returning True stops the run
        (InferenceCancelled, no node created); logCallback(line) receives the child process's messages.
        inProcess=True runs the library in this process instead of a child process.
        """
        start = time.monotonic()
        if inProcess:
            job = self.prepare(t2Node, t1Node, outputNode, options)
            result = self.finish(job, self.runInProcess(job, progressCallback, cancelCallback), showResult)
        else:
            run = self.startProcessing(t2Node, t1Node, outputNode, options, showResult, logCallback)
            run.wait(progressCallback=progressCallback, cancelCallback=cancelCallback)
            if run.error is not None:
                raise run.error
            result = run.outputNode
        logging.info(f"CohfTSuperRes: {result.GetName()} computed in {time.monotonic() - start:.1f} s")
        return result

    def startProcessing(self, t2Node, t1Node, outputNode=None, options: RunOptions | None = None,
                        showResult: bool = False,
                        logCallback: Callable[[str], None] | None = None) -> SceneRun:
        """Prepare here, start the child process and return at once; poll() or wait() the run."""
        return SceneRun(self.prepare(t2Node, t1Node, outputNode, options),
                        lambda job, image: self.finish(job, image, showResult), logCallback)

    @staticmethod
    def outcomeMessage(run: SceneRun) -> str:
        """What the status line says about a finished run: the result, the cancellation, or the error's own message."""
        if run.error is None:
            return " ".join([_("Done: {name} in {time}.").format(
                name=run.outputNode.GetName(), time=formatSeconds(run.child.elapsedSeconds)), *run.job.messages,
                *run.notes])
        if isinstance(run.error, InferenceCancelled):
            return _("Cancelled; nothing was written.")
        text = str(run.error)
        return text[0].upper() + text[1:] if text else type(run.error).__name__


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
        self._uiToolTips = {}  # widget name -> its tooltip in the .ui

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
        self.ui.modelPathLineEdit.nameFilters = [_("Cohf-T weights") + " (*.safetensors *.onnx)"]
        self.ui.modelPathLineEdit.connect("currentPathChanged(QString)", self._onModelPathChanged)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        for name, label, button in (("Model card", _("Model card"), self.ui.modelCardButton),
                                    ("Data licence", _("Data licence"), self.ui.dataLicenceButton)):
            button.connect("clicked(bool)", lambda checked, name=name, label=label: self._openDocument(name, label))
        self.initializeParameterNode()

    def _offerShippedChoices(self) -> None:
        """Grey out the variants, scales and modes that no shipped model has (they stay usable with a weights file).
        Called after each connectGui, which refills the combo boxes."""
        offer = self.logic.offer()
        shipped = _("Shipped models: {models}.").format(models=offer.describe())
        for comboBox, values, offered in ((self.ui.variantComboBox, VARIANTS, offer.variants),
                                          (self.ui.scaleComboBox, SCALES, offer.scales),
                                          (self.ui.modeComboBox, MODES, offer.modes)):
            for index, value in enumerate(values):
                comboBox.model().item(index).setEnabled(value in offered)
            self._appendToolTip(comboBox, shipped)
        self._appendToolTip(self.ui.useT1CheckBox, shipped)

    def _appendToolTip(self, widget, text: str) -> None:
        """The .ui's own tooltip (what the choice does), then `text` (replacing what an earlier call added)."""
        own = self._uiToolTips.setdefault(widget.objectName, widget.toolTip)
        widget.toolTip = f"{own}\n{text}" if own else text

    def _openDocument(self, name: str, label: str) -> None:
        """Open the document `name` of Logic.documents(); `label` is its name as the user reads it."""
        import qt

        path = self.logic.documents()[name]
        if not path.is_file():
            slicer.util.errorDisplay(_("{name} not found: {path}").format(name=label, path=path))
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
            self._parameterNode.modelPath = pathlib.Path(path) if path else None

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
            shown = "" if node.modelPath is None else str(node.modelPath)
            if self.ui.modelPathLineEdit.currentPath != shown:
                self.ui.modelPathLineEdit.currentPath = shown
            self.ui.t1Selector.enabled = node.useT1
            self.ui.variantComboBox.enabled = node.modelPath is None
            self.ui.scaleComboBox.enabled = node.mode == "in-plane"
            self.ui.sliceSpacingSpinBox.enabled = node.mode == "through-plane"
            self.ui.adaptStepsSpinBox.enabled = node.mode == "through-plane" and node.backend == "torch"
            self.ui.sliceProfileComboBox.enabled = node.mode == "through-plane"
            self.ui.sliceGapSpinBox.enabled = node.mode == "through-plane" and node.sliceProfile != "off"
            problem = self.logic.choiceProblem(node.inputT2, node.guideT1, node.outputVolume, node.runOptions(),
                                               node.useT1)
        self.ui.applyButton.enabled = problem is None
        self.ui.applyButton.toolTip = problem or _("Super-resolve the T2 volume.")
        # show the problem; clear it once fixed, but keep the last run's outcome otherwise
        if problem or self.ui.statusLabel.text == self._shownProblem:
            self.ui.statusLabel.text = problem or ""
        self._shownProblem = problem

    def _log(self, line: str) -> None:
        self.ui.logTextEdit.appendPlainText(line)

    def onApplyButton(self) -> None:
        if self._run is not None:
            self._run.cancel()  # the child is killed now; the next poll reports it
            return
        node = self._parameterNode
        options = None
        with slicer.util.tryWithErrorDisplay(_("Cannot start the super-resolution.")):
            options = node.runOptions()
        if options is None or not self._packagesReady(options, node.useT1):
            return
        with slicer.util.tryWithErrorDisplay(_("Cannot start the super-resolution."), waitCursor=True):
            self.ui.logTextEdit.clear()
            self._run = self.logic.startProcessing(
                node.inputT2, node.guideT1 if node.useT1 else None, node.outputVolume, options,
                showResult=node.showResult, logCallback=self._log)
            for message in self._run.job.messages:
                self._log(message)
            self.ui.progressBar.setMaximum(0)  # busy until the child's first report
            self.ui.progressBar.show()
            self.ui.statusLabel.text = " ".join([_("Starting..."), *self._run.job.messages])
            self._updateApplyButton()
            self._timer.start()

    def _packagesReady(self, options: RunOptions, useT1: bool) -> bool:
        """True when the run's Python packages are there; else ask, install what the user agreed to (a wait cursor
        during the installation, not over the question) and say what happened."""
        with slicer.util.tryWithErrorDisplay(_("Installing the required packages failed.")), \
                contextlib.ExitStack() as installing:

            def confirm(message: str) -> bool:
                agreed = slicer.util.confirmOkCancelDisplay(message, windowTitle=_("Install Python packages"))
                if agreed:
                    installing.enter_context(slicer.util.WaitCursor())
                return agreed

            try:
                if self.logic.ensureDependencies(confirm, options, useT1):
                    return True
            except dependencies.RestartNeeded as needed:
                installing.close()
                text = str(needed)
                slicer.util.infoDisplay(text[:1].upper() + text[1:] + ".", windowTitle=_("Install Python packages"))
                self.ui.statusLabel.text = _("Not run: restart Slicer to finish the installation.")
                return False
            self.ui.statusLabel.text = _("Not run: the required packages are not installed.")
        return False

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
                text = (_("Slices {done} / {total}").format(done=done, total=total) if remaining is None else
                        _("Slices {done} / {total}, about {time} left").format(
                            done=done, total=total, time=formatSeconds(remaining)))
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

    modelPath: pathlib.Path | None = None  # None: the shipped model
    requireBetterThanInterpolation = True
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
        options = RunOptions(scale=2, device="cpu", model_path=self.modelPath)
        problem = logic.choiceProblem(t2Node, t1Node, options=options)
        if problem is not None and self.modelPath is None:
            self._skipped(problem)
            return
        self.assertIsNone(problem)
        missing = logic.missingPackages(options)
        if missing:
            self._skipped(_("it needs {packages}").format(packages=", ".join(p.describe() for p in missing)))
            return
        self._superResolveAndCompare(logic, t2Node, t1Node, truthNode, options)

    def _skipped(self, reason: str) -> None:
        """Say plainly, in the log and on screen, that the super-resolution part of the test did not run."""
        message = _("SKIPPED the super-resolution part of the self-test: {reason}").format(reason=reason)
        logging.warning(f"CohfTSuperRes: {message}")
        self.delayDisplay(message)

    def _superResolveAndCompare(self, logic, t2Node, t1Node, truthNode, options: RunOptions):
        from CohfTSuperResLib.evaluation.metrics import psnr  # torch-free, as everything in Slicer's process
        from CohfTSuperResLib.imageio.normalize import robust_scale

        before = [nodes.voxelCopy(node.GetImageData()) for node in (t2Node, t1Node)]
        self.delayDisplay("Super-resolving x2" + (" in Slicer's process" if self.inProcess else " in a child process"))
        outputNode = logic.process(t2Node, t1Node, options=options, inProcess=self.inProcess)
        self.assertEqual(outputNode.GetName(), "patient26_T2_LR_SRx2")
        self.assertEqual(outputNode.GetImageData().GetDimensions(), truthNode.GetImageData().GetDimensions())
        np.testing.assert_allclose(nodes.ijkToWorldMatrix(outputNode), nodes.ijkToWorldMatrix(truthNode), atol=1e-6)
        for node, voxels in zip((t2Node, t1Node), before, strict=True):
            np.testing.assert_array_equal(nodes.voxelCopy(node.GetImageData()), voxels)

        truth = nodes.voxelCopy(truthNode.GetImageData()).astype(np.float64)
        result = nodes.voxelCopy(outputNode.GetImageData())
        spline = sitk.GetArrayFromImage(sitk.Resample(
            sitk.Cast(nodes.imageFromVolumeNode(t2Node), sitk.sitkFloat32), nodes.imageFromVolumeNode(truthNode),
            sitk.Transform(), sitk.sitkBSpline, 0.0, sitk.sitkFloat32))
        reference = robust_scale(truth)
        psnrResult, psnrSpline = (psnr(volume / reference, truth / reference, 1.0) for volume in (result, spline))
        self.delayDisplay(f"PSNR against the HR truth: Cohf-T {psnrResult:.2f} dB, cubic B-spline {psnrSpline:.2f} dB")
        if self.requireBetterThanInterpolation:
            self.assertGreater(psnrResult, psnrSpline)
        self.delayDisplay("Test passed")
