"""The extension's build description is complete and installs a layout in which the module finds library and models.

Real Slicer (and so a real extension build) cannot be installed here. Instead
`cmake -P Testing/cmake/check_extension.cmake` evaluates the top-level
CMakeLists.txt and CohfTSuperRes/CMakeLists.txt against test-only stand-ins of
the Slicer and CTK macros (Testing/cmake/SlicerStandin.cmake: same arguments,
same missing-file checks, same build and install paths as the real ones), which
write every file that would be copied and where it would be installed. The
checks below read that list.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECK_SCRIPT = Path(__file__).resolve().parent / "cmake" / "check_extension.cmake"
QT_SCRIPTED = "lib/Slicer-5.8/qt-scripted-modules"
MODULE = "CohfTSuperRes"

pytestmark = pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")


def evaluate(source: Path, scratch: Path) -> tuple[subprocess.CompletedProcess, dict]:
    """Run the check script on a source tree; the process and the parsed manifest."""
    manifest = scratch / "manifest.tsv"
    process = subprocess.run(
        ["cmake", f"-DSOURCE_DIR={source}", f"-DBINARY_DIR={scratch / 'build'}", f"-DMANIFEST={manifest}", "-P", str(CHECK_SCRIPT)],
        capture_output=True, text=True, timeout=60,
    )
    parsed = {"file": [], "meta": {}, "module": [], "test": [], "project": [], "cpack": []}
    for line in manifest.read_text().splitlines() if manifest.exists() else []:
        kind, *fields = line.split("\t")
        if kind == "meta":
            parsed["meta"][fields[0]] = fields[1]
        else:
            parsed[kind].append(tuple(fields))
    return process, parsed


def expected_sources(source: Path) -> set[Path]:
    """Everything that must ship: module and library Python files, the module's UI and icon, every model file."""
    files = {p for p in (source / "CohfTSuperResLib").rglob("*.py") if "__pycache__" not in p.parts}
    files |= {p for p in (source / MODULE).rglob("*.py") if "__pycache__" not in p.parts and "Testing" not in p.parts}
    files |= {source / MODULE / "Resources" / "UI" / f"{MODULE}.ui", source / MODULE / "Resources" / "Icons" / f"{MODULE}.png"}
    for folder in (source / "Resources" / "Models", source / "Resources" / "SampleData"):
        if folder.is_dir():
            files |= {p for p in folder.rglob("*")
                      if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)}
    return files


def unlisted(source: Path, manifest: dict) -> set[Path]:
    listed = {Path(src) for _, src, _ in manifest["file"]}
    return expected_sources(source) - listed


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> dict:
    process, parsed = evaluate(ROOT, tmp_path_factory.mktemp("cmake"))
    assert process.returncode == 0, process.stderr
    return parsed


