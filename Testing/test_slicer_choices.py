"""What the Slicer module offers before Apply, decided without torch: model choices from models.json, a user's
weights file checked like the shipped ones, the documents a user can open, and the .ui file against the parameter
node and the widget code. (The Python packages a run needs: test_slicer_logic.py.)"""

from __future__ import annotations

import pathlib
import re
import typing
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
from CohfTSuperResLib.options import RunOptions
from slicer_helpers import ROOT, module  # noqa: F401  (fixtures)

UI_FILE = ROOT / "CohfTSuperRes" / "Resources" / "UI" / "CohfTSuperRes.ui"


@pytest.fixture
def problem(module):
    """choices.modelProblem of (variant, scale, T1, weights file, backend), with the caches emptied before and after
    (the fixtures below change the model list under an unchanged models.json)."""
    module.choices._offer.cache_clear()
    yield lambda variant, scale, use_t1, path=None, backend="torch": module.choices.modelProblem(
        RunOptions(scale=scale, variant=variant, model_path=path, backend=backend), use_t1)
    module.choices._offer.cache_clear()


@pytest.fixture
def shipped(monkeypatch, problem):
    """Pretend these (variant, scale, use_t1) models ship (the real list changes with retraining)."""
    def use(models):
        monkeypatch.setattr("CohfTSuperResLib.weights.registry.available_models", lambda: list(models))
    return use


# ---------- choices ----------


def test_offer_comes_from_the_shipped_models(module):
    from CohfTSuperResLib.weights.registry import available_models

    offer = module.CohfTSuperResLogic.offer()
    assert offer.models == tuple(available_models()) and offer.problem is None
    in_plane = [m for m in offer.models if m[1] != 1]
    assert set(offer.variants) == {m[0] for m in offer.models} and set(offer.scales) == {m[1] for m in in_plane}
    assert set(offer.noT1Scales) == {m[1] for m in in_plane if not m[2]}
    assert offer.modes == ("in-plane", "through-plane")  # both ship


def test_a_choice_without_a_shipped_model_is_refused_before_apply(module, shipped, problem):
    shipped([("S", 2, True), ("S", 4, True), ("S", 4, False)])
    assert problem("S", 2, True) is None and problem("S", 4, False) is None
    assert "No shipped M x2 model with the T1" in problem("M", 2, True)
    assert "S x3 model with" in problem("S", 3, True) and "S x2, S x4 (with T1); S x4 (without T1)" in problem("S", 3, True)
    assert "S x2 model without the T1" in problem("S", 2, False)  # 'no T1' only where a no-T1 model ships
    offer = module.choices.offer()
    assert (offer.variants, offer.scales, offer.noT1Scales, offer.modes) == (("S",), (2, 4), (4,), ("in-plane",))


def test_a_damaged_model_list_is_a_reason_not_a_crash(module, monkeypatch, problem):
    from CohfTSuperResLib.errors import WeightsError

    def damaged():
        raise WeightsError("the model list models.json is damaged (JSONDecodeError: ...); reinstall")

    monkeypatch.setattr("CohfTSuperResLib.weights.registry.available_models", damaged)
    assert module.choices.offer().models == ()
    assert problem("S", 2, True).startswith("The model list models.json is damaged")


