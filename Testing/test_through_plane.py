"""Through-plane super-resolution: the thin-slice interpolation the network builds on (model/upsample.py), the
simulated training planes (data/planes.py), the inference path (inference/through_plane.py) with its checks, and
its command line and cohort mode."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from CohfTSuperResLib import cli
from CohfTSuperResLib.data.degradations import thick_slices
from CohfTSuperResLib.data.pack import PackVolume
from CohfTSuperResLib.data.planes import PlaneSampler, simulated_plane, validation_factor, validation_planes
from CohfTSuperResLib.data.synthetic_volumes import thick_slice_volume
from CohfTSuperResLib.errors import InputError, WeightsError
from CohfTSuperResLib.inference.engine import super_resolve
from CohfTSuperResLib.inference.geometry import Grid, thin_slice_grid
from CohfTSuperResLib.inference.through_plane_guide_check import DECLINED_FACTORS, MIN_THICK_SLICES
from CohfTSuperResLib.model.upsample import upsample_slices_cubic
from CohfTSuperResLib.options import THROUGH_PLANE_SCALE, RunOptions

from inference_helpers import save_tiny


@pytest.mark.parametrize("factor", [2, 3, 4, 5, 6])
def test_the_thin_slice_interpolation_is_exact_on_a_ramp_away_from_the_ends(factor):
    """A box average of a linear ramp is the ramp at the slab centre, and the cubic reproduces a ramp: the thin
    slices tiling each thick one must come back exactly (the end slabs follow the replicated edge)."""
    thin = np.repeat(np.arange(12 * factor, dtype=np.float32)[:, None] * 0.5 + 3.0, 5, axis=1)
    thick = thick_slices(thin, factor)
    restored = upsample_slices_cubic(torch.from_numpy(thick)[None, None], factor)[0, 0].numpy()
    assert restored.shape == thin.shape
    np.testing.assert_allclose(restored[2 * factor:-2 * factor], thin[2 * factor:-2 * factor], atol=1e-4)
    assert np.abs(restored[:factor] - thin[:factor]).max() > 0.1  # the first slab has no neighbour below


def test_the_thin_slice_interpolation_keeps_a_constant_and_each_thick_slice_mean():
    thick = torch.rand(2, 3, 7, 5)
    thin = upsample_slices_cubic(thick, 4)
    torch.testing.assert_close(upsample_slices_cubic(torch.full((1, 1, 6, 4), 2.5), 4), torch.full((1, 1, 24, 4), 2.5))
    assert thin.shape == (2, 3, 28, 5)
    assert upsample_slices_cubic(thick, 1) is thick


def test_a_simulated_plane_pairs_its_target_with_the_thick_slices_it_was_made_from():
    rng = np.random.default_rng(0)
    thin = rng.random((43, 9)).astype(np.float32)
    interpolated, target = simulated_plane(thin, 4, "box", 0.0, phase=3)
    assert target.shape == interpolated.shape == (40, 9)
    np.testing.assert_array_equal(target, thin[3:43])
    thick = thick_slices(target, 4)
    np.testing.assert_allclose(thick_slices(interpolated, 4)[2:-2], thick[2:-2], atol=0.08)  # roughly mean-keeping


def _pack_volume(name: str, role: str, shape=(30, 36, 42), seed: int = 0) -> PackVolume:
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    head = (x**2 + y**2 + z**2 < 0.8).astype(np.float32)
    hr = head * (0.5 + 0.3 * np.sin(6 * x) * np.cos(5 * y) + 0.05 * rng.random(shape))
    t1 = head * (0.6 - 0.2 * np.sin(6 * x) * np.cos(5 * y))
    return PackVolume(name, role, hr.astype(np.float16), t1.astype(np.float16), {2: 1.0, 3: 1.0, 4: 1.0})


def test_plane_batches_are_seeded_samples_with_the_thick_axis_along_the_rows():
    sampler = PlaneSampler([_pack_volume("a", "train")], patch=24, batch_size=3, seed=1)
    first, again, other = sampler.batch(7), sampler.batch(7), sampler.batch(8)
    for x, y in zip(first, again):
        torch.testing.assert_close(x, y)
    assert not torch.equal(first[0], other[0])
    assert all(x.shape == (3, 1, 24, 24) and torch.isfinite(x).all() for x in first)
    inputs, targets, _ = (torch.cat([sampler.batch(i)[k] for i in range(20)]) for k in range(3))
    error = (inputs - targets).abs()
    # the input lost detail along the rows only: its row-to-row differences are smaller than the target's
    rows = lambda x: (x[..., 1:, :] - x[..., :-1, :]).abs().mean()  # noqa: E731
    cols = lambda x: (x[..., :, 1:] - x[..., :, :-1]).abs().mean()  # noqa: E731
    assert rows(inputs) < 0.8 * rows(targets) and cols(inputs) > 0.8 * cols(targets) and error.mean() > 0


def test_a_sampler_of_one_factor_simulates_only_that_factor(monkeypatch):
    import CohfTSuperResLib.data.planes as planes

    drawn = []
    simulate = planes.simulated_plane
    monkeypatch.setattr(planes, "simulated_plane", lambda thin, factor, *a, **k: (drawn.append(factor),
                                                                                 simulate(thin, factor, *a, **k))[1])
    PlaneSampler([_pack_volume("a", "train")], patch=24, batch_size=4, seed=1, factors=(4,)).batch(0)
    PlaneSampler([_pack_volume("a", "train")], patch=24, batch_size=16, seed=1).batch(0)
    assert drawn[:4] == [4] * 4 and len(set(drawn[4:])) > 2
    with pytest.raises(ValueError, match="factors must be among"):
        PlaneSampler([_pack_volume("a", "train")], patch=24, batch_size=1, factors=(7,))


def test_a_volume_too_small_for_thick_slices_is_refused():
    with pytest.raises(ValueError, match="too small"):
        PlaneSampler([_pack_volume("a", "train", shape=(7, 7, 7))], patch=8, batch_size=1)


def test_validation_planes_are_x4_box_planes_across_the_last_axis():
    planes = validation_planes([_pack_volume("v", "val")], count=5)
    assert planes.num_slices == 5 and len(planes.slices()) == 5
    assert planes.lr[0].shape == planes.hr[0].shape == planes.t1[0].shape == (5, 28, 36)


def test_a_network_of_some_factors_is_validated_at_one_of_them():
    """Checkpoints of a network of factor 6 are chosen at factor 6, not at the x4 of the network of every factor."""
    assert validation_factor((2, 3, 4, 5, 6)) == 4 and validation_factor((4,)) == 4
    assert validation_factor((6,)) == 6 and validation_factor((2, 3)) == 3 and validation_factor((3, 5)) == 5
    planes = validation_planes([_pack_volume("v", "val")], validation_factor((6,)), count=2)
    assert planes.factor == 6 and planes.names == ["v (x6 box across axis 0)"] and planes.hr[0].shape[1] % 6 == 0


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("through_plane_models")
    return {"guided": save_tiny(folder, THROUGH_PLANE_SCALE), "unguided": save_tiny(folder, THROUGH_PLANE_SCALE, False),
            "in-plane": save_tiny(folder, 2)}


def _thin_head(size=(24, 28, 32), spacing=(1.0, 1.0, 1.0), seed=0) -> sitk.Image:
    """A smooth head-like volume of thin slices, sitk size (i, j, k)."""
    k, j, i = np.meshgrid(*(np.linspace(-1, 1, n) for n in reversed(size)), indexing="ij")
    head = (i**2 + j**2 + k**2 < 0.8) * (100 + 30 * np.sin(5 * i) * np.cos(4 * k) + seed)
    image = sitk.GetImageFromArray(head.astype(np.float32))
    image.SetSpacing(spacing)
    image.SetOrigin((-10.0, 5.0, 2.0))
    return image


def _run(thick: sitk.Image, t1: sitk.Image | None, model: Path, **options) -> sitk.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return super_resolve(thick, t1, mode="through-plane", model_path=model, device="cpu", guide_check="off",
                             **options)


@pytest.mark.parametrize("thick_axis", [0, 1, 2])
def test_the_output_tiles_the_thick_slices_on_the_thin_grid_along_any_axis(models, thick_axis):
    t1 = _thin_head(seed=1)
    thick = thick_slice_volume(_thin_head(), 4, thick_axis)
    before = sitk.GetArrayFromImage(thick).copy()
    result = _run(thick, t1, models["guided"])
    expected = thin_slice_grid(Grid.of(thick), 4, thick_axis)
    assert result.GetSize() == expected.size
    np.testing.assert_allclose(result.GetSpacing(), expected.spacing)
    np.testing.assert_allclose(result.GetOrigin(), expected.origin, atol=1e-6)
    np.testing.assert_allclose(result.GetDirection(), thick.GetDirection())
    np.testing.assert_array_equal(sitk.GetArrayFromImage(thick), before)  # the input is not modified
    voxels = sitk.GetArrayFromImage(result)
    assert np.isfinite(voxels).all() and voxels.max() > 50  # in the T2's units
    assert "through-plane x4" in result.GetMetaData("cohft_model")


def test_the_thick_axis_is_found_and_the_result_does_not_depend_on_the_voxel_order(models):
    """The same physical volume stored with its thick axis first or last gives the same thin slices."""
    thick = thick_slice_volume(_thin_head(), 3, 2)
    permuted = sitk.PermuteAxes(thick, (2, 0, 1))
    a = _run(thick, None, models["unguided"])
    b = sitk.PermuteAxes(_run(permuted, None, models["unguided"]), (1, 2, 0))
    np.testing.assert_allclose(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b), atol=1e-4)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-6)


def test_slice_spacing_chooses_the_thin_slices_and_anisotropic_pixels_run(models):
    thick = thick_slice_volume(_thin_head(spacing=(0.8, 1.1, 1.0)), 6, 2)  # 6 mm slices, 0.8 x 1.1 mm pixels
    assert _run(thick, None, models["unguided"]).GetSize()[2] == 6 * thick.GetSize()[2]  # default: 0.8 mm -> 6
    coarse = _run(thick, None, models["unguided"], slice_spacing=2.0)
    assert coarse.GetSize()[2] == 3 * thick.GetSize()[2] and coarse.GetSpacing()[2] == pytest.approx(2.0)


def test_two_thin_slices_are_the_average_of_a_restoration_of_four(models):
    """2 thin slices per thick slice: 4 thin slices of the same thick slice restored, averaged in pairs, on the grid
    of the factor asked for; 3-6 restored directly."""
    from CohfTSuperResLib.inference.through_plane import supersampling

    factor, finer = 2, 2
    assert supersampling(factor) == finer and all(supersampling(n) == 1 for n in (3, 4, 5, 6))
    thick, t1 = thick_slice_volume(_thin_head(), 6, 2), _thin_head(seed=1)
    fine = sitk.GetArrayFromImage(_run(thick, t1, models["guided"], slice_spacing=6.0 / (finer * factor)))
    result = _run(thick, t1, models["guided"], slice_spacing=6.0 / factor)
    expected = thin_slice_grid(Grid.of(thick), factor, 2)
    assert result.GetSize() == expected.size
    np.testing.assert_allclose(result.GetOrigin(), expected.origin, atol=1e-6)
    np.testing.assert_allclose(sitk.GetArrayFromImage(result),
                               fine.reshape(-1, finer, *fine.shape[1:]).mean(axis=1), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("make, options, message", [
    (lambda: _thin_head(), {}, "not thick"),  # thin-slice input
    (lambda: thick_slice_volume(_thin_head(), 4, 2), {"slice_spacing": 0.5}, "at most 6"),
    (lambda: thick_slice_volume(_thin_head(), 4, 2)[:, :, 2], {}, "single 2-D slice"),
])
def test_inputs_the_through_plane_mode_can_not_serve_are_refused(models, make, options, message):
    with pytest.raises(InputError, match=message):
        _run(make(), None, models["unguided"], **options)


def test_models_of_the_other_mode_are_refused(models):
    thick = thick_slice_volume(_thin_head(), 4, 2)
    with pytest.raises(InputError, match="in-plane x2 model, but through-plane"):
        _run(thick, _thin_head(seed=1), models["in-plane"])
    with pytest.raises(InputError, match="through-plane model, but in-plane x2"):
        super_resolve(thick, _thin_head(seed=1), model_path=models["guided"], device="cpu", guide_check="off")
    with pytest.raises(InputError, match="slice_spacing sets the thin slices of the through-plane mode"):
        RunOptions(slice_spacing=1.0)


def test_the_shipped_network_of_the_factor_it_runs_at_is_chosen(tmp_path, monkeypatch):
    """With a network of every factor and one of factor 4 alone shipped, a run at 4 thin slices per thick slice (and
    at 2, which runs the network at 4: supersampling) uses the one of factor 4, other factors the one of every factor;
    the user chooses one through-plane model, the check of its guide the network of its factor."""
    import json

    from CohfTSuperResLib.info import info_lines
    from CohfTSuperResLib.weights import registry
    from CohfTSuperResLib.weights.storage import save_weights

    from inference_helpers import tiny_model

    folder = tmp_path / "Models"
    entries = []
    for name, seed, use_t1, factors in (("every", 0, True, None), ("four", 7, True, [4]),
                                        ("every_noT1", 0, False, None)):
        digest = save_weights(tiny_model(THROUGH_PLANE_SCALE, use_t1, seed), folder / f"{name}.safetensors")
        entries.append({"variant": "S", "scale": THROUGH_PLANE_SCALE, "use_t1": use_t1, "file": f"{name}.safetensors",
                        "sha256": digest} | ({} if factors is None else {"factors": factors}))
    (folder / "models.json").write_text(json.dumps({"models": entries}))
    monkeypatch.setenv(registry.MODELS_ENV, str(folder))
    chosen = {factor: registry.find_model("S", THROUGH_PLANE_SCALE, True, factor).file for factor in (None, 3, 4)}
    assert chosen == {None: "every.safetensors", 3: "every.safetensors", 4: "four.safetensors"}
    assert registry.find_model("S", THROUGH_PLANE_SCALE, False, 4).file == "every_noT1.safetensors"
    assert registry.available_models() == [("S", THROUGH_PLANE_SCALE, True), ("S", THROUGH_PLANE_SCALE, False)]
    assert registry.describe_models(registry.available_models()) == "S through-plane (with T1); S through-plane " \
                                                                     "(without T1)"
    assert "  four.safetensors (sha256 %s; thick-slice factors 4)" % entries[1]["sha256"][:12] in info_lines()
    t1 = _thin_head(seed=1)
    for thin_per_thick, file in ((4, "four"), (2, "four"), (3, "every")):
        thick = thick_slice_volume(_thin_head(), 4, 2)
        shipped = super_resolve(thick, t1, mode="through-plane", device="cpu", guide_check="off",
                                slice_spacing=4.0 / thin_per_thick)
        given = _run(thick, t1, folder / f"{file}.safetensors", slice_spacing=4.0 / thin_per_thick)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(shipped), sitk.GetArrayFromImage(given))
    (folder / "models.json").write_text(json.dumps({"models": entries[:1] + [entries[1] | {"factors": [7]}]}))
    with pytest.raises(WeightsError, match="names models this library cannot run: four.safetensors"):
        registry.shipped_models()


def test_the_command_line_and_a_cohort_row_run_through_plane(models, tmp_path, capsys):
    thick = thick_slice_volume(_thin_head(), 4, 2)
    sitk.WriteImage(thick, str(tmp_path / "thick.nii.gz"))
    sitk.WriteImage(_thin_head(seed=1), str(tmp_path / "t1.nii.gz"))
    assert cli.main(["run", "--t2", str(tmp_path / "thick.nii.gz"), "--t1", str(tmp_path / "t1.nii.gz"),
                     "--through-plane", "--slice-spacing", "2", "--model", str(models["guided"]), "--guide-check",
                     "off", "--device", "cpu", "-o", str(tmp_path / "thin.nii.gz")]) == 0
    assert sitk.ReadImage(str(tmp_path / "thin.nii.gz")).GetSize()[2] == 2 * thick.GetSize()[2]
    (tmp_path / "cases.csv").write_text("t2,output,mode\nthick.nii.gz,cohort_thin.nrrd,through-plane\n"
                                        "thick.nii.gz,cohort_bad.nrrd,sideways\n")
    assert cli.main(["run", "--manifest", str(tmp_path / "cases.csv"), "--model", str(models["unguided"])]) == 1
    assert "mode 'sideways' is not one of in-plane, through-plane" in capsys.readouterr().err
    (tmp_path / "cases.csv").write_text("t2,output,mode\nthick.nii.gz,cohort_thin.nrrd,through-plane\n")
    assert cli.main(["run", "--manifest", str(tmp_path / "cases.csv"), "--model", str(models["unguided"]),
                     "--slice-spacing", "2"]) == 1  # a setting of the through-plane mode: said how to give it
    assert "with a manifest, pass --through-plane too" in capsys.readouterr().err
    assert cli.main(["run", "--t2", str(tmp_path / "thick.nii.gz"), "--through-plane", "--scale", "3", "--model",
                     str(models["unguided"]), "-o", str(tmp_path / "x.nii.gz")]) == 1  # not silently ignored
    assert "--scale sets the in-plane factor; through-plane, the thin slices" in capsys.readouterr().err
    assert cli.main(["run", "--manifest", str(tmp_path / "cases.csv"), "--model", str(models["unguided"]),
                     "--guide-check", "off", "--device", "cpu"]) == 0
    assert sitk.ReadImage(str(tmp_path / "cohort_thin.nrrd")).GetSize()[2] == 4 * thick.GetSize()[2]
    with open(tmp_path / "cases_summary.csv", newline="") as handle:
        assert "through-plane x4" in next(csv.DictReader(handle))["model"]


def test_a_tiny_through_plane_training_run_writes_a_scale_1_model_started_from_an_in_plane_one(tmp_path):
    import json

    from CohfTSuperResLib.data.pack import write_pack
    from CohfTSuperResLib.model import build_model
    from CohfTSuperResLib.training import train
    from CohfTSuperResLib.weights.storage import load_model, read_metadata, save_weights

    pack = write_pack([_pack_volume("a", "train"), _pack_volume("b", "val", seed=1)], tmp_path / "pack.npz")
    save_weights(build_model("S", 2), tmp_path / "in_plane.safetensors")
    out = tmp_path / "run"
    assert train.main(["--pack", str(pack), "--out", str(out), "--through-plane", "--variant", "S", "--patch", "12",
                       "--batch-size", "2", "--iterations", "2", "--threads", "1", "--device", "cpu", "--no-progress",
                       "--init", str(tmp_path / "in_plane.safetensors")]) == 0
    model = load_model(out / "best.safetensors")
    assert model.config.scale == THROUGH_PLANE_SCALE and model.config.use_t1
    assert "factors 2-6" in read_metadata(out / "best.safetensors")["grid"]
    summary = json.loads((out / "run.json").read_text())
    copied, total = (int(n) for n in summary["init"]["tensors"].split(" (")[0].split(" of "))
    assert 0.9 * total < copied < total  # all but the scale-dependent tensors
    assert summary["data"]["val_slices"] == 12 and np.isfinite(summary["best"]["val_psnr"])
    assert train.main(["--pack", str(pack), "--out", str(tmp_path / "four"), "--through-plane", "--factors", "4",
                       "--patch", "12", "--batch-size", "1", "--iterations", "1", "--threads", "1", "--device", "cpu",
                       "--no-progress"]) == 0
    header = read_metadata(tmp_path / "four" / "best.safetensors")
    assert header["grid"].endswith("factors 4") and header["factors"] == [4]


def test_the_through_plane_guide_check_decides_under_each_policy(models, monkeypatch):
    """A T1 the check vouches for is used; one it does not, or that it can not check (too few thick slices), runs
    the shipped model without T1 under 'auto', the guided one with a warning under 'warn', stops under 'refuse';
    'off' uses it without a check; a weights file of the user's runs as given."""
    from CohfTSuperResLib.errors import GuideNote
    from CohfTSuperResLib.inference import engine
    from CohfTSuperResLib.inference.guide_check import GuideVerdict
    from CohfTSuperResLib.weights.storage import load_model

    thick, t1 = thick_slice_volume(_thin_head(), 4, 2), _thin_head(seed=1)
    used = []
    monkeypatch.setattr(engine, "find_model",
                        lambda variant, scale, use_t1, factor: used.append((scale, use_t1, factor)))
    real_loader = engine.load_runner

    def loader(options, use_t1, adapt=None, factor=None):  # the shipped pair, played by the tiny models
        from CohfTSuperResLib.inference.backends import TorchRunner

        if options.model_path is not None:
            return real_loader(options, use_t1, adapt, factor)
        return TorchRunner(load_model(models["guided" if use_t1 else "unguided"]))

    verdicts = []

    def check(checked, options):
        assert checked.scale == 4 and options.through_plane
        return verdicts[-1]

    monkeypatch.setattr(engine, "load_runner", loader)
    monkeypatch.setattr(engine, "check_through_plane_guide", check)

    def model_run(policy: str, t2: sitk.Image = thick) -> str:
        return super_resolve(t2, t1, mode="through-plane", device="cpu", guide_check=policy).GetMetaData(
            "cohft_model")

    verdicts.append(GuideVerdict(0.9, True, 0.3, 32, None, 1.0))
    for policy in ("auto", "warn", "refuse"):
        with pytest.warns(GuideNote, match=r"helps on this T2 \(proxy benefit \+0.90 dB.*; running with the T1"):
            assert model_run(policy).endswith("with T1")
    few = thick_slice_volume(_thin_head(size=(24, 28, 4 * (MIN_THICK_SLICES - 1))), 4, 2)
    for verdict, t2, said in ((GuideVerdict(-0.4, False, 0.3, 32, (0.0, 0.0, 2.0), 1.0), thick, "does not help"),
                              (None, few, "too few thick slices to check the T1")):
        verdicts.append(verdict)
        with pytest.warns(GuideNote, match=f"{said}.*; running the model without T1 instead"):
            assert model_run("auto", t2).endswith("without T1")
        with pytest.warns(GuideNote, match=f"{said}.*; running with the T1 anyway"):
            assert model_run("warn", t2).endswith("with T1")
        with pytest.raises(InputError, match=f"{said}.*not run .guide check 'refuse'"):
            model_run("refuse", t2)
        assert model_run("off", t2).endswith("with T1")
        with pytest.warns(GuideNote, match="running tiny_x1.safetensors with the T1 all the same"):
            super_resolve(t2, t1, mode="through-plane", model_path=models["guided"], device="cpu")
    assert used == [(THROUGH_PLANE_SCALE, False, 4)] * 2