def test_extension_metadata_in_wizard_form(manifest):
    meta = manifest["meta"]
    assert set(meta) == {"HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "DEPENDS"}
    assert "PyTorch" in meta["DEPENDS"].split(";")
    assert all(meta[key].startswith("https://") for key in ("HOMEPAGE", "ICONURL", "SCREENSHOTURLS"))
    assert manifest["project"] == [(MODULE,)] and manifest["cpack"] == [(MODULE,)]
    assert [name for name, _ in manifest["module"]] == [MODULE]
    assert manifest["test"] == [(str(ROOT / MODULE / f"{MODULE}.py"),)]  # the self-test as a ctest


def test_every_file_listed_exists_and_every_file_that_must_ship_is_listed(manifest):
    for _, src, _ in manifest["file"]:
        assert Path(src).is_file(), src
    assert unlisted(ROOT, manifest) == set(), "add these to CohfTSuperRes/CMakeLists.txt"
    manifest_file = ROOT / "Resources" / "Models" / "models.json"
    if manifest_file.is_file():
        listed = {Path(src) for _, src, _ in manifest["file"]}
        for entry in json.loads(manifest_file.read_text())["models"]:
            assert ROOT / "Resources" / "Models" / entry["file"] in listed, entry["file"]


def test_install_layout_module_library_and_models_side_by_side(manifest):
    installed = {}
    for _, src, destination in manifest["file"]:
        assert not destination.startswith("NOT-INSTALLED"), f"{src} would be built but not installed"
        assert destination not in installed, f"{src} and {installed[destination]} install to the same path"
        installed[destination] = src
    by_source = {Path(src): destination for destination, src in installed.items()}
    assert by_source[ROOT / MODULE / f"{MODULE}.py"] == f"{QT_SCRIPTED}/{MODULE}.py"
    for resource in ("UI/CohfTSuperRes.ui", "Icons/CohfTSuperRes.png"):  # where resourcePath() looks
        assert by_source[ROOT / MODULE / "Resources" / resource] == f"{QT_SCRIPTED}/Resources/{resource}"
    for source, destination in by_source.items():
        if source.is_relative_to(ROOT / "CohfTSuperResLib"):
            assert destination == f"{QT_SCRIPTED}/{source.relative_to(ROOT).as_posix()}"
        if source.is_relative_to(ROOT / "Resources"):  # models and sample data in the library's own folder
            assert destination == f"{QT_SCRIPTED}/CohfTSuperResLib/{source.relative_to(ROOT).as_posix()}"
        if source.is_relative_to(ROOT / MODULE / f"{MODULE}SlicerLib"):  # the module's helpers, as a package
            assert destination == f"{QT_SCRIPTED}/{source.relative_to(ROOT / MODULE).as_posix()}"
    # Slicer loads every .py file directly in qt-scripted-modules as a module: only the module itself may be there
    assert [d for d in installed if d.startswith(f"{QT_SCRIPTED}/") and d.count("/") == QT_SCRIPTED.count("/") + 1
            and d.endswith(".py")] == [f"{QT_SCRIPTED}/{MODULE}.py"]


def test_installed_tree_imports_the_library_and_finds_the_models(manifest, tmp_path):
    """Copy the files as the install would, then ask the installed library where its models are."""
    for _, src, destination in manifest["file"]:
        target = tmp_path / destination
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
    qt_scripted = tmp_path / QT_SCRIPTED
    code = (
        "import json, CohfTSuperResLib, CohfTSuperResLib.weights.registry as r, CohfTSuperResLib.data.sample_data as d;"
        "print(json.dumps([CohfTSuperResLib.__file__, str(r.models_dir()), [str(m.path) for m in r.shipped_models()],"
        " [str(p) for p in d.sample_files().paths.values()]]))"
    )
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("COHFT_SR_MODELS", "COHFT_SR_SAMPLE_DATA", "PYTHONPATH")}
    environment["PYTHONPATH"] = str(qt_scripted)
    process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=environment, timeout=120)
    assert process.returncode == 0, process.stderr
    library_file, models_dir, model_paths, sample_paths = json.loads(process.stdout.splitlines()[-1])
    assert Path(library_file) == qt_scripted / "CohfTSuperResLib" / "__init__.py"
    assert Path(models_dir) == qt_scripted / "CohfTSuperResLib" / "Resources" / "Models"
    assert all(Path(path).is_file() and Path(path).is_relative_to(qt_scripted) for path in model_paths)
    assert len(sample_paths) == 3  # checked against their sha256 in the installed tree
    assert all(Path(path).parent == qt_scripted / "CohfTSuperResLib" / "Resources" / "SampleData" for path in sample_paths)


def test_check_fails_on_a_missing_or_an_unlisted_file(tmp_path):
    """The check has teeth: a listed file that is gone stops CMake; a new file that is not listed is reported."""
    source = tmp_path / "source"
    for part in ("CMakeLists.txt", MODULE, "CohfTSuperResLib", "Resources"):
        if (ROOT / part).is_dir():
            shutil.copytree(ROOT / part, source / part, ignore=shutil.ignore_patterns("__pycache__"))
        elif (ROOT / part).is_file():
            source.mkdir(exist_ok=True)
            shutil.copyfile(ROOT / part, source / part)
    (source / "CohfTSuperResLib" / "inference" / "tiling.py").unlink()
    process, _ = evaluate(source, tmp_path / "missing")
    assert process.returncode != 0 and "tiling.py" in process.stderr

    shutil.copyfile(ROOT / "CohfTSuperResLib" / "inference" / "tiling.py", source / "CohfTSuperResLib" / "inference" / "tiling.py")
    process, parsed = evaluate(source, tmp_path / "complete")
    before = unlisted(source, parsed)  # empty, unless the library grew since CMakeLists.txt was updated
    (source / "CohfTSuperResLib" / "new_feature.py").write_text("")
    (source / "Resources" / "Models").mkdir(parents=True, exist_ok=True)
    (source / "Resources" / "Models" / "extra.safetensors").write_bytes(b"")
    process, parsed = evaluate(source, tmp_path / "unlisted")
    assert process.returncode == 0, process.stderr
    assert unlisted(source, parsed) - before == {source / "CohfTSuperResLib" / "new_feature.py"}  # models are globbed
