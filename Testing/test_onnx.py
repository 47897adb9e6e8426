"""ONNX export (dynamic batch and slice size) and ONNX Runtime parity with torch on real slices."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from inference_helpers import guide_for, save_tiny, tiny_model, volume

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from CohfTSuperResLib.inference.batching import input_multiple, size_multiple  # noqa: E402
from CohfTSuperResLib.errors import InputError, WeightsError  # noqa: E402
from CohfTSuperResLib.inference.engine import super_resolve  # noqa: E402
from CohfTSuperResLib.model import build_model  # noqa: E402
from CohfTSuperResLib.model.partition import pad_to_multiple  # noqa: E402
from CohfTSuperResLib.imageio.normalize import normalize, robust_scale  # noqa: E402
from CohfTSuperResLib.inference.onnx_export import OnnxRunner, cached_export, export_onnx, onnx_providers  # noqa: E402
from CohfTSuperResLib.weights.storage import sha256_of  # noqa: E402

torch.set_num_threads(1)
PARITY = 1e-4  # max abs difference, normalised intensity units


def _real_batch(mni_slices, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two real LR T2 slices (the MNI slice and its mirror) with their HR T1, normalised, padded to 30."""
    size = 60 * scale  # crop so every scale sees the same field and the LR side is a multiple of 30
    hr_t2, hr_t1 = (mni_slices[n][40 : 40 + size, 30 : 30 + size] for n in ("t2", "t1"))
    lr = normalize(hr_t2[::scale, ::scale].copy(), robust_scale(mni_slices["t2"]))
    t1 = normalize(hr_t1.copy(), robust_scale(mni_slices["t1"]))
    lr_batch = torch.from_numpy(np.stack([lr, lr[:, ::-1].copy()]))[:, None]
    t1_batch = torch.from_numpy(np.stack([t1, t1[:, ::-1].copy()]))[:, None]
    return pad_to_multiple(lr_batch, 30), pad_to_multiple(t1_batch, 30 * scale)


@pytest.fixture(scope="module")
def exported_x2(tmp_path_factory):
    """Tiny x2 weights and their ONNX export, placed in a private cache as super_resolve(backend='onnx', guide_check="off") does."""
    folder = tmp_path_factory.mktemp("onnx")
    weights = save_tiny(folder, 2)
    cache = folder / "cache"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COHFT_SR_CACHE", str(cache))
        onnx_file = cached_export(tiny_model(2), sha256_of(weights))
    return {"weights": weights, "onnx": onnx_file, "cache": cache}


def _parity(network, path, lr, t1) -> float:
    if not path.is_file():
        export_onnx(network, path)
    with torch.inference_mode():
        expected = network(lr, t1)[0]
    return float((OnnxRunner(path, "cpu")(lr, t1) - expected).abs().max())


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_parity_on_real_slices_tiny(mni_slices, tmp_path, exported_x2, scale):
    lr, t1 = _real_batch(mni_slices, scale)
    path = exported_x2["onnx"] if scale == 2 else tmp_path / "tiny.onnx"
    assert _parity(tiny_model(scale), path, lr, t1) < PARITY


@pytest.mark.slow
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_parity_on_real_slices_variant_s(mni_slices, tmp_path, scale):
    torch.manual_seed(scale)
    lr, t1 = _real_batch(mni_slices, scale)
    assert _parity(build_model("S", scale).eval(), tmp_path / "s.onnx", lr, t1) < PARITY


def test_dynamic_batch_and_size_and_metadata(exported_x2):
    network = tiny_model(2)
    runner = OnnxRunner(exported_x2["onnx"], "cpu")
    assert runner.config == network.config and runner.providers == ["CPUExecutionProvider"]
    # sides the engine gives: multiples of the input multiple (6), at least the size multiple (30); the
    # inter-modality attention pads inside the graph
    multiple, minimum = input_multiple(network.config), size_multiple(network.config)
    for batch, rows, cols in [(1, minimum, minimum + multiple), (3, minimum + 3 * multiple, 2 * minimum)]:
        lr, t1 = torch.rand(batch, 1, rows, cols), torch.rand(batch, 1, 2 * rows, 2 * cols)
        with torch.inference_mode():
            expected = network(lr, t1)[0]
        assert float((runner(lr, t1) - expected).abs().max()) < PARITY