def test_a_t2_of_too_few_thick_slices_is_not_checked():
    from CohfTSuperResLib.inference.input_checks import check_inputs
    from CohfTSuperResLib.inference.through_plane_guide_check import check_through_plane_guide

    thick = thick_slice_volume(_thin_head(size=(24, 28, 4 * (MIN_THICK_SLICES - 1))), 4, 2)
    checked = check_inputs(thick, _thin_head(seed=1), 2, 2, "through-plane", 1.0)
    assert check_through_plane_guide(checked, RunOptions(mode="through-plane", device="cpu")) is None


@pytest.mark.parametrize("factor", sorted(DECLINED_FACTORS))
def test_the_t1_is_declined_unchecked_at_a_declined_factor(factor, monkeypatch):
    """Where the shipped guided network of a factor gains too little from a T1 (DECLINED_FACTORS), the check declines
    the T1 without measuring (no network is loaded), says why, runs the shipped model without T1 and records why
    with the output; at 4 it measures."""
    from CohfTSuperResLib.errors import GuideNote
    from CohfTSuperResLib.inference import through_plane_guide_check
    from CohfTSuperResLib.inference.input_checks import check_inputs
    from CohfTSuperResLib.inference.through_plane_guide_check import check_through_plane_guide, unchecked_reason

    monkeypatch.setattr(through_plane_guide_check, "load_runner", lambda *args, **kwargs: pytest.fail("measured"))
    head, t1 = _thin_head(size=(24, 28, 36)), _thin_head(seed=1)
    declined = check_inputs(thick_slice_volume(head, factor, 2), t1, 2, 2, "through-plane", 1.0)
    assert check_through_plane_guide(declined, RunOptions(mode="through-plane", device="cpu")) is None
    assert f"restores {factor} thin slices per thick slice" in unchecked_reason(declined)
    assert unchecked_reason(check_inputs(thick_slice_volume(head, 4, 2), t1, 2, 2, "through-plane", 1.0)) is None
    with pytest.warns(GuideNote, match=f"restores {factor} thin slices.*; running the model without T1 instead"):
        output = super_resolve(thick_slice_volume(head, factor, 2), t1, mode="through-plane", slice_spacing=1.0,
                               device="cpu")
    assert output.GetMetaData("cohft_model").endswith("without T1")
    assert output.GetMetaData("cohft_guide_check").startswith(f"declined unchecked: the network that restores {factor}")


