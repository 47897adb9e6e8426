"""The Python packages a run needs, checked without importing them, and their installation after consent.

Every run needs torch (at least MINIMUM_TORCH, as pyproject.toml of the library says) and safetensors.
The ONNX backend also needs onnxruntime (onnxruntime-gpu on CUDA); onnx and onnxscript only when a
.safetensors model must first be exported to ONNX, i.e. when no trusted export of it is cached
(``onnx_cache``). torch is installed through Slicer's PyTorch extension only (which picks the build for
the GPU driver); where that extension is missing, it is installed from the Extensions Manager and Slicer
must restart. Everything else goes through pip, with Slicer's numpy and SimpleITK pinned.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

from packaging.version import InvalidVersion, Version

from CohfTSuperResLib.errors import WeightsError
from CohfTSuperResLib.imageio.file_integrity import sha256_of
from CohfTSuperResLib.inference.onnx_cache import EXPORT_PACKAGES, RUNTIME_PACKAGES, cached_path, is_trusted
from CohfTSuperResLib.options import RunOptions
from CohfTSuperResLib.weights.registry import super_resolution_models

from .text import _

MINIMUM_TORCH = "2.2"
# The lower bounds of pyproject.toml (a test checks that both agree; pyproject is not installed in Slicer)
MINIMUM_VERSIONS = {"torch": MINIMUM_TORCH, "safetensors": "0.4", "onnxruntime": "1.17", "onnx": "1.15",
                    "onnxscript": "0.4"}
PURPOSES = {
    "torch": _("runs the network"),
    "safetensors": _("reads the weights"),
    "onnxruntime": _("runs ONNX models"),
    "onnx": _("exports the model to ONNX once (the export is cached)"),
    "onnxscript": _("exports the model to ONNX once (the export is cached)"),
}


class RestartNeeded(RuntimeError):
    """An extension was installed: Slicer must restart before the run can use it."""


@dataclass(frozen=True)
class Missing:
    """A package to install: its import name, pip requirement, installed version (None: not installed) and purpose."""

    name: str
    requirement: str
    installed: str | None
    purpose: str

    def describe(self) -> str:
        """One line for the consent dialog."""
        state = (_("not installed") if self.installed is None else
                 _("installed {version} is too old").format(version=self.installed))
        return f"{self.requirement} ({state}; {self.purpose})"


def _recentEnough(installed: str, minimum: str) -> bool:
    """Whether an installed version string satisfies a minimum (PEP 440; local tags such as +cpu ignored)."""
    try:
        return Version(installed).release >= Version(minimum).release
    except InvalidVersion:
        return False


def installedVersion(name: str) -> str | None:
    """Version of an importable package, read from its metadata without importing it; None when absent."""
    if importlib.util.find_spec(name) is None:
        return None
    distribution = name
    if name == "onnxruntime":  # importable as onnxruntime from either distribution
        for candidate in ("onnxruntime", "onnxruntime-gpu"):
            try:
                return importlib.metadata.version(candidate)
            except importlib.metadata.PackageNotFoundError:
                continue
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "0"  # importable but without metadata: treat as too old to trust


def onnxExportNeeded(weightsDigests: list[str]) -> bool:
    """True when a .safetensors model of one of these sha256 digests has no trusted ONNX export in the cache yet."""
    return any(not is_trusted(cached_path(digest)) for digest in weightsDigests)


def weightsDigests(options: RunOptions, useT1: bool) -> list[str]:
    """sha256 of each .safetensors model a run may use: the given file, or the shipped models of the run's variant,
    network scale and T1 use (through-plane: the network of each factor, chosen by the slices it gets); none for an
    .onnx file or when none exists."""
    path = options.model_path
    if path is not None:
        return [sha256_of(path)] if path.suffix == ".safetensors" and path.is_file() else []
    try:
        models = super_resolution_models()
    except WeightsError:
        return []
    return [model.sha256 for model in models if model.key == (options.variant, options.network_scale, useT1)]


def runPackages(options: RunOptions, useT1: bool) -> tuple[str, str, bool]:
    """(backend, device, whether an ONNX export is needed): what decides the packages of a run."""
    exportNeeded = options.backend == "onnx" and onnxExportNeeded(weightsDigests(options, useT1))
    return options.backend, options.device, exportNeeded


def missingPackages(backend: str = "torch", device: str = "auto", exportNeeded: bool = False) -> list[Missing]:
    """The packages that a run with this backend needs and that are absent or older than MINIMUM_VERSIONS."""
    names = ["torch", "safetensors"]
    if backend == "onnx":
        names += list(RUNTIME_PACKAGES) + (list(EXPORT_PACKAGES) if exportNeeded else [])
    missing = []
    for name in names:
        installed = installedVersion(name)
        if installed is not None and _recentEnough(installed, MINIMUM_VERSIONS[name]):
            continue
        distribution = "onnxruntime-gpu" if name == "onnxruntime" and device.startswith("cuda") else name
        missing.append(Missing(name, f"{distribution}>={MINIMUM_VERSIONS[name]}", installed, PURPOSES[name]))
    return missing


def consentMessage(missing: list[Missing]) -> str:
    """The question asked before installing anything."""
    lines = "\n".join(f"- {package.describe()}" for package in missing)
    message = _("Cohf-T super-resolution needs these Python packages:\n\n{lines}\n\nInstall them now? PyTorch is "
                "installed through Slicer's PyTorch extension and may take several minutes; Slicer's own numpy and "
                "SimpleITK are left as they are.").format(lines=lines)
    if any(package.name == "torch" for package in missing) and not _pytorchExtension():
        message += _("\n\nThe PyTorch extension is not installed: it will be installed from the Extensions "
                     "Manager, then Slicer must restart.")
    if any(package.name == "torch" and package.installed for package in missing) and "torch" in sys.modules:
        message += _("\n\nAn older PyTorch is already loaded in this Slicer session (by another module): restart "
                     "Slicer after the upgrade.")
    return message


def ensureDependencies(confirm: Callable[[str], bool], backend: str = "torch", device: str = "auto",
                       exportNeeded: bool = False) -> bool:
    """True when every package the run needs is there. Missing or too old ones are installed only when
    confirm(message) returns True (the GUI shows a dialog; a batch script may pass `lambda message: True`)."""
    missing = missingPackages(backend, device, exportNeeded)
    if not missing:
        return True
    if not confirm(consentMessage(missing)):
        logging.info("CohfTSuperRes: installation of %s declined", ", ".join(p.requirement for p in missing))
        return False
    installPackages(missing)
    return not missingPackages(backend, device, exportNeeded)


def _protectingConstraints() -> str:
    """Path of a pip constraints file pinning the numpy and SimpleITK that Slicer ships, so no install changes them."""
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


def installPackages(missing: list[Missing]) -> None:
    """Install (or upgrade) the packages; call only after the user agreed (see ensureDependencies).

    torch goes through the PyTorch extension's PyTorchUtils; where that extension is missing it is installed
    from the Extensions Manager and RestartNeeded is raised (never a plain pip torch, which would not match
    the GPU driver). Everything else goes through pip, with numpy and SimpleITK pinned to Slicer's versions.
    """
    import slicer

    others = [package.requirement for package in missing if package.name != "torch"]
    if any(package.name == "torch" for package in missing):
        _installTorch()
    if others:
        constraints = _protectingConstraints()
        try:
            slicer.util.pip_install([*others, "-c", constraints])
        finally:
            os.remove(constraints)
    importlib.invalidate_caches()  # so that missingPackages() sees what was just installed


def _pytorchExtension():
    """The PyTorch extension's PyTorchUtils module, or None when that extension is not installed."""
    try:
        import PyTorchUtils
    except ImportError:
        return None
    return PyTorchUtils


def _installTorch() -> None:
    """torch through the PyTorch extension; the extension itself from the Extensions Manager when it is missing."""
    import slicer

    PyTorchUtils = _pytorchExtension()
    if PyTorchUtils is None:
        manager = slicer.app.extensionsManagerModel()
        if not manager.isExtensionInstalled("PyTorch"):
            # the user agreed already: no second question; and no restart now (the manager's default), which would
            # close Slicer without asking and lose unsaved work: the user restarts when ready
            interactive, manager.interactive = manager.interactive, False
            try:
                installed = manager.installExtensionFromServer("PyTorch", False)
            finally:
                manager.interactive = interactive
            if not installed:
                raise RuntimeError(_("the PyTorch extension could not be installed from the Extensions Manager; "
                                     "install it there by hand")) from None
        raise RestartNeeded(_("the PyTorch extension was installed: restart Slicer, then press Apply again")) \
            from None
    installed = PyTorchUtils.PyTorchUtilsLogic().installTorch(
        askConfirmation=False, torchVersionRequirement=f">={MINIMUM_TORCH}"  # the user agreed already
    )
    if installed is None:
        raise RuntimeError(_("PyTorch was not installed by the PyTorch extension."))