def test_a_weights_file_is_checked_like_the_shipped_models(module, tmp_path, shipped, problem):
    """A user's file decides scale and T1 use from its header (read without torch); the choice must match it."""
    from inference_helpers import save_tiny

    shipped([])
    x3 = save_tiny(tmp_path, 3)
    no_t1 = save_tiny(tmp_path, 4, use_t1=False)
    assert problem("S", 3, True, x3) is None and problem("M", 3, True, x3) is None  # the variant is the file's
    assert "in-plane x3 model" in problem("S", 2, True, x3) and "choose scale 3" in problem("S", 2, True, x3)
    assert "needs the registered HR T1 guide" in problem("S", 3, False, x3)
    assert problem("S", 4, False, no_t1) is None and "trained without a T1" in problem("S", 4, True, no_t1)
    assert module.choices.describeWeightsFile(x3) == module.choices.WeightsFileInfo(3, True)
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "fake.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}" + b" " * 14)
    (tmp_path / "short.safetensors").write_bytes(b"abc")
    cases = {"notes.txt": "not a weights file", "fake.safetensors": "holds no Cohf-T configuration",
             "short.safetensors": "not a safetensors file", "absent.safetensors": "does not exist"}
    for name, reason in cases.items():
        assert reason in problem("S", 2, True, tmp_path / name), name
    assert problem("S", 2, True) is not None  # no weights file: the shipped model, and none ships here
    assert "ONNX model: choose the onnx backend" in problem("S", 2, True, tmp_path / "model.onnx", "torch")


@pytest.mark.slow  # exporting even a tiny network to ONNX takes about 15 s on 2 cores
def test_an_onnx_file_is_described_by_its_metadata(module, tmp_path, problem):
    pytest.importorskip("onnxscript")
    from inference_helpers import tiny_model

    from CohfTSuperResLib.inference.onnx_export import export_onnx

    path = export_onnx(tiny_model(2, use_t1=False), tmp_path / "tiny_x2_noT1.onnx")
    assert module.choices.describeWeightsFile(path) == module.choices.WeightsFileInfo(2, False)
    assert problem("S", 2, False, path, "onnx") is None
    assert "choose scale 2" in problem("S", 4, False, path, "onnx")


# ---------- documents, GUI description ----------


def test_model_card_and_data_licence_can_be_opened(module):
    documents = module.CohfTSuperResLogic.documents()
    assert set(documents) == {"Model card", "Data licence"}
    assert all(path.is_file() for path in documents.values())
    assert "CC-BY" in documents["Data licence"].read_text() and "Lesjak" in documents["Data licence"].read_text()


WIDGET_FOR_TYPE = {  # parameter type -> widget class that Slicer's parameterNodeWrapper connects it to
    bool: "QCheckBox", float: "QDoubleSpinBox", int: "QSpinBox",
}
# Optional[Path] has no GUI connector in the parameterNodeWrapper: the widget keeps it in step with its path field
KEPT_IN_STEP_BY_CODE = {"modelPath": "modelPathLineEdit"}
QT_SPIN_BOX_RANGE = {"QSpinBox": (0, 99), "QDoubleSpinBox": (0.0, 99.99)}  # Qt's defaults where the .ui sets none


def _bound_widgets() -> dict[str, ElementTree.Element]:
    """The .ui's widgets by the parameter (SlicerParameterName) they are bound to."""
    return {prop.find("string").text: widget for widget in ElementTree.parse(UI_FILE).iter("widget")
            for prop in widget.findall("property") if prop.get("name") == "SlicerParameterName"}


def _parameter_types(module) -> dict[str, tuple[object, tuple]]:
    """(type, annotations) of each parameter of the parameter node, as the parameterNodeWrapper reads them."""
    hints = typing.get_type_hints(module.CohfTSuperResParameterNode, include_extras=True)
    return {name: (typing.get_args(hint)[0], typing.get_args(hint)[1:]) if typing.get_origin(hint) is typing.Annotated
            else (hint, ()) for name, hint in hints.items()}


def test_ui_binds_every_parameter_to_a_widget_that_can_show_it(module):
    """Slicer's parameterNodeWrapper connects widgets by SlicerParameterName; a Choice needs a combo box, a bool a
    check box, a node a qMRMLNodeComboBox (the GUI itself can not run here). The weights path, which may be None,
    has a path field of its own."""
    widgets = {name: widget.get("class") for name, widget in _bound_widgets().items()}
    classes = {widget.get("name"): widget.get("class") for widget in ElementTree.parse(UI_FILE).iter("widget")}
    parameters = _parameter_types(module)
    assert set(widgets) == set(parameters) - set(KEPT_IN_STEP_BY_CODE)
    for name, (kind, marks) in parameters.items():
        if name in KEPT_IN_STEP_BY_CODE:
            continue
        if any(isinstance(mark, module.Choice) for mark in marks):
            expected = "QComboBox"
        elif kind is module.vtkMRMLScalarVolumeNode:
            expected = "qMRMLNodeComboBox"
        else:
            expected = WIDGET_FOR_TYPE[kind]
        assert widgets[name] == expected, name
    for name, widget in KEPT_IN_STEP_BY_CODE.items():
        assert classes[widget] == "ctkPathLineEdit" and parameters[name][0] == pathlib.Path | None