@pytest.fixture(scope="module")
def patient26_pair(open_ms: Path) -> tuple[sitk.Image, sitk.Image, sitk.Image]:
    """The held-out patient26 T2 and T1 (slices 40-139) and patient07's T1 placed on its tissue (foreign)."""
    from CohfTSuperResLib.evaluation.guide_cases import foreign_guide

    read = lambda name: sitk.ReadImage(str(open_ms / "mni" / name), sitk.sitkFloat32)  # noqa: E731
    t2, t1 = read("patient26/t2.nii.gz")[:, :, 40:140], read("patient26/t1.nii.gz")
    return t2, t1, foreign_guide(read("patient07/t1.nii.gz"), t2)


@pytest.mark.parametrize("thick_axis", [2, pytest.param(0, marks=pytest.mark.slow)])
def test_the_through_plane_guide_check_tells_the_registered_t1_from_bad_ones(patient26_pair, thick_axis):
    """On held-out data (shipped models): the registered T1 passes, another subject's T1 and the T1 moved 3 mm along
    the thick axis do not, whichever voxel axis is thick."""
    from CohfTSuperResLib.inference.geometry import translated
    from CohfTSuperResLib.inference.input_checks import check_inputs
    from CohfTSuperResLib.inference.through_plane_guide_check import check_through_plane_guide

    t2, t1, other = patient26_pair
    thick = thick_slice_volume(t2, 4, thick_axis)
    move = [0.0, 0.0, 0.0]
    move[thick_axis] = 3.0
    options = RunOptions(mode="through-plane", device="cpu")
    for name, guide in (("registered", t1), ("moved", translated(t1, tuple(move))), ("foreign", other)):
        verdict = check_through_plane_guide(check_inputs(thick, guide, 2, thick_axis, "through-plane", 1.0), options)
        assert verdict.helps == (name == "registered"), (name, verdict.summary())


