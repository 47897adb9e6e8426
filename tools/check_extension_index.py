"""The 3D Slicer Extensions Index's checks that need no network, run on this repository.

    python tools/check_extension_index.py [REPOSITORY]      # prints each problem; exit status 1 if any

Written for this project from the rules of `scripts/check_description_files.py` and of the catalog entry
schema v1.0.1 in Slicer/ExtensionsIndex (read at its commit 07f1d1b): the Index entry `<extension>.json`
(JSON, LF line endings, the schema's fields and types, category, names, scm_url), the top-level
CMakeLists.txt as the Index reads it (as text: project name, literal icon and screenshot URLs that start
with http), a licence file in the root, the repository's size, and two rules of this project: the
extension dependencies of CMakeLists.txt are the entry's build_dependencies, and the icon is a 128 x 128
PNG. What the Index also checks and this can not, offline: cloning scm_url at scm_revision, the GitHub
topic `3d-slicer-extension`, that the URLs answer with an image, and that each build dependency is in the
Index. Instead the icon and screenshot URLs must name files of this repository on the published branch.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.parse
from pathlib import Path

SCHEMA_FIELDS = {  # field: (type, allowed values or (minimum, maximum) or None); no other field is allowed
    "$schema": (str, None), "category": (str, None), "scm_url": (str, None), "scm_revision": (str, None),
    "scm_type": (str, ("git", "local")), "build_dependencies": (list, None), "build_subdirectory": (str, None),
    "enabled": (bool, None), "tier": (int, (1, 5)),
}
REQUIRED_FIELDS = ("$schema", "category", "scm_url")
SCM_SCHEMES = ("git", "https")
REPOSITORY_PREFIXES = ("Slicer", "Slicer-", "Slicer_", "SlicerExtension-", "SlicerExtension_")
LICENSE_NAMES = ("LICENSE", "LICENCE", "License.txt", "license.txt", "LICENSE.txt", "COPYING", "COPYING.txt")
SIZE_LIMIT_BYTES = 100 * 2**20
ICON_SIZE = (128, 128)
# The categories the Index accepts (ACCEPTED_EXTENSION_CATEGORIES of check_description_files.py at 07f1d1b)
CATEGORIES = (
    "Active Learning", "Analysis", "Auto3dgm", "BigImage", "Cardiac", "Chest Imaging Platform", "Conda", "Converters",
    "DICOM", "DSCI", "Developer Tools", "Diffusion", "Examples", "Exporter", "FTV Segmentation", "Filtering",
    "Filtering.Morphology", "Filtering.Vesselness", "Holographic Display", "Image Synthesis", "IGT", "Informatics",
    "Netstim", "Neuroimaging", "Nuclear Medicine", "Orthodontics", "Osteotomy Planning", "Otolaryngology",
    "Photogrammetry", "Pipelines", "Planning", "Printing", "Quantification", "Radiotherapy", "Registration", "Remote",
    "Rendering", "SPHARM", "Segmentation", "Sequences", "Shape Analysis", "Shape Regression", "Shape Visualization",
    "Simulation", "SlicerCMF", "SlicerMorph", "Spectral Imaging", "Supervisely", "Surface Models", "SurfaceLearner",
    "Tomographic Reconstruction", "Tracking", "Tractography", "Training", "Ultrasound", "Utilities",
    "Vascular Modeling Toolkit", "Virtual Reality", "VisSimTools", "Web System Tools", "Wizards",
)


def cmake_settings(text: str) -> dict[str, str]:
    """project() name and the EXTENSION_* values as the Index reads them: literal, quoted strings only."""
    settings = {}
    project = re.search(r"project\s*\(\s*([^\s)]+)", text, re.IGNORECASE)
    if project:
        settings["project"] = project[1].strip("\"'")
    patterns = {  # the Index's own patterns: an icon may have spaces before ')', screenshots may not
        "ICONURL": r'set\s*\(EXTENSION_ICONURL\s*"([^"]+)"[ ]*\)',
        "SCREENSHOTURLS": r'set\s*\(EXTENSION_SCREENSHOTURLS\s*"([^"]+)"\)',
        "DEPENDS": r'set\s*\(EXTENSION_DEPENDS\s*"([^"]*)"[ ]*\)',
        "HOMEPAGE": r'set\s*\(EXTENSION_HOMEPAGE\s*"([^"]+)"[ ]*\)',
        "CATEGORY": r'set\s*\(EXTENSION_CATEGORY\s*"([^"]+)"[ ]*\)',
    }
    for key, pattern in patterns.items():
        match = re.search(pattern, text, re.IGNORECASE)
        if match:
            settings[key] = match[1].strip()
    return settings


def entry_problems(name: str, path: Path) -> tuple[list[str], dict]:
    """Problems of the Index entry file itself, and its parsed content."""
    if not path.is_file():
        return [f"no Index entry {path.name} in the repository root"], {}
    raw = path.read_bytes()
    problems = ["the entry has CR or CRLF line endings; the Index wants LF only"] if b"\r" in raw else []
    try:
        entry = json.loads(raw)
    except json.JSONDecodeError as error:
        return [*problems, f"the entry is not valid JSON: {error}"], {}
    if not isinstance(entry, dict):
        return [*problems, "the entry is not a JSON object"], {}
    problems += [f"the entry lacks the required field {field}" for field in REQUIRED_FIELDS if field not in entry]
    for field, value in entry.items():
        if field not in SCHEMA_FIELDS:
            problems.append(f"the entry has the field {field}, which the schema does not allow")
            continue
        kind, allowed = SCHEMA_FIELDS[field]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            problems.append(f"the entry's {field} must be a {kind.__name__}, not {type(value).__name__}")
        elif kind is list and not all(isinstance(item, str) for item in value):
            problems.append(f"the entry's {field} must list strings")
        elif isinstance(allowed, tuple) and kind is str and value not in allowed:
            problems.append(f"the entry's {field} must be one of {', '.join(allowed)}")
        elif isinstance(allowed, tuple) and kind is int and not allowed[0] <= value <= allowed[1]:
            problems.append(f"the entry's {field} must be from {allowed[0]} to {allowed[1]}")
    if name.lower().startswith("slicer"):
        problems.append(f"the extension name {name} should not start with 'Slicer'")
    if entry.get("category") not in CATEGORIES:
        problems.append(f"the category {entry.get('category')!r} is not one the Index accepts")
    scm_url = entry.get("scm_url", "")
    if isinstance(scm_url, str) and scm_url:
        scheme = urllib.parse.urlsplit(scm_url).scheme
        if "://" not in scm_url or scheme not in SCM_SCHEMES:
            problems.append(f"scm_url {scm_url} must be scheme://host/path with scheme {' or '.join(SCM_SCHEMES)}")
        repository = Path(urllib.parse.urlsplit(scm_url.strip().strip("/")).path).stem
        if not repository.startswith(REPOSITORY_PREFIXES):
            problems.append(f"the repository name {repository!r} of scm_url should start with 'Slicer'")
    return problems, entry


def _png_size(path: Path) -> tuple[int, int] | None:
    """(width, height) of a PNG file, None when it is not one."""
    head = path.read_bytes()[:24]
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def _published_prefix(entry: dict) -> str:
    """Where the files of the published repository are served: raw.githubusercontent.com/<owner>/<name>/<revision>/."""
    repository = urllib.parse.urlsplit(str(entry.get("scm_url", ""))).path.strip("/").removesuffix(".git")
    return f"https://raw.githubusercontent.com/{repository}/{entry.get('scm_revision', 'main')}/"


def url_problems(root: Path, url: str, label: str, entry: dict) -> list[str]:
    """An image URL must start with http and name a PNG of this repository on the published branch."""
    if not url.startswith("http"):
        return [f"{label} {url!r} should be a valid URL starting with 'http'"]
    prefix = _published_prefix(entry)
    if not url.startswith(prefix):
        return [f"{label} {url} is not a file of the published repository ({prefix}...)"]
    path = root / url.removeprefix(prefix)
    if not path.is_file():
        return [f"{label} names {path.relative_to(root)}, which is not in the repository"]
    size = _png_size(path)
    if size is None:
        return [f"{label} names {path.relative_to(root)}, which is not a PNG image"]
    if label == "EXTENSION_ICONURL" and size != ICON_SIZE:
        return [f"the icon {path.name} is {size[0]} x {size[1]} pixels, not {ICON_SIZE[0]} x {ICON_SIZE[1]}"]
    return []


def repository_bytes(root: Path) -> int:
    """Bytes of the files the repository tracks (every file, where root is not a git work tree)."""
    listing = subprocess.run(["git", "-C", str(root), "ls-files", "-z"], capture_output=True, check=False)
    if listing.returncode == 0 and listing.stdout:
        files = [root / name for name in listing.stdout.decode().split("\0") if name]
    else:
        files = [path for path in root.rglob("*") if ".git" not in path.parts]
    return sum(path.stat().st_size for path in files if path.is_file())


def problems(root: Path) -> list[str]:
    """Every problem the offline checks find in the repository at root (empty when it passes)."""
    cmake_file = root / "CMakeLists.txt"
    if not cmake_file.is_file():
        return ["no CMakeLists.txt in the repository root"]
    settings = cmake_settings(cmake_file.read_text(errors="ignore"))
    name = settings.get("project")
    if not name:
        return ["no project() declaration in CMakeLists.txt"]
    found, entry = entry_problems(name, root / f"{name}.json")
    if "ICONURL" not in settings:
        found.append("no EXTENSION_ICONURL found in CMakeLists.txt")
    else:
        found += url_problems(root, settings["ICONURL"], "EXTENSION_ICONURL", entry)
    if "SCREENSHOTURLS" not in settings:
        found.append("no EXTENSION_SCREENSHOTURLS found in CMakeLists.txt")
    else:
        for url in settings["SCREENSHOTURLS"].split():
            found += url_problems(root, url, "EXTENSION_SCREENSHOTURLS", entry)
    if not settings.get("HOMEPAGE", "").startswith("https://"):
        found.append("EXTENSION_HOMEPAGE is not a literal https URL")
    if settings.get("CATEGORY") != entry.get("category"):
        found.append(f"EXTENSION_CATEGORY {settings.get('CATEGORY')!r} differs from the entry's category")
    depends = set(re.split(r"[;\s]+", settings.get("DEPENDS", ""))) - {"", "NA"}
    if depends != set(entry.get("build_dependencies", [])):
        found.append(f"EXTENSION_DEPENDS {sorted(depends)} differs from build_dependencies "
                     f"{sorted(entry.get('build_dependencies', []))}")
    if not any((root / license_name).is_file() for license_name in LICENSE_NAMES):
        found.append("no license file in the repository root")
    size = repository_bytes(root)
    if size > SIZE_LIMIT_BYTES:
        found.append(f"the repository holds {size / 2**20:.1f} MB, more than the Index's 100 MB")
    return found


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]).resolve()
    found = problems(root)
    for problem in found:
        print(f"problem: {problem}")
    print(f"{len(found)} problem(s); repository files: {repository_bytes(root) / 2**20:.1f} MB "
          "(offline checks only: see the docstring for what the Index also checks online)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
