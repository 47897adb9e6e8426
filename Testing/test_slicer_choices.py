"""What the Slicer module offers before Apply, decided without torch: model choices from models.json, a user's
weights file checked like the shipped ones, the Python packages a run needs (and their installation only after
consent), the documents a user can open, and the .ui file against the parameter node and the widget code."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import sys
import tomllib
import types
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
from slicer_helpers import ROOT, module, slicer, tiny_weights  # noqa: F401  (fixtures)

UI_FILE = ROOT / "CohfTSuperRes" / "Resources" / "UI" / "CohfTSuperRes.ui"


@pytest.fixture
def shipped(monkeypatch):
    """Pretend these (variant, scale, use_t1) models ship (the real list changes with retraining)."""
    def use(models):
        monkeypatch.setattr("CohfTSuperResLib.models_registry.available_models", lambda: list(models))
    return use


# ---------- choices ----------


def test_offer_comes_from_the_shipped_models(module):
    from CohfTSuperResLib.models_registry import available_models

    offer = module.CohfTSuperResLogic.offer()
    assert offer.models == tuple(available_models()) and offer.problem is None
    assert set(offer.variants) == {m[0] for m in offer.models} and set(offer.scales) == {m[1] for m in offer.models}
    assert set(offer.noT1Scales) == {m[1] for m in offer.models if not m[2]}


def test_a_choice_without_a_shipped_model_is_refused_before_apply(module, shipped):
    shipped([("S", 2, True), ("S", 4, True), ("S", 4, False)])
    problem = module.choices.modelProblem
    assert problem("S", 2, True) is None and problem("S", 4, False) is None
    assert "No shipped model for variant M at x2 with the T1" in problem("M", 2, True)
    assert "at x3 with" in problem("S", 3, True) and "S x2, S x4 (with T1); S x4 (without T1)" in problem("S", 3, True)
    assert "at x2 without the T1" in problem("S", 2, False)  # 'no T1' only where a no-T1 model ships
    offer = module.choices.offer()
    assert (offer.variants, offer.scales, offer.noT1Scales) == (("S",), (2, 4), (4,))


def test_a_damaged_model_list_is_a_reason_not_a_crash(module, monkeypatch):
    from CohfTSuperResLib.errors import WeightsError

    def damaged():
        raise WeightsError("the model list models.json is damaged (JSONDecodeError: ...); reinstall")

    monkeypatch.setattr("CohfTSuperResLib.models_registry.available_models", damaged)
    assert module.choices.offer().models == ()
    assert module.choices.modelProblem("S", 2, True).startswith("The model list models.json is damaged")


def test_a_weights_file_is_checked_like_the_shipped_models(module, tmp_path, shipped):
    """A user's file decides scale and T1 use from its header (read without torch); the choice must match it."""
    from inference_helpers import save_tiny

    shipped([])
    x3 = save_tiny(tmp_path, 3)
    no_t1 = save_tiny(tmp_path, 4, use_t1=False)
    problem = module.choices.modelProblem
    assert problem("S", 3, True, x3) is None and problem("M", 3, True, x3) is None  # the variant is the file's
    assert "super-resolves x3: choose scale 3" in problem("S", 2, True, x3)
    assert "needs the T1 guide" in problem("S", 3, False, x3)
    assert problem("S", 4, False, no_t1) is None and "trained without a T1" in problem("S", 4, True, no_t1)
    assert module.choices.describeWeightsFile(x3) == module.choices.WeightsFileInfo(3, True)
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "fake.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}" + b" " * 14)
    (tmp_path / "short.safetensors").write_bytes(b"abc")
    cases = {"notes.txt": "not a weights file", "fake.safetensors": "holds no Cohf-T configuration",
             "short.safetensors": "not a safetensors file", "absent.safetensors": "does not exist"}
    for name, reason in cases.items():
        assert reason in problem("S", 2, True, tmp_path / name), name
    assert problem("S", 2, True, ".") is not None  # an empty path field means 'the shipped model'; none ships here
    assert "ONNX model: choose the onnx backend" in problem("S", 2, True, tmp_path / "model.onnx", "torch")


def test_an_onnx_file_is_described_by_its_metadata(module, tmp_path):
    pytest.importorskip("onnxscript")
    from inference_helpers import tiny_model

    from CohfTSuperResLib.onnx_backend import export_onnx

    path = export_onnx(tiny_model(2, use_t1=False), tmp_path / "tiny_x2_noT1.onnx")
    assert module.choices.describeWeightsFile(path) == module.choices.WeightsFileInfo(2, False)
    assert module.choices.modelProblem("S", 2, False, path, "onnx") is None
    assert "choose scale 2" in module.choices.modelProblem("S", 4, False, path, "onnx")


