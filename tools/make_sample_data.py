"""Make the project's sample data (Resources/SampleData) from the held-out subject mni/patient26 of open_ms.

    python tools/make_sample_data.py ../shared/data/open_ms Resources/SampleData

Run once by a maintainer; nothing needs it at run time (the files it writes are committed). It cuts
a slab of SLICES axial slices, THICKNESS mm apart, out of the 1 mm MNI-space volumes of
mni/patient26 (never used for training or model selection), cropped in-plane around the head:

- the HR T2 of the slab, 1 x 1 x 3 mm: the truth that the demo and the self-test compare with;
- the LR T2, 2 x 2 x 3 mm: the HR T2 reduced x2 in-plane by the paper's k-space protocol
  (CohfTSuperResLib.data.synthetic_volumes.lr_volume), float32 as synthesised: a clinical-like thick-slice T2;
- the registered HR T1, 1 mm isotropic, covering the slab's full thickness.

The HR volumes are stored as int16 after rounding to whole units (the source is float32 with values
up to about 1100; rounding changes a voxel by at most 0.5). The LR T2 is synthesised from the rounded
HR T2. Then `sample_data.json` lists every file with its sha256 and role, and a PNG thumbnail of the
middle HR T2 slice is written for Slicer's Sample Data module.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from CohfTSuperResLib.data.sample_data import MANIFEST_NAME, SAMPLE_SCALE  # noqa: E402
from CohfTSuperResLib.data.synthetic_volumes import lr_volume  # noqa: E402
from CohfTSuperResLib.imageio.volumes import write_png  # noqa: E402

SUBJECT = "mni/patient26"
FIRST_SLICE = 53  # axial voxel index k of the slab's first slice (MNI grid, 1 mm)
SLICES = 24
THICKNESS = 3  # keep every 3rd 1 mm slice: 3 mm slices
ROWS = slice(20, 200)  # voxel index j: 180 rows around the head (brain at j 29..192)
COLUMNS = slice(19, 163)  # voxel index i: 144 columns (brain at i 27..154)
FILES = {  # role -> (file name, description)
    "lr_t2": ("patient26_slab_T2_LR.nii.gz", "LR T2 2 x 2 x 3 mm: the input (k-space x2 in-plane reduction of hr_t2)"),
    "t1": ("patient26_slab_T1.nii.gz", "registered HR T1, 1 mm isotropic, covering the slab"),
    "hr_t2": ("patient26_slab_T2_HR.nii.gz", "HR T2 1 x 1 x 3 mm: the truth"),
}
THUMBNAIL = "patient26_slab.png"


def _rounded_int16(image: sitk.Image) -> sitk.Image:
    voxels = np.round(sitk.GetArrayFromImage(image)).astype(np.int16)
    result = sitk.GetImageFromArray(voxels)
    result.CopyInformation(image)
    return result


def make(open_ms: Path, target: Path) -> dict:
    """Write the sample files into target and return the manifest written beside them."""
    source = {name: sitk.ReadImage(str(open_ms / SUBJECT / f"{name}.nii.gz"), sitk.sitkFloat32)
              for name in ("t2", "t1")}
    last = FIRST_SLICE + THICKNESS * (SLICES - 1)
    hr_t2 = _rounded_int16(source["t2"][COLUMNS, ROWS, FIRST_SLICE : last + 1 : THICKNESS])
    half = THICKNESS // 2  # the T1 covers each T2 slice's whole thickness
    t1 = _rounded_int16(source["t1"][COLUMNS, ROWS, FIRST_SLICE - half : last + half + 1])
    lr_t2 = lr_volume(sitk.Cast(hr_t2, sitk.sitkFloat32), SAMPLE_SCALE, slice_axis=2)
    target.mkdir(parents=True, exist_ok=True)
    manifest = {
        "name": "CohfTSuperRes sample: open_ms mni/patient26 axial slab",
        "source": f"open_ms {SUBJECT} (held out: never used for training or model selection)",
        "scale": SAMPLE_SCALE,
        "licence": "CC-BY (Lesjak et al. 2017); see README.md beside this file",
        "command": "python tools/make_sample_data.py ../shared/data/open_ms Resources/SampleData",
        "files": {},
    }
    for role, image in (("lr_t2", lr_t2), ("t1", t1), ("hr_t2", hr_t2)):
        name, description = FILES[role]
        sitk.WriteImage(image, str(target / name), useCompression=True)
        digest = hashlib.sha256((target / name).read_bytes()).hexdigest()
        manifest["files"][role] = {"file": name, "sha256": digest, "description": description,
                                   "size": list(image.GetSize()), "spacing": list(image.GetSpacing())}
    middle = sitk.GetArrayFromImage(hr_t2)[SLICES // 2].astype(np.float32)
    top = float(np.percentile(middle[middle > 0], 99.5))
    write_png((np.clip(middle / top, 0, 1) * 255).round().astype(np.uint8), target / THUMBNAIL)
    manifest["thumbnail"] = THUMBNAIL
    (target / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("open_ms", type=Path, help="the open_ms data folder (holds mni/patient26)")
    parser.add_argument("target", type=Path, help="where to write the sample (Resources/SampleData)")
    args = parser.parse_args()
    manifest = make(args.open_ms, args.target)
    for entry in manifest["files"].values():
        print(f"{entry['file']}: size {entry['size']}, spacing {entry['spacing']}, sha256 {entry['sha256'][:12]}...")


if __name__ == "__main__":
    main()