def test_onnx_backend_of_super_resolve_matches_torch(exported_x2, monkeypatch):
    monkeypatch.setenv("COHFT_SR_CACHE", str(exported_x2["cache"]))
    weights, onnx_file = exported_x2["weights"], exported_x2["onnx"]
    t2 = volume((3, 22, 26))
    t1 = guide_for(t2, 2)
    by_torch = sitk.GetArrayFromImage(super_resolve(t2, t1, 2, model_path=weights, device="cpu", guide_check="off"))
    by_onnx = sitk.GetArrayFromImage(super_resolve(t2, t1, 2, model_path=weights, device="cpu", backend="onnx", guide_check="off"))
    np.testing.assert_allclose(by_onnx, by_torch, rtol=0, atol=PARITY * float(np.abs(by_torch).max()))
    direct = sitk.GetArrayFromImage(super_resolve(t2, t1, 2, model_path=onnx_file, device="cpu", backend="onnx", guide_check="off"))
    np.testing.assert_array_equal(direct, by_onnx)
    with pytest.raises(InputError, match="backend='onnx'"):
        super_resolve(t2, t1, 2, model_path=onnx_file, device="cpu", guide_check="off")


def test_onnx_runs_the_self_ensemble_as_torch_does(exported_x2, monkeypatch):
    """The transposed copies of a self-ensemble swap the slice's sides: the export's dynamic sizes take them."""
    monkeypatch.setenv("COHFT_SR_CACHE", str(exported_x2["cache"]))
    t2 = volume((2, 22, 26))
    t1 = guide_for(t2, 2)
    by_torch, by_onnx = (sitk.GetArrayFromImage(super_resolve(t2, t1, 2, model_path=exported_x2["weights"],
                                                              device="cpu", backend=backend, guide_check="off",
                                                              self_ensemble=8))
                         for backend in ("torch", "onnx"))
    np.testing.assert_allclose(by_onnx, by_torch, rtol=0, atol=PARITY * float(np.abs(by_torch).max()))


def test_providers():
    assert onnx_providers("cpu") == ["CPUExecutionProvider"]
    assert onnx_providers("auto")[-1] == "CPUExecutionProvider"
    with pytest.raises(InputError):
        onnx_providers("mps")


def test_export_command(tmp_path, capsys):
    from CohfTSuperResLib.cli import main

    weights = save_tiny(tmp_path, 3)
    assert main(["export-onnx", "--model", str(weights), "-o", str(tmp_path / "x3.onnx")]) == 0
    assert OnnxRunner(tmp_path / "x3.onnx", "cpu").config.scale == 3
    assert "torchvision" not in capsys.readouterr().err
    assert main(["export-onnx", "--model", str(weights), "-o", str(tmp_path / "x3.pt")]) == 1
    blocker = tmp_path / "file"
    blocker.write_text("")
    capsys.readouterr()
    assert main(["export-onnx", "--model", str(weights), "-o", str(blocker / "x3.onnx")]) == 1  # before exporting
    assert "its folder can not be created" in capsys.readouterr().err


def test_damaged_cache_is_exported_again_not_used(tmp_path, monkeypatch):
    """A cached export that differs from the digest recorded when it was written (damaged, replaced) is rebuilt."""
    monkeypatch.setenv("COHFT_SR_CACHE", str(tmp_path))
    network = tiny_model(2)
    path = cached_export(network, "key")
    original = path.read_bytes()
    path.write_bytes(original[: len(original) // 2])  # a broken cache file
    assert cached_export(network, "key") == path and path.read_bytes() == original
    (path.with_name(path.name + ".sha256")).unlink()  # no record of a complete export: not trusted either
    cached_export(network, "key")
    assert path.read_bytes() == original


def test_onnx_model_with_nan_weights_is_refused_on_load(tmp_path):
    import onnx
    from onnx import numpy_helper

    path = export_onnx(tiny_model(2), tmp_path / "m.onnx")
    model = onnx.load(str(path))
    first = next(t for t in model.graph.initializer if numpy_helper.to_array(t).size > 8)
    poisoned = numpy_helper.to_array(first).copy()
    poisoned.flat[0] = np.nan
    first.CopyFrom(numpy_helper.from_array(poisoned, first.name))
    onnx.save(model, str(path))
    with pytest.raises(WeightsError, match="NaN or Inf on a test input"):
        OnnxRunner(path, "cpu")