def _ui_number(widget: ElementTree.Element, name: str) -> float | None:
    for prop in widget.findall("property"):
        if prop.get("name") == name:
            return float(next(iter(prop)).text)
    return None


def test_every_spin_box_keeps_the_range_of_the_ui(module):
    """Slicer's spin-box connectors set a bound box's range from its parameter's WithinRange, and without one open it
    to any number (the .ui's limits are replaced), which would let the GUI hold values a run refuses: each numeric
    parameter carries the range its .ui box shows, and its default lies inside it."""
    parameters = _parameter_types(module)
    spin_boxes = {name: widget for name, widget in _bound_widgets().items() if widget.get("class") in QT_SPIN_BOX_RANGE}
    assert {"sliceSpacing", "adaptSteps", "sliceGap"} <= set(spin_boxes)
    defaults = module.CohfTSuperResParameterNode()
    for name, widget in spin_boxes.items():
        low, high = QT_SPIN_BOX_RANGE[widget.get("class")]
        ui_range = (_ui_number(widget, "minimum") or low, _ui_number(widget, "maximum") or high)
        ranges = [a for a in parameters[name][1] if isinstance(a, module.WithinRange)]
        assert len(ranges) == 1, f"{name} has no WithinRange: Slicer would open its box to any number"
        assert (ranges[0].minimum, ranges[0].maximum) == ui_range, name
        assert ranges[0].minimum <= getattr(defaults, name) <= ranges[0].maximum, name


def test_parameter_node_gives_the_run_options(module):
    """The GUI state becomes one RunOptions: no weights file is None, a chosen one a path."""
    node = module.CohfTSuperResParameterNode()
    for name, value in (("scale", 3), ("variant", "S"), ("modelPath", None), ("device", "cpu"), ("backend", "torch")):
        setattr(node, name, value)
    assert node.runOptions() == RunOptions(scale=3, device="cpu")
    node.modelPath = Path("/weights/mine.safetensors")
    assert node.runOptions().model_path == Path("/weights/mine.safetensors")
    node.sliceSpacing = 1.5  # applies to the through-plane mode only; 0 is the default spacing
    assert node.runOptions().slice_spacing is None
    node.mode = "through-plane"
    assert node.runOptions().slice_spacing == 1.5 and node.runOptions().network_scale == 1
    node.sliceSpacing = 0.0
    assert node.runOptions().slice_spacing is None and node.runOptions().through_plane
    node.adaptSteps = 300  # the adaptation runs through-plane with the torch backend only
    assert node.runOptions().adapt_steps == 300
    node.backend = "onnx"
    assert node.runOptions().adapt_steps == 0
    node.backend, node.mode = "torch", "in-plane"
    assert node.runOptions().adapt_steps == 0
    node.sliceProfile, node.sliceGap = "box", 0.1  # the consistency with the thick slices is through-plane's
    assert node.runOptions() == RunOptions(scale=3, device="cpu", model_path=Path("/weights/mine.safetensors"))
    node.mode = "through-plane"
    assert (node.runOptions().slice_profile, node.runOptions().slice_gap) == ("box", 0.1)


def test_every_widget_the_module_uses_is_in_the_ui_file(module):
    names = {widget.get("name") for widget in ElementTree.parse(UI_FILE).iter("widget")}
    used = set(re.findall(r"self\.ui\.(\w+)", Path(module.__file__).read_text()))
    assert used and used <= names, used - names
