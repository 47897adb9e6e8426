"""super_resolve: geometry, intensities, validation, progress / cancel, batching, OOM fallback, tiling."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from inference_helpers import guide_for, save_tiny, tiny_model, volume

from CohfTSuperResLib.inference import slice_run
from CohfTSuperResLib.inference.backends import TorchRunner
from CohfTSuperResLib.inference.batching import run_in_batches, slice_bytes
from CohfTSuperResLib.errors import InferenceCancelled, InputError, WeightsError
from CohfTSuperResLib.inference.engine import super_resolve
from CohfTSuperResLib.inference.tiling import run_tiled

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    return {scale: save_tiny(folder, scale) for scale in (2, 3)} | {"no_t1": save_tiny(folder, 2, use_t1=False)}


@pytest.fixture
def pair():
    t2 = volume((4, 22, 26), spacing=(0.8, 0.9, 3.0), origin=(-5.0, 3.0, 10.0))
    return t2, guide_for(t2, 2)


def test_output_grid_type_and_inputs_untouched(pair, weights):
    t2, t1 = pair
    before = sitk.GetArrayFromImage(t2).copy(), sitk.GetArrayFromImage(t1).copy()
    out = super_resolve(t2, t1, 2, model_path=weights[2], device="cpu", guide_check="off")
    assert out.GetSize() == (52, 44, 4)
    assert out.GetSpacing() == pytest.approx((0.4, 0.45, 3.0))
    assert out.GetOrigin() == t2.GetOrigin() and out.GetDirection() == t2.GetDirection()
    assert out.GetPixelID() == sitk.sitkFloat32
    np.testing.assert_array_equal(sitk.GetArrayFromImage(t2), before[0])
    np.testing.assert_array_equal(sitk.GetArrayFromImage(t1), before[1])
    values = sitk.GetArrayFromImage(out)
    assert np.isfinite(values).all()


def test_deterministic(pair, weights):
    runs = [sitk.GetArrayFromImage(super_resolve(*pair, 2, model_path=weights[2], device="cpu", guide_check="off")) for _ in range(2)]
    np.testing.assert_array_equal(*runs)


def test_background_stays_exactly_zero(pair, weights):
    t2, t1 = pair
    lr = sitk.GetArrayFromImage(t2)
    out = sitk.GetArrayFromImage(super_resolve(t2, t1, 2, model_path=weights[2], device="cpu", guide_check="off"))
    # an HR sample x reads LR samples floor(x/2)-1 .. floor(x/2)+2; where all are 0 the SR must be exactly 0
    background = np.zeros(out.shape, dtype=bool)
    for k, y, x in np.ndindex(*out.shape):
        rows = slice(max(y // 2 - 1, 0), y // 2 + 3)
        cols = slice(max(x // 2 - 1, 0), x // 2 + 3)
        background[k, y, x] = not lr[k, rows, cols].any()
    assert 0.1 < background.mean() < 0.9
    assert (out[background] == 0).all() and (out[~background] != 0).mean() > 0.99


def test_slice_axis_is_the_stacking_axis(pair, weights):
    t2, t1 = pair
    reference = sitk.GetArrayFromImage(super_resolve(t2, t1, 2, model_path=weights[2], device="cpu", guide_check="off"))
    order = (2, 0, 1)  # new voxel axis 0 = old slice axis 2
    permuted = [sitk.PermuteAxes(image, order) for image in (t2, t1)]
    out = super_resolve(*permuted, 2, model_path=weights[2], device="cpu", slice_axis=0, guide_check="off")
    back = sitk.GetArrayFromImage(sitk.PermuteAxes(out, (1, 2, 0)))
    np.testing.assert_allclose(back, reference, atol=1e-4 * np.abs(reference).max())


def test_progress_and_empty_slices_skipped(weights, monkeypatch):
    t2 = volume((5, 22, 26))
    voxels = sitk.GetArrayFromImage(t2)
    voxels[2] = 0
    empty = sitk.GetImageFromArray(voxels)
    empty.CopyInformation(t2)
    seen, calls = [], []
    original = TorchRunner.run
    monkeypatch.setattr(
        TorchRunner, "run", lambda self, lr, t1, d: calls.append(lr.shape[0]) or original(self, lr, t1, d)
    )
    out = super_resolve(empty, guide_for(t2, 2), 2, model_path=weights[2], device="cpu", batch_size=2,
                        progress=lambda done, total: seen.append((done, total)), guide_check="off")
    assert sum(calls) == 4 and max(calls) == 2
    assert seen[0] == (1, 5) and seen[-1] == (5, 5) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert (sitk.GetArrayFromImage(out)[2] == 0).all()


def test_on_the_cpu_progress_comes_slice_by_slice(weights):
    """Without batch_size the CPU runs one slice at a time, so the Slicer bar moves with every slice (docs/slicer.md)."""
    t2 = volume((5, 22, 26))
    seen = []
    super_resolve(t2, guide_for(t2, 2), 2, model_path=weights[2], device="cpu", guide_check="off",
                  progress=lambda done, total: seen.append((done, total)))
    assert [done for done, _ in seen if done] == [1, 2, 3, 4, 5] and {total for _, total in seen} == {5}


def test_cancel(pair, weights):
    with pytest.raises(InferenceCancelled):
        super_resolve(*pair, 2, model_path=weights[2], device="cpu", batch_size=1, cancel=lambda: True, guide_check="off")


def test_model_without_t1(weights):
    t2 = volume((2, 20, 20))
    out = super_resolve(t2, None, 2, model_path=weights["no_t1"], device="cpu", guide_check="off")
    assert out.GetSize() == (40, 40, 2)
    with pytest.raises(InputError, match="without a T1"):
        super_resolve(t2, guide_for(t2, 2), 2, model_path=weights["no_t1"], device="cpu", guide_check="off")


def _bad_images():
    good = volume((3, 20, 20))
    nan = sitk.GetArrayFromImage(good)
    nan[0, 0, 0] = np.nan
    return {
        "3-D volume or a single 2-D slice": sitk.Image([20, 20, 3, 2], sitk.sitkFloat32),
        "scalar voxels": sitk.Image([20, 20, 3], sitk.sitkVectorFloat32, 3),
        "NaN or Inf": sitk.GetImageFromArray(nan),
        "constant": sitk.Image([20, 20, 3], sitk.sitkFloat32) + 7,
        "SimpleITK image": np.zeros((3, 20, 20)),
    }


@pytest.mark.parametrize("reason", list(_bad_images()))
def test_bad_t2_rejected_with_reason(reason, weights):
    bad = _bad_images()[reason]
    with pytest.raises(InputError, match=reason):
        super_resolve(bad, guide_for(volume((3, 20, 20)), 2), 2, model_path=weights[2], device="cpu", guide_check="off")


@pytest.mark.parametrize(
    "options,error,message",
    [
        ({"scale": 5}, InputError, "scale must be one of"),
        ({"slice_axis": 3}, InputError, "slice_axis"),
        ({"backend": "tensorflow"}, InputError, "unknown backend"),
        ({"precision": "int8"}, InputError, "unknown precision"),
        ({"variant": "XL"}, InputError, "unknown model variant"),
        ({"batch_size": 0}, InputError, "batch_size"),
        ({"device": "cuda:7"}, InputError, "device"),
        ({"scale": 3}, InputError, "is the in-plane x2 model, but in-plane x3 super-resolution"),
        ({"backend": "onnx", "precision": "bf16"}, InputError, "fp32 only"),
    ],
)
def test_bad_options_rejected(pair, weights, options, error, message):
    options = {"scale": 2, "model_path": weights[2], "device": "cpu"} | options
    with pytest.raises(error, match=message):
        super_resolve(*pair, **options, guide_check="off")


def test_missing_t1_and_missing_weights(pair, weights, tmp_path, monkeypatch):
    with pytest.raises(InputError, match="needs the registered HR T1"):
        super_resolve(pair[0], None, 2, model_path=weights[2], device="cpu", guide_check="off")
    with pytest.raises(WeightsError, match="not found"):
        super_resolve(*pair, 2, model_path=tmp_path / "absent.safetensors", device="cpu", guide_check="off")
    monkeypatch.setenv("COHFT_SR_MODELS", str(tmp_path))
    monkeypatch.setattr("CohfTSuperResLib.weights.registry.models_dir", lambda: tmp_path)
    with pytest.raises(WeightsError, match="model_path"):
        super_resolve(*pair, 2, device="cpu", guide_check="off")


def test_t1_overlap_partial_warns_and_none_fails(pair, weights):
    t2, t1 = pair
    shifted = sitk.Image(t1)
    origin = list(t1.GetOrigin())
    origin[0] += 0.5 * t2.GetSize()[0] * t2.GetSpacing()[0]
    shifted.SetOrigin(origin)
    with pytest.warns(RuntimeWarning, match=r"covers only 5\d\.\d% of the T2"):
        super_resolve(t2, shifted, 2, model_path=weights[2], device="cpu", guide_check="off")
    origin[0] += 1000
    shifted.SetOrigin(origin)
    with pytest.raises(InputError, match="does not overlap"):
        super_resolve(t2, shifted, 2, model_path=weights[2], device="cpu", guide_check="off")


def test_out_of_memory_halves_the_batch(pair, weights, monkeypatch):
    reference = sitk.GetArrayFromImage(super_resolve(*pair, 2, model_path=weights[2], device="cpu", batch_size=1, guide_check="off"))
    original, sizes = TorchRunner.run, []

    def flaky(self, lr, t1, device):
        sizes.append(lr.shape[0])
        if lr.shape[0] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return original(self, lr, t1, device)

    monkeypatch.setattr(TorchRunner, "run", flaky)
    monkeypatch.setattr(slice_run, "run_in_batches", _as_if_on_cuda(run_in_batches))
    out = sitk.GetArrayFromImage(super_resolve(*pair, 2, model_path=weights[2], device="cpu", batch_size=4, guide_check="off"))
    assert sizes[:3] == [4, 2, 1]
    np.testing.assert_allclose(out, reference, rtol=0, atol=1e-4 * np.abs(reference).max())


def _as_if_on_cuda(function):
    """run_in_batches that believes it starts on a GPU (so OOM handling is active) but runs on the CPU."""

    def wrapper(items, batch_size, device, run_batch):
        return function(items, batch_size, torch.device("cuda"), lambda chunk, _device: run_batch(chunk, device))

    return wrapper


def test_out_of_memory_at_one_slice_falls_back_to_cpu():
    devices = []

    def run_batch(chunk, device):
        devices.append((len(chunk), device.type))
        if device.type == "cuda":
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    with pytest.warns(RuntimeWarning, match="continuing on the CPU"):
        final = run_in_batches(list(range(5)), 2, torch.device("cuda"), run_batch)
    assert final.type == "cpu"
    assert devices == [(2, "cuda"), (1, "cuda"), (1, "cpu"), (1, "cpu"), (1, "cpu"), (1, "cpu"), (1, "cpu")]


def test_out_of_memory_on_cpu_is_not_hidden():
    def run_batch(chunk, device):
        raise torch.OutOfMemoryError("out of memory")

    with pytest.raises(torch.OutOfMemoryError):
        run_in_batches([0, 1], 2, torch.device("cpu"), run_batch)


def test_big_slices_are_tiled(weights, monkeypatch):
    t2 = volume((1, 70, 64))
    t1 = guide_for(t2, 2)
    whole = sitk.GetArrayFromImage(super_resolve(t2, t1, 2, model_path=weights[2], device="cpu", guide_check="off"))
    monkeypatch.setattr(slice_run, "working_memory_budget", lambda device: slice_bytes(tiny_model().config, 60, 60))
    tile_sides = []
    monkeypatch.setattr(slice_run, "run_tiled", lambda *args: tile_sides.append(args[4]) or run_tiled(*args))
    tiled = sitk.GetArrayFromImage(super_resolve(t2, t1, 2, model_path=weights[2], device="cpu", guide_check="off"))
    assert tile_sides == [60]
    # the network is global, so tiles change the result (measured sizes in docs/inference.md)
    assert np.isfinite(tiled).all() and np.abs(tiled - whole).mean() < 0.25 * np.abs(whole).mean()


def test_bf16_close_to_fp32(pair, weights):
    fp32 = sitk.GetArrayFromImage(super_resolve(*pair, 2, model_path=weights[2], device="cpu", guide_check="off"))
    bf16 = sitk.GetArrayFromImage(super_resolve(*pair, 2, model_path=weights[2], device="cpu", precision="bf16", guide_check="off"))
    assert np.abs(bf16 - fp32).mean() < 0.05 * np.abs(fp32).mean()


def test_real_clinical_pair_in_own_geometries(open_ms, weights):
    """Clinical T2 (thick axial slices) with the T1 on its own grid: resampled in physical space."""
    study = open_ms / "clinical" / "patient01_study2"
    t2 = sitk.ReadImage(str(study / "t2w.nii.gz"))[:, :, 20:22]
    t1 = sitk.ReadImage(str(study / "t1w.nii.gz"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the T1 may cover a bit less than the T2's field of view
        out = super_resolve(t2, t1, 2, model_path=weights[2], device="cpu", guide_check="off")
    assert out.GetSize() == (2 * t2.GetSize()[0], 2 * t2.GetSize()[1], 2)
    assert out.GetOrigin() == t2.GetOrigin()
    values = sitk.GetArrayFromImage(out)
    lr = sitk.GetArrayFromImage(t2).astype(np.float32)
    assert np.isfinite(values).all() and 0.2 < values.mean() / lr.mean() < 5
