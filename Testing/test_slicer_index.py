"""The extension passes the Extensions Index's checks that run offline (tools/check_extension_index.py), and
the checker finds each rule broken on a copy: literal http URLs in CMakeLists.txt naming files of the
repository, the Index entry against the schema, category, names, licence, dependencies, icon size."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import check_extension_index  # noqa: E402

FILES = ("CMakeLists.txt", "CohfTSuperRes.json", "LICENSE", "CohfTSuperRes/Resources/Icons/CohfTSuperRes.png",
         "docs/images/slicer_module.png")


def test_the_repository_passes_the_offline_index_checks():
    assert check_extension_index.problems(ROOT) == []
    process = subprocess.run([sys.executable, str(ROOT / "tools" / "check_extension_index.py")], capture_output=True,
                             text=True, timeout=60)
    assert process.returncode == 0 and process.stdout.startswith("0 problem(s)"), process.stdout


def test_cmake_metadata_are_literal_and_agree_with_the_index_entry():
    settings = check_extension_index.cmake_settings((ROOT / "CMakeLists.txt").read_text())
    entry = json.loads((ROOT / "CohfTSuperRes.json").read_text())
    assert settings["project"] == "CohfTSuperRes" and entry["build_dependencies"] == ["PyTorch"]
    repository = entry["scm_url"].removeprefix("https://github.com/")
    assert settings["HOMEPAGE"].startswith(f"https://github.com/{repository}/")
    for url in [settings["ICONURL"], *settings["SCREENSHOTURLS"].split()]:
        assert url.startswith(f"https://raw.githubusercontent.com/{repository}/main/") and "${" not in url


def _replace(path: str, old: str, new: str) -> Callable[[Path], None]:
    def change(root: Path) -> None:
        text = (root / path).read_text()
        assert old in text, old
        (root / path).write_text(text.replace(old, new))
    return change


def _entry(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        entry = json.loads((root / "CohfTSuperRes.json").read_text())
        change(entry)
        (root / "CohfTSuperRes.json").write_text(json.dumps(entry, indent=2) + "\n")
    return edit


def _small_icon(root: Path) -> None:
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((64, 64), np.uint8)),
                    str(root / "CohfTSuperRes/Resources/Icons/CohfTSuperRes.png"))


def _crlf(root: Path) -> None:
    path = root / "CohfTSuperRes.json"
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))


ICON = "https://raw.githubusercontent.com/CohfTSuperRes/SlicerCohfTSuperRes/main/CohfTSuperRes/Resources/Icons/"
SHOT = "https://raw.githubusercontent.com/CohfTSuperRes/SlicerCohfTSuperRes/main/docs/images/slicer_module.png"
BROKEN = {
    "variable in the icon URL": (_replace("CMakeLists.txt", f'"{ICON}', '"${REPOSITORY}/raw/main/CohfTSuperRes/'
                                          'Resources/Icons/'), "EXTENSION_ICONURL '${REPOSITORY}"),
    "variable in a screenshot URL": (_replace("CMakeLists.txt", SHOT, "${REPOSITORY}/docs/images/slicer_module.png"),
                                     "should be a valid URL starting with 'http'"),
    "space the Index's pattern does not allow": (_replace("CMakeLists.txt", 'slicer_module.png")', 'slicer_module.png" )'),
                                                  "no EXTENSION_SCREENSHOTURLS found"),
    "screenshot not committed": (lambda root: (root / "docs/images/slicer_module.png").unlink(), "not in the repository"),
    "no licence": (lambda root: (root / "LICENSE").unlink(), "no license file"),
    "unknown category": (_entry(lambda e: e.update(category="Super-resolution")), "not one the Index accepts"),
    "dependencies differ": (_replace("CMakeLists.txt", 'set(EXTENSION_DEPENDS "PyTorch")', 'set(EXTENSION_DEPENDS "NA")'),
                            "differs from build_dependencies"),
    "icon not 128 x 128": (_small_icon, "is 64 x 64 pixels, not 128 x 128"),
    "field outside the schema": (_entry(lambda e: e.update(name="CohfTSuperRes")), "field name, which the schema"),
    "wrong type": (_entry(lambda e: e.update(tier="1")), "tier must be a int"),
    "tier out of range": (_entry(lambda e: e.update(tier=7)), "tier must be from 1 to 5"),
    "required field missing": (_entry(lambda e: e.pop("scm_url")), "lacks the required field scm_url"),
    "CRLF line endings": (_crlf, "LF only"),
    "repository name": (_entry(lambda e: e.update(scm_url="https://github.com/CohfTSuperRes/CohfTSuperRes")),
                        "repository name 'CohfTSuperRes' of scm_url should start with 'Slicer'"),
    "URL of another repository": (_entry(lambda e: e.update(scm_url="https://github.com/someone/SlicerOther")),
                                  "is not a file of the published repository"),
    "scm_url scheme": (_entry(lambda e: e.update(scm_url="ftp://example.org/SlicerCohfTSuperRes")),
                       "scheme git or https"),
    "project name": (_replace("CMakeLists.txt", "project(CohfTSuperRes)", "project(SlicerCohfT)"),
                     "no Index entry SlicerCohfT.json"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_the_checker_finds_each_broken_rule(case, tmp_path):
    for name in FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / name, tmp_path / name)
    assert check_extension_index.problems(tmp_path) == []
    change, message = BROKEN[case]
    change(tmp_path)
    found = check_extension_index.problems(tmp_path)
    assert any(message in problem for problem in found), found
