"""The sample data shipped with the project: an axial slab of the held-out subject mni/patient26 of open_ms.

Three files and a manifest in ``Resources/SampleData`` (made by ``tools/make_sample_data.py``; CC-BY,
attribution in the README beside them): the LR T2 (2 x 2 x 3 mm, the input), the registered HR T1
(1 mm isotropic) and the HR T2 (1 x 1 x 3 mm, the truth). ``cohft-sr demo`` and the 3D Slicer
module's self-test run on them; the Slicer module also registers them in Slicer's Sample Data module.
Finding and checking the files needs neither torch nor SimpleITK (``sample_files``); reading them
needs SimpleITK (``read_sample``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from CohfTSuperResLib.errors import InputError
from CohfTSuperResLib.imageio.file_integrity import sha256_of
from CohfTSuperResLib.weights.registry import installed_folder

if TYPE_CHECKING:
    import SimpleITK as sitk

SAMPLE_ENV = "COHFT_SR_SAMPLE_DATA"
MANIFEST_NAME = "sample_data.json"
SAMPLE_SCALE = 2  # the LR T2 is the HR T2 reduced by this factor in-plane
SAMPLE_ROLES = ("lr_t2", "t1", "hr_t2")


def sample_dir() -> Path:
    """Folder of the sample data: $COHFT_SR_SAMPLE_DATA, Resources/SampleData or
    <prefix>/share/CohfTSuperRes/SampleData."""
    return installed_folder("SampleData", MANIFEST_NAME, SAMPLE_ENV)


@dataclass(frozen=True)
class SampleFiles:
    """The checked sample files: paths by role (SAMPLE_ROLES), their sha256, the thumbnail and the manifest."""

    folder: Path
    paths: dict[str, Path]
    sha256: dict[str, str]
    thumbnail: Path
    manifest: dict[str, Any]

    @property
    def attribution(self) -> Path:
        """The README with the data's licence and attribution."""
        return self.folder / "README.md"


def sample_files() -> SampleFiles:
    """The sample files after checking that each is present and matches its recorded sha256.

    InputError naming the folder when the sample is not installed, damaged or changed.
    """
    folder = sample_dir()
    manifest_path = folder / MANIFEST_NAME
    if not manifest_path.is_file():
        raise InputError(f"the sample data is not installed (no {MANIFEST_NAME} in {folder}); "
                         f"set ${SAMPLE_ENV} to its folder, or use the phantom (cohft-sr demo --phantom)")
    try:
        manifest = json.loads(manifest_path.read_text())
        entries = {role: manifest["files"][role] for role in SAMPLE_ROLES}
        thumbnail = folder / manifest["thumbnail"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InputError(f"the sample data list {manifest_path} is damaged "
                         f"({type(error).__name__}: {error})") from error
    paths, digests = {}, {}
    for role, entry in entries.items():
        path = folder / entry["file"]
        if not path.is_file():
            raise InputError(f"sample file {path.name} is missing from {folder}; reinstall")
        actual = sha256_of(path)
        if actual != entry["sha256"]:
            raise InputError(f"sample file {path} fails its checksum (sha256 {actual[:12]}..., expected "
                             f"{entry['sha256'][:12]}...): it is damaged or was changed; reinstall")
        paths[role], digests[role] = path, actual
    return SampleFiles(folder, paths, digests, thumbnail, manifest)


def read_sample() -> dict[str, sitk.Image]:
    """The checked sample as SimpleITK images by role: 'lr_t2' (float32), 't1' and 'hr_t2' (int16)."""
    from CohfTSuperResLib.imageio.volumes import read_volume

    return {role: read_volume(path) for role, path in sample_files().paths.items()}