def test_the_onnx_backend_gives_the_torch_result_through_plane(models, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from CohfTSuperResLib.inference.onnx_export import export_onnx
    from CohfTSuperResLib.weights.storage import load_model

    onnx_file = export_onnx(load_model(models["guided"]), tmp_path / "through_plane.onnx")
    thick, t1 = thick_slice_volume(_thin_head(), 4, 2), _thin_head(seed=1)
    reference = sitk.GetArrayFromImage(_run(thick, t1, models["guided"]))
    exported = sitk.GetArrayFromImage(_run(thick, t1, onnx_file, backend="onnx"))
    np.testing.assert_allclose(exported, reference, atol=1e-3 * np.abs(reference).max())


@pytest.mark.slow
def test_the_through_plane_guide_check_on_t1s_thick_along_the_thick_axis(open_ms):
    """A 2-D T1 in the T2's orientation (both 5 mm axial, shipped models, whole held-out volumes): the check keeps
    patient26's, which still helps, and declines the BraTS case's, which costs (docs/benchmarks.md, "What the BraTS
    case's T1 leaves to gain")."""
    import sys

    from CohfTSuperResLib.inference.input_checks import check_inputs
    from CohfTSuperResLib.inference.through_plane_guide_check import check_through_plane_guide

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    try:
        from thick_t1 import thick_axial
    finally:
        sys.path.pop(0)
    brats = open_ms.parent / "brats_gli" / "BraTS-GLI-00000-000"
    if not brats.is_dir():
        pytest.skip(f"the BraTS case is not found at {brats}")
    options = RunOptions(mode="through-plane", device="cpu", slice_spacing=1.0)
    for folder, kept in ((open_ms / "mni" / "patient26", True), (brats, False)):
        t2, t1 = (sitk.ReadImage(str(folder / f"{name}.nii.gz"), sitk.sitkFloat32) for name in ("t2", "t1"))
        checked = check_inputs(thick_slice_volume(t2, 4, 2), thick_axial(t1, 5), 2, 2, "through-plane", 1.0)
        verdict = check_through_plane_guide(checked, options)
        assert verdict.helps == kept, (folder.name, verdict.summary())
