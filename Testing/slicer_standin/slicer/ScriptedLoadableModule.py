"""TEST-ONLY STAND-IN for Slicer's `slicer.ScriptedLoadableModule` (absent from slicer-core).

Only what CohfTSuperRes.py uses outside its Qt widget: the module, widget and
logic base classes' constructors, the logic's MRML parameter node, and the
test base class (a unittest.TestCase whose delayDisplay only logs).
"""

import logging
import unittest

__all__ = ["ScriptedLoadableModule", "ScriptedLoadableModuleLogic", "ScriptedLoadableModuleTest", "ScriptedLoadableModuleWidget"]


class ScriptedLoadableModule:
    def __init__(self, parent):
        self.parent = parent
        self.moduleName = type(self).__name__


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None):
        self.parent = parent
        self.moduleName = type(self).__name__.removesuffix("Widget")


class ScriptedLoadableModuleLogic:
    def __init__(self, parent=None):
        self.moduleName = type(self).__name__.removesuffix("Logic")

    def getParameterNode(self):
        """The scene's singleton vtkMRMLScriptedModuleNode tagged with the module name (created on first use)."""
        import slicer

        node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
        if node is None:
            node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", self.moduleName)
            node.SetSingletonTag(self.moduleName)
            node.SetAttribute("ModuleName", self.moduleName)
        return node


class ScriptedLoadableModuleTest(unittest.TestCase):
    def delayDisplay(self, message, msec=None):
        logging.info(message)
