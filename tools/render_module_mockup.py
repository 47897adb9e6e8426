"""Render docs/images/slicer_module.png: the module's panel as Qt draws its .ui file, beside the demo's figure.

    python3 -m venv /tmp/uivenv && /tmp/uivenv/bin/pip install PySide6-Essentials
    cohft-sr demo -o /tmp/demo                     # the comparison figure on the sample data
    QT_QPA_PLATFORM=offscreen /tmp/uivenv/bin/python tools/render_module_mockup.py /tmp/demo/comparison.png \
        docs/images/slicer_module.png

No 3D Slicer runs where this project is developed, so this is NOT a Slicer screenshot. PySide6 (in a
throwaway virtual environment, never a dependency of the project) loads CohfTSuperRes.ui after its
Slicer and CTK widgets are replaced by labelled Qt stand-ins (a node selector becomes a combo box
showing the node name, a collapsible button a group box). The panel is shown before Apply with the
sample data selected, as Slicer's parameter node would fill it. A maintainer replaces the image with
a real screenshot before submitting the extension to the Extensions Index (docs/slicer.md).
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from PySide6.QtCore import QBuffer, QByteArray, QIODevice, Qt
from PySide6.QtGui import QColor, QFont, QImage, QPainter
from PySide6.QtUiTools import QUiLoader
from PySide6.QtWidgets import QApplication, QComboBox, QGroupBox, QLineEdit, QWidget

UI = Path(__file__).resolve().parents[1] / "CohfTSuperRes" / "Resources" / "UI" / "CohfTSuperRes.ui"
STAND_INS = {"qMRMLWidget": "QWidget", "qMRMLNodeComboBox": "QComboBox", "ctkCollapsibleButton": "QGroupBox",
             "ctkPathLineEdit": "QLineEdit"}
SELECTED = {"t2Selector": "patient26_T2_LR", "t1Selector": "patient26_T1", "outputSelector": "Create new volume",
            "scaleComboBox": "2", "variantComboBox": "S", "deviceComboBox": "auto", "backendComboBox": "torch"}
CAPTION = ("Mock-up, not a Slicer screenshot: left, the module panel (its .ui drawn by Qt outside Slicer, Slicer and "
           "CTK widgets as stand-ins); right, cohft-sr demo on the sample data (open_ms patient26, held out).")


def stand_in_ui() -> bytes:
    """The .ui file with the Slicer / CTK widget classes replaced by Qt classes (collapsed sections keep a title)."""
    tree = ElementTree.parse(UI)
    for widget in tree.iter("widget"):
        if widget.get("class") in STAND_INS:
            collapsed = any(p.get("name") == "collapsed" for p in widget.findall("property"))
            for prop in widget.findall("property"):
                if prop.get("name") == "text" and widget.get("class") == "ctkCollapsibleButton":
                    prop.set("name", "title")
                    prop.find("string").text = ("\u25b8 " if collapsed else "\u25be ") + prop.find("string").text
                if prop.get("name") in ("collapsed", "nodeTypes", "showChildNodeTypes", "noneEnabled", "addEnabled",
                                        "removeEnabled", "renameEnabled", "noneDisplay"):
                    widget.remove(prop)
            widget.set("class", STAND_INS[widget.get("class")])
    customs = tree.getroot().find("customwidgets")
    if customs is not None:
        tree.getroot().remove(customs)
    return ElementTree.tostring(tree.getroot())


def panel() -> QImage:
    data = QByteArray(stand_in_ui())
    buffer = QBuffer(data)
    buffer.open(QIODevice.ReadOnly)
    widget = QUiLoader().load(buffer)
    for name, text in SELECTED.items():
        widget.findChild(QComboBox, name).addItem(text)
    widget.findChild(QLineEdit, "modelPathLineEdit").setPlaceholderText("(shipped model)")
    for name in ("useT1CheckBox", "showResultCheckBox"):
        widget.findChild(QWidget, name).setChecked(True)
    for box in widget.findChildren(QGroupBox):
        if box.title().startswith("\u25b8"):  # a collapsed section shows its title only
            for child in box.findChildren(QWidget):
                child.hide()
            box.setFixedHeight(24)
    widget.findChild(QWidget, "progressBar").hide()
    widget.findChild(QWidget, "applyButton").setEnabled(True)
    widget.resize(380, widget.sizeHint().height())
    return widget.grab().toImage()


def compose(left: QImage, figure: QImage) -> QImage:
    figure = figure.scaledToHeight(min(figure.height(), left.height()), Qt.SmoothTransformation)
    margin, caption_height = 12, 28
    width = left.width() + figure.width() + 3 * margin
    height = max(left.height(), figure.height()) + caption_height + 2 * margin
    image = QImage(width, height, QImage.Format_RGB32)
    image.fill(QColor(240, 240, 240))
    painter = QPainter(image)
    painter.setFont(QFont("DejaVu Sans", 9))
    painter.drawText(margin, margin, width - 2 * margin, caption_height, Qt.AlignLeft | Qt.TextWordWrap, CAPTION)
    painter.drawImage(margin, margin + caption_height, left)
    painter.drawImage(2 * margin + left.width(), margin + caption_height, figure)
    painter.end()
    return image


def main() -> None:
    figure_path, output = Path(sys.argv[1]), Path(sys.argv[2])
    QApplication(sys.argv[:1])
    image = compose(panel(), QImage(str(figure_path)))
    output.parent.mkdir(parents=True, exist_ok=True)
    if not image.save(str(output)):
        raise SystemExit(f"cannot write {output}")
    print(f"wrote {output} ({image.width()} x {image.height()})")


if __name__ == "__main__":
    main()
