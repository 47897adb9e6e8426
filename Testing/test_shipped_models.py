"""The models in Resources/Models: manifest complete, checksums right, size limit, and each one beats
bicubic by at least 1 dB on held-out slices (mni/patient26, never used in training or selection).

The margin test is a regression guard, not the headline number (that is the model card's, on
every brain slice of the held-out subject, from `cohft-sr evaluate`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from CohfTSuperResLib.degrade import crop_to_multiple, degrade
from CohfTSuperResLib.inference import super_resolve
from CohfTSuperResLib.metrics import psnr
from CohfTSuperResLib.models_registry import MANIFEST_NAME, models_dir, shipped_models
from CohfTSuperResLib.normalize import robust_scale
from CohfTSuperResLib.upsample import upsample_cubic
from CohfTSuperResLib.weights import sha256_of

torch.set_num_threads(2)
SHIPPED = Path(__file__).resolve().parents[1] / "Resources" / "Models"
HELD_OUT_SLICES = (85, 100)  # axial slices of mni/patient26 through the ventricles and the centrum semiovale
MIN_GAIN_DB = 1.0
MAX_TOTAL_BYTES = 100 * 2**20

pytestmark = pytest.mark.skipif(not (SHIPPED / MANIFEST_NAME).is_file(), reason="no shipped models")


def test_manifest_entries_are_complete_and_files_match():
    assert models_dir() == SHIPPED
    manifest = json.loads((SHIPPED / MANIFEST_NAME).read_text())
    keys = {(m["variant"], m["scale"], m["use_t1"]) for m in manifest["models"]}
    assert {("S", 2, True), ("S", 3, True), ("S", 4, True), ("S", 4, False)} <= keys
    total = 0
    for entry in manifest["models"]:
        path = SHIPPED / entry["file"]
        assert sha256_of(path) == entry["sha256"]
        total += path.stat().st_size
        for key in ("normalisation", "grid", "training", "held_out"):
            assert entry[key], key
    assert total < MAX_TOTAL_BYTES
    names = {p.name for p in SHIPPED.iterdir()}
    assert {"MODEL_CARD.md", MANIFEST_NAME} <= names


def test_every_shipped_model_loads_with_the_config_it_claims():
    for model in shipped_models():
        network = model.load()
        assert (network.config.scale, network.config.use_t1) == (model.scale, model.use_t1)


@pytest.fixture(scope="module")
def held_out(open_ms) -> dict[str, sitk.Image]:
    """Two axial slices of the held-out subject as 2-slice HR volumes (T2, T1) on their own grid."""
    images = {}
    for name in ("t2", "t1"):
        volume = sitk.Cast(sitk.ReadImage(str(open_ms / "mni" / "patient26" / f"{name}.nii.gz")), sitk.sitkFloat32)
        images[name] = sitk.JoinSeries([volume[:, :, k] for k in HELD_OUT_SLICES])
    return images


@pytest.mark.filterwarnings("error::RuntimeWarning")  # e.g. a T1 that does not cover the T2
@pytest.mark.parametrize("model", shipped_models(), ids=lambda m: f"{m.variant}_x{m.scale}{'' if m.use_t1 else '_noT1'}")
def test_shipped_model_beats_bicubic_on_held_out_slices(model, held_out):
    scale = model.scale
    hr = sitk.GetArrayFromImage(held_out["t2"])
    hr = crop_to_multiple(hr, scale)
    lr = degrade(hr, scale).astype(np.float32)
    lr_image = sitk.GetImageFromArray(lr)
    lr_image.SetSpacing(tuple(d * scale if axis < 2 else d for axis, d in enumerate(held_out["t2"].GetSpacing())))
    lr_image.SetOrigin(held_out["t2"].GetOrigin())
    lr_image.SetDirection(held_out["t2"].GetDirection())
    t1 = held_out["t1"] if model.use_t1 else None
    sr = sitk.GetArrayFromImage(super_resolve(lr_image, t1, scale, variant=model.variant, device="cpu", slice_axis=2))
    bicubic = upsample_cubic(torch.from_numpy(lr)[:, None], scale)[:, 0].numpy()
    reference = robust_scale(hr)
    gain = psnr(sr / reference, hr / reference, 1.0) - psnr(bicubic / reference, hr / reference, 1.0)
    print(f"{model.file}: {gain:+.2f} dB over bicubic")
    assert gain >= MIN_GAIN_DB, f"{model.file}: {gain:.2f} dB over bicubic"


def test_demo_runs_on_the_shipped_model_and_beats_bicubic(tmp_path):
    """The README's first command: the real sample slab (held out from training) at x2 with the shipped model."""
    from CohfTSuperResLib.demo import run_demo

    result = run_demo(tmp_path, 2, device="cpu")
    assert result.source == "sample"
    assert result.psnr_sr > result.psnr_bicubic + 0.3, (result.psnr_sr, result.psnr_bicubic)
    assert all(path.is_file() for path in result.files.values())
