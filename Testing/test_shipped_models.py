"""The models in Resources/Models: manifest complete, checksums right, size limit, and guards of their quality on
held-out slices (mni/patient26, never used in training or selection): with the T1 at least 2 dB over bicubic at
x2 and 1.5 dB at x3 / x4; without it at least 1 dB; the registered T1 beats a T1 shifted by 3 mm and another
subject's T1 by at least 0.3 dB at every scale, and no T1 at x4 by as much.

These are regression guards on 6 slices, not the headline numbers (those are the model card's, on every brain
slice of the held-out subject, from `cohft-sr evaluate` and `bench/t1_reliance.py`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import SimpleITK as sitk
import torch

from CohfTSuperResLib.inference.engine import super_resolve
from CohfTSuperResLib.evaluation.metrics import psnr
from CohfTSuperResLib.weights.registry import MANIFEST_NAME, available_models, models_dir, shipped_models
from CohfTSuperResLib.imageio.normalize import robust_scale
from CohfTSuperResLib.options import SCALES
from CohfTSuperResLib.data.synthetic_volumes import bicubic_volume, lr_volume, trim_in_plane
from CohfTSuperResLib.weights.storage import sha256_of

torch.set_num_threads(2)
SHIPPED = Path(__file__).resolve().parents[1] / "Resources" / "Models"
HELD_OUT_SLICES = slice(55, 131, 15)  # axial slices 55, 70, ..., 130 of mni/patient26, through the whole brain
SHIFT_MM = 3.0
MIN_GAIN_DB = {2: 2.0, 3: 1.5, 4: 1.5}  # with the T1, over bicubic
MIN_GAIN_WITHOUT_T1_DB = 1.0
MIN_T1_RELIANCE_DB = 0.3  # registered T1 over a wrong one, and over no T1 at x4
MAX_TOTAL_BYTES = 100 * 2**20

pytestmark = pytest.mark.skipif(not (SHIPPED / MANIFEST_NAME).is_file(), reason="no shipped models")


def test_manifest_entries_are_complete_and_files_match():
    assert models_dir() == SHIPPED
    manifest = json.loads((SHIPPED / MANIFEST_NAME).read_text())
    keys = {(m["variant"], m["scale"], m["use_t1"]) for m in manifest["models"]}
    assert {("S", scale, use_t1) for scale in SCALES for use_t1 in (True, False)} <= keys  # every scale has its fallback
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
    """Held-out HR T2 slices of mni/patient26 (every 15th axial slice through the brain, geometry kept), the full
    registered T1, the same T1 shifted 3 mm (misregistration) and another subject's T1 (patient07, same grid)."""
    read = lambda subject, name: sitk.Cast(  # noqa: E731
        sitk.ReadImage(str(open_ms / "mni" / subject / f"{name}.nii.gz")), sitk.sitkFloat32)
    t1 = read("patient26", "t1")
    shifted = sitk.Image(t1)
    direction = t1.GetDirection()
    shifted.SetOrigin(tuple(o + SHIFT_MM * direction[3 * i] for i, o in enumerate(t1.GetOrigin())))
    return {"t2": read("patient26", "t2")[:, :, HELD_OUT_SLICES], "registered": t1, "shifted": shifted,
            "foreign": read("patient07", "t1")}


@pytest.fixture(scope="module")
def held_out_psnr(held_out):
    """psnr(scale, guide, use_t1): PSNR (dB, data range 1 after the HR's robust scale) on the held-out slices;
    guide 'bicubic' is the bicubic baseline. Computed once per combination."""
    cache: dict[tuple[int, str, bool], float] = {}

    def measure(scale: int, guide: str, use_t1: bool = True) -> float:
        key = (scale, guide, use_t1)
        if key not in cache:
            hr = trim_in_plane(held_out["t2"], scale)
            lr = lr_volume(hr, scale)
            if guide == "bicubic":
                result = bicubic_volume(lr, scale)
            else:
                t1 = held_out[guide] if use_t1 else None
                result = super_resolve(lr, t1, scale, device="cpu", slice_axis=2, guide_check="off")
            truth = sitk.GetArrayFromImage(hr)
            reference = robust_scale(truth)
            cache[key] = psnr(sitk.GetArrayFromImage(result) / reference, truth / reference, 1.0)
        return cache[key]

    return measure


def _shipped(scale: int, use_t1: bool = True) -> bool:
    return ("S", scale, use_t1) in available_models()


@pytest.mark.slow  # the shipped models on held-out data
@pytest.mark.parametrize("scale", SCALES)
def test_guided_model_beats_bicubic_on_held_out_slices(held_out_psnr, scale):
    gain = held_out_psnr(scale, "registered") - held_out_psnr(scale, "bicubic")
    print(f"x{scale}: {gain:+.2f} dB over bicubic")
    assert gain >= MIN_GAIN_DB[scale], f"x{scale} with T1: {gain:+.2f} dB over bicubic"


@pytest.mark.slow  # the shipped models on held-out data
@pytest.mark.parametrize("scale", SCALES)
def test_unguided_model_beats_bicubic_on_held_out_slices(held_out_psnr, scale):
    if not _shipped(scale, use_t1=False):
        pytest.skip(f"no model without T1 ships at x{scale}")
    gain = held_out_psnr(scale, "registered", use_t1=False) - held_out_psnr(scale, "bicubic")
    print(f"x{scale} without T1: {gain:+.2f} dB over bicubic")
    assert gain >= MIN_GAIN_WITHOUT_T1_DB, f"x{scale} without T1: {gain:+.2f} dB over bicubic"


@pytest.mark.slow  # the shipped models on held-out data
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("wrong", ["shifted", "foreign"])
def test_the_registered_t1_beats_a_wrong_one(held_out_psnr, scale, wrong):
    """The models use their guide: a T1 shifted by 3 mm or another subject's T1 costs at least 0.3 dB."""
    cost = held_out_psnr(scale, "registered") - held_out_psnr(scale, wrong)
    print(f"x{scale}: {wrong} T1 costs {cost:.2f} dB")
    assert cost >= MIN_T1_RELIANCE_DB, f"x{scale}: a {wrong} T1 costs only {cost:.3f} dB"


@pytest.mark.slow  # the shipped models on held-out data
def test_the_t1_guide_beats_no_guide_at_x4(held_out_psnr):
    benefit = held_out_psnr(4, "registered") - held_out_psnr(4, "registered", use_t1=False)
    print(f"x4: the T1 brings {benefit:+.2f} dB over the model without it")
    assert benefit >= MIN_T1_RELIANCE_DB, f"x4: the T1 brings only {benefit:+.3f} dB"


@pytest.mark.slow  # the shipped models on held-out data
def test_demo_runs_on_the_shipped_model_and_beats_bicubic(tmp_path):
    """The README's first command: the real sample slab (held out from training) at x2 with the shipped model,
    at least 2 dB over bicubic."""
    from CohfTSuperResLib.evaluation.demo import run_demo

    result = run_demo(tmp_path, 2, device="cpu")
    assert result.source == "sample"
    assert result.psnr_sr >= result.psnr_bicubic + MIN_GAIN_DB[2], (result.psnr_sr, result.psnr_bicubic)
    assert all(path.is_file() for path in result.files.values())