def test_header_key_is_the_librarys():
    from CohfTSuperResLib.weights import CONFIG_KEY

    sys.path.insert(0, str(ROOT / "CohfTSuperRes"))
    try:
        from CohfTSuperResSlicerLib import choices
    finally:
        sys.path.remove(str(ROOT / "CohfTSuperRes"))
    assert choices.CONFIG_KEY == CONFIG_KEY


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


def test_missing_and_too_old_packages_are_reported_not_installed(module, installed, monkeypatch):
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
    from CohfTSuperResLib.onnx_cache import cached_path, file_sha256, record

    logic = module.CohfTSuperResLogic
    onnx_names = {"onnx", "onnxscript"}

    def needs_export() -> bool:
        monkeypatch.setattr(module.dependencies, "installedVersion", lambda name: None if name in onnx_names else "9")
        return onnx_names <= {p.name for p in logic.missingPackages("onnx", "cpu", modelPath=tiny_weights)}

    assert needs_export()
    cached = cached_path(file_sha256(tiny_weights))
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"an exported model")
    assert needs_export()  # no recorded digest: not trusted
    record(cached)
    assert not needs_export()
    onnx_file = tmp_path / "mine.onnx"
    assert not onnx_names & {p.name for p in logic.missingPackages("onnx", modelPath=onnx_file)}


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
    """Declining installs nothing; agreeing installs exactly what is missing, torch through pip when the PyTorch
    extension is absent, with Slicer's numpy and SimpleITK pinned by a constraints file that is removed after."""
    import tempfile

    versions = {"safetensors": "0.8.0"}
    installed(versions)
    monkeypatch.setitem(sys.modules, "PyTorchUtils", None)  # the PyTorch extension is not installed
    calls = []

    def pip_install(requirements):
        constraints = Path(requirements[requirements.index("-c") + 1])
        calls.append((requirements[: requirements.index("-c")], constraints.read_text().split()))
        versions.update(torch="2.5.0", onnxruntime="1.20.0")

    monkeypatch.setattr(slicer.util, "pip_install", pip_install, raising=False)
    questions = []
    ensure = module.dependencies.ensureDependencies
    assert not ensure(lambda text: questions.append(text) or False, "onnx", "cpu")
    assert calls == [] and "torch>=2.2 (not installed" in questions[0] and "onnxruntime>=1.17" in questions[0]
    assert ensure(lambda text: True, "onnx", "cpu")
    pins = [f"numpy=={importlib.metadata.version('numpy')}", f"SimpleITK=={importlib.metadata.version('SimpleITK')}"]
    assert calls == [(["torch>=2.2", "onnxruntime>=1.17"], pins)]
    assert not list(Path(tempfile.gettempdir()).glob("CohfTSuperRes-constraints-*"))
    assert ensure(lambda text: pytest.fail("asked although nothing is missing"), "onnx", "cpu")


def test_old_torch_is_upgraded_through_the_pytorch_extension(module, installed, monkeypatch):
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


# ---------- documents, GUI description ----------


def test_model_card_and_data_licence_can_be_opened(module):
    documents = module.CohfTSuperResLogic.documents()
    assert set(documents) == {"Model card", "Data licence"}
    assert all(path.is_file() for path in documents.values())
    assert "CC-BY" in documents["Data licence"].read_text() and "Lesjak" in documents["Data licence"].read_text()


WIDGET_FOR_TYPE = {  # parameter type -> widget class that Slicer's parameterNodeWrapper connects it to
    "bool": "QCheckBox", "pathlib.Path": "ctkPathLineEdit", "vtkMRMLScalarVolumeNode": "qMRMLNodeComboBox",
}


def test_ui_binds_every_parameter_to_a_widget_that_can_show_it(module):
    """Slicer's parameterNodeWrapper connects widgets by SlicerParameterName; a Choice needs a combo box, a bool a
    check box, a Path a ctkPathLineEdit, a node a qMRMLNodeComboBox (the GUI itself can not run here)."""
    widgets = {}
    for widget in ElementTree.parse(UI_FILE).iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                widgets[prop.find("string").text] = widget.get("class")
    annotations = module.CohfTSuperResParameterNode.__annotations__
    assert set(widgets) == set(annotations)
    for name, annotation in annotations.items():
        expected = "QComboBox" if "Choice" in annotation else WIDGET_FOR_TYPE[annotation]
        assert widgets[name] == expected, name


def test_every_widget_the_module_uses_is_in_the_ui_file(module):
    names = {widget.get("name") for widget in ElementTree.parse(UI_FILE).iter("widget")}
    used = set(re.findall(r"self\.ui\.(\w+)", Path(module.__file__).read_text()))
    assert used and used <= names, used - names
