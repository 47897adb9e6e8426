"""The guide check and its policies (inference/guide_check.py, engine.act_on), the record kept with the output, the
shift estimate and the rigid registration (inference/registration.py)."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from inference_helpers import guide_for, save_tiny, tiny_model, volume

from CohfTSuperResLib.data.synthetic_volumes import lr_volume, trim_in_plane
from CohfTSuperResLib.errors import GuideNote, InputError, WeightsError
from CohfTSuperResLib.evaluation.guide_cases import foreign_guide
from CohfTSuperResLib.imageio.normalize import robust_scale
from CohfTSuperResLib.info import info_lines
from CohfTSuperResLib.imageio.volumes import write_volume
from CohfTSuperResLib.inference import super_resolve
from CohfTSuperResLib.imageio.volumes import RECORD_KEYS
from CohfTSuperResLib.inference.engine import act_on
from CohfTSuperResLib.inference.geometry import translated
from CohfTSuperResLib.inference.guide_check import (CALIBRATED_WITH, THRESHOLDS_DB, GuideVerdict, check_guide,
                                                    estimate_shift, reduced_input_benefit, tissue_crop)
from CohfTSuperResLib.inference.input_checks import check_inputs
from CohfTSuperResLib.inference.registration import largest_displacement, moved_by, register_t1
from CohfTSuperResLib.options import SCALES, RunOptions
from CohfTSuperResLib.weights import registry
from CohfTSuperResLib.weights.storage import save_weights

MNI = Path(__file__).resolve().parents[2] / "shared" / "data" / "open_ms" / "mni"


def _verdict(benefit: float) -> GuideVerdict:
    return GuideVerdict(benefit, benefit >= 0.5, 0.5, 8, None if benefit >= 0.5 else (3.0, 0.0, 0.0), 1.0)


@pytest.fixture
def checked():
    t2 = volume((3, 20, 24))
    return check_inputs(t2, guide_for(t2, 2), 2)


def test_a_helpful_t1_is_used_under_every_policy(checked):
    for policy in ("auto", "warn", "refuse"):
        after, options, said = act_on(_verdict(1.2), checked, RunOptions(guide_check=policy))
        assert after.t1 is checked.t1 and options.guide_check == policy and "running with the T1" in said


def test_an_unhelpful_t1_is_dropped_warned_about_or_refused(checked):
    after, options, said = act_on(_verdict(-0.8), checked, RunOptions(guide_check="auto"))
    assert after.t1 is None and after.t1_scale is None and options.model_path is None
    assert "does not help" in said and "model without T1 instead" in said and "shifted by about 3 mm" in said
    after, _options, said = act_on(_verdict(-0.8), checked, RunOptions(guide_check="warn"))
    assert after.t1 is checked.t1 and "anyway" in said
    with pytest.raises(InputError, match="does not help.*not run .guide check 'refuse'"):
        act_on(_verdict(-0.8), checked, RunOptions(guide_check="refuse"))


def test_a_users_weights_file_is_not_swapped_for_a_shipped_model(checked, tmp_path):
    weights = save_tiny(tmp_path, 2)
    after, options, said = act_on(_verdict(-0.8), checked, RunOptions(model_path=weights))
    assert after.t1 is checked.t1 and options.model_path == weights and weights.name in said


def test_the_output_records_the_model_and_the_check(tmp_path):
    t2 = volume((3, 20, 24))
    weights = save_tiny(tmp_path, 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = super_resolve(t2, guide_for(t2, 2), 2, model_path=weights, device="cpu")
    notes = [str(w.message) for w in caught if issubclass(w.category, GuideNote)]
    assert len(notes) == 1 and notes[0].startswith("guide check: the T1")
    assert result.GetMetaData(RECORD_KEYS[0]) == weights.name
    assert result.GetMetaData(RECORD_KEYS[1]).startswith("benefit_db=")
    for suffix in (".nii.gz", ".nrrd"):
        reread = sitk.ReadImage(str(write_volume(result, tmp_path / f"sr{suffix}")))
        if suffix == ".nrrd":
            assert reread.GetMetaData(RECORD_KEYS[1]) == result.GetMetaData(RECORD_KEYS[1])
        else:  # NIfTI keeps the one-line summary as its description
            assert reread.GetMetaData("descrip").startswith(f"Cohf-T {weights.name}; guide check ")
    off = super_resolve(t2, guide_for(t2, 2), 2, model_path=weights, device="cpu", guide_check="off")
    assert off.GetMetaData(RECORD_KEYS[1]) == "off"


def _models_folder(folder: Path, seeds: dict[str, int], kinds: tuple[bool, ...] = (True, False)) -> Path:
    """A models folder of tiny x2 networks: role -> seed of its networks (with and without T1, or those of kinds)."""
    entries = []
    for role, seed in seeds.items():
        for use_t1 in kinds:
            name = f"{role}_{seed}_{int(use_t1)}.safetensors"
            digest = save_weights(tiny_model(2, use_t1, seed), folder / name)
            entries.append({"variant": "S", "scale": 2, "use_t1": use_t1, "file": name, "sha256": digest,
                            "role": role})
    (folder / "models.json").write_text(json.dumps({"models": entries}))
    return folder


def test_the_in_plane_check_judges_the_networks_that_run(tmp_path, monkeypatch):
    t2 = volume((4, 24, 28))
    checked = check_inputs(t2, guide_for(t2, 2), 2)

    def benefit(name: str, seeds: dict[str, int], weights: Path | None = None) -> float:
        monkeypatch.setenv(registry.MODELS_ENV, str(_models_folder(tmp_path / name, seeds)))
        return check_guide(checked, RunOptions(device="cpu", model_path=weights)).benefit_db

    shipped = benefit("a", {registry.SUPER_RESOLUTION: 1, registry.GUIDE_CHECK: 2})
    assert benefit("b", {registry.SUPER_RESOLUTION: 1, registry.GUIDE_CHECK: 4}) == shipped  # not the frozen pair
    assert benefit("c", {registry.SUPER_RESOLUTION: 3, registry.GUIDE_CHECK: 2}) != shipped  # the models that run
    save_weights(tiny_model(2, True, 5), tmp_path / "users.safetensors")
    assert benefit("d", {registry.SUPER_RESOLUTION: 1}, tmp_path / "users.safetensors") != shipped  # a user's file

    monkeypatch.setenv(registry.MODELS_ENV, str(_models_folder(tmp_path / "e", {registry.SUPER_RESOLUTION: 1},
                                                               kinds=(True,))))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        output = super_resolve(t2, guide_for(t2, 2), 2, device="cpu")
    notes = [str(w.message) for w in caught if issubclass(w.category, GuideNote)]
    assert len(notes) == 1 and notes[0].startswith("guide check not run (no shipped S x2 model without")
    assert notes[0].endswith("running with the T1")
    assert output.GetMetaData(RECORD_KEYS[1]) == "not run: no shipped model to judge the T1 with"


def test_each_threshold_was_chosen_with_the_networks_that_ship():
    """Shipping a model of a scale moves its check's proxies: its threshold must be chosen again on the selection
    source (docs/benchmarks.md, "The guide check at the output scale") and CALIBRATED_WITH updated with it."""
    assert sorted(THRESHOLDS_DB) == sorted(CALIBRATED_WITH) == list(SCALES)  # every in-plane scale
    for scale, (guided, unguided) in CALIBRATED_WITH.items():
        shipped = tuple(registry.find_model("S", scale, use_t1).sha256[:12] for use_t1 in (True, False))
        assert shipped == (guided, unguided), f"x{scale}: choose the guide check's threshold again"


def test_a_large_slice_is_checked_on_a_window_about_its_tissue():
    voxels = np.zeros((5, 40, 300), np.float32)  # (k, j, i): 300 voxels along i, 40 along j, 5 slices along k
    voxels[:, 10:30, 200:260] = 1.0
    image = sitk.GetImageFromArray(voxels)
    image.SetSpacing((0.5, 0.5, 4.0))
    image.SetOrigin((10.0, -20.0, 3.0))
    crop = tissue_crop(image, 2, 0.5, 128)
    assert crop.GetSize() == (128, 40, 5)  # i cropped about the tissue (centre 229), j smaller than the window
    start = image.TransformPhysicalPointToIndex(crop.GetOrigin())
    assert start == (229 - 64, 0, 0) and sitk.GetArrayViewFromImage(crop).sum() == voxels.sum()
    assert tissue_crop(image, 0, 0.5, 128).GetSize() == (300, 40, 5)  # the slice axis is never cropped
    assert tissue_crop(image * 0, 2, 0.5, 128).GetSize() == (128, 40, 5)  # no tissue: the centre


def test_the_reduced_input_proxy_runs_its_own_pair_whatever_x2_models_ship(tmp_path, monkeypatch):
    t2 = volume((4, 24, 28))
    checked = check_inputs(t2, guide_for(t2, 2), 2)

    def benefit(name: str, seeds: dict[str, int]) -> float:
        monkeypatch.setenv(registry.MODELS_ENV, str(_models_folder(tmp_path / name, seeds)))
        return reduced_input_benefit(checked, RunOptions(device="cpu"))[0]

    shipped = benefit("a", {registry.SUPER_RESOLUTION: 1, registry.GUIDE_CHECK: 2})
    assert benefit("b", {registry.SUPER_RESOLUTION: 3, registry.GUIDE_CHECK: 2}) == shipped  # new x2 models
    assert benefit("c", {registry.SUPER_RESOLUTION: 1, registry.GUIDE_CHECK: 4}) != shipped  # another check pair
    assert registry.available_models() == [("S", 2, True), ("S", 2, False)]  # the check's pair is no choice
    assert registry.find_model("S", 2, True).file == "super-resolution_1_1.safetensors"
    lines = info_lines()  # `cohft-sr info` names both kinds, the check's as such
    assert "  shipped: S x2 (with T1); S x2 (without T1)" in lines
    assert sorted(line.split()[0] for line in lines if line.endswith("; used by the guide check)")) == \
        ["guide-check_4_0.safetensors", "guide-check_4_1.safetensors"]

    monkeypatch.setenv(registry.MODELS_ENV, str(_models_folder(tmp_path / "d", {registry.SUPER_RESOLUTION: 1})))
    with pytest.raises(WeightsError, match="no shipped S x2 model for the guide check with the T1 guide"):
        reduced_input_benefit(checked, RunOptions(device="cpu"))


def test_a_manifest_naming_an_unknown_role_is_refused(tmp_path, monkeypatch):
    folder = _models_folder(tmp_path, {"teacher": 1})
    monkeypatch.setenv(registry.MODELS_ENV, str(folder))
    with pytest.raises(WeightsError, match="names models this library cannot run: teacher_1_1"):
        registry.shipped_models()


def test_moving_the_geometry_is_the_rigid_transform_exactly():
    image = volume((5, 12, 14), spacing=(0.9, 1.1, 2.0), origin=(3.0, -4.0, 7.0))
    transform = sitk.Euler3DTransform((1.0, 2.0, 3.0), 0.05, -0.03, 0.08, (2.5, -1.0, 0.7))
    moved = moved_by(image, transform)
    for index in ((0, 0, 0), (13, 11, 4), (5, 3, 2)):
        before = np.asarray(image.TransformIndexToPhysicalPoint(index))
        after = np.asarray(moved.TransformIndexToPhysicalPoint(index))
        np.testing.assert_allclose(transform.TransformPoint(tuple(after)), before, atol=1e-9)  # T maps T2 -> T1
    np.testing.assert_array_equal(sitk.GetArrayFromImage(moved), sitk.GetArrayFromImage(image))
    mask = sitk.Cast(sitk.Image(image.GetSize(), sitk.sitkUInt8) + 1, sitk.sitkUInt8)
    mask.CopyInformation(image)
    assert largest_displacement(transform, image, mask) >= np.linalg.norm((2.5, -1.0, 0.7)) - 1e-6


@pytest.fixture(scope="module")
def patient26():
    if not MNI.is_dir():
        pytest.skip("open_ms data absent")
    read = lambda name: sitk.ReadImage(str(MNI / "patient26" / f"{name}.nii.gz"), sitk.sitkFloat32)  # noqa: E731
    return read("t2"), read("t1")


def test_the_shift_estimate_finds_a_moved_t1(patient26):
    t2, t1 = patient26
    slab = t2[:, :, 60:120:8]
    for move in ((3.0, 0.0, 0.0), (0.0, -2.0, 0.0), (0.0, 0.0, 3.0)):
        estimate = estimate_shift(slab, translated(t1, move), 2)
        np.testing.assert_allclose(estimate, move, atol=0.75)
    assert np.linalg.norm(estimate_shift(slab, t1, 2)) < 0.75


@pytest.mark.slow  # a few seconds of registration
def test_registration_undoes_a_3mm_5_degree_move(patient26):
    t2, t1 = patient26
    lr = t2[::4, ::4, :]  # an x4 LR T2
    centre = t1.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in t1.GetSize()])
    move = sitk.Euler3DTransform(centre, np.radians(5.0), 0.0, 0.0, (3.0, 0.0, 0.0))
    moved = moved_by(t1, move.GetInverse())  # the T1's content moved by the transform
    result = register_t1(lr, moved, robust_scale(sitk.GetArrayViewFromImage(lr)))
    assert 3.0 <= result.displacement_mm
    mask = sitk.Cast(lr > 0.1 * robust_scale(sitk.GetArrayViewFromImage(lr)), sitk.sitkUInt8)
    residual = sitk.CompositeTransform([move.GetInverse(), result.transform])
    assert largest_displacement(residual, lr, mask) < 1.0


def test_register_option_and_notes_reach_the_caller(tmp_path):
    t2 = volume((10, 20, 24))
    weights = save_tiny(tmp_path, 2)
    options = dict(model_path=weights, device="cpu", guide_check="off", register=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        super_resolve(t2, guide_for(t2, 2), 2, **options)
    assert any(str(w.message).startswith("registration: the T1 was moved by") for w in caught
               if issubclass(w.category, GuideNote))
    assert dataclasses.asdict(RunOptions(**options, scale=2))["register"] is True
    with pytest.raises(InputError, match="too small to register"):
        super_resolve(volume((3, 20, 24)), guide_for(volume((3, 20, 24)), 2), 2, **options)


@pytest.mark.slow  # the shipped x4 pair on 8 slices, once per guide
def test_the_check_keeps_the_registered_t1_and_declines_bad_ones(patient26):
    """Held out (patient26, the shipped x4 networks): the registered T1 passes the check; the T1 moved 3 mm in x,
    flipped left-right, and another subject's T1 do not."""
    t2, t1 = patient26
    lr = lr_volume(trim_in_plane(t2, 4, 2), 4, 2)
    other = sitk.ReadImage(str(MNI / "patient07" / "t1.nii.gz"), sitk.sitkFloat32)
    mirrored = sitk.GetImageFromArray(sitk.GetArrayFromImage(t1)[:, :, ::-1].copy())
    mirrored.CopyInformation(t1)
    guides = {"registered": t1, "moved 3 mm in x": translated(t1, (3.0, 0.0, 0.0)), "flipped": mirrored,
              "another subject's": foreign_guide(other, t2)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        verdicts = {name: check_guide(check_inputs(lr, guide, 4, 2), RunOptions(scale=4, device="cpu"))
                    for name, guide in guides.items()}
    for name, verdict in verdicts.items():
        print(f"{name}: proxy {verdict.benefit_db:+.2f} dB (threshold {verdict.threshold_db:+.2f})")
    assert [name for name, verdict in verdicts.items() if verdict.helps] == ["registered"]
