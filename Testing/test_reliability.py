"""The fault table of docs/reliability.md that the other test files do not already cover:
pixel types, negative intensities, single 2-D slices, tiny slices, weights that are
missing / truncated / tampered / foreign, ONNX models of the wrong scale, output files
that cannot be written, and what the library source may never do (pickle, network, shell)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from inference_helpers import guide_for, save_tiny, tiny_model, volume

from CohfTSuperResLib.weights import registry as models_registry
from CohfTSuperResLib.imageio import volumes as volume_io
from CohfTSuperResLib.errors import InputError, WeightsError
from CohfTSuperResLib.inference.engine import super_resolve
from CohfTSuperResLib.weights.storage import load_model, save_weights, sha256_of

torch.set_num_threads(1)
LIBRARY = Path(__file__).resolve().parents[1] / "CohfTSuperResLib"
MODULE = Path(__file__).resolve().parents[1] / "CohfTSuperRes"


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("weights"), 2)


INTEGER_PIXELS = [sitk.sitkUInt8, sitk.sitkInt8, sitk.sitkUInt16, sitk.sitkInt16, sitk.sitkUInt32,
                  sitk.sitkInt32, sitk.sitkUInt64, sitk.sitkInt64, sitk.sitkFloat64]


@pytest.mark.parametrize("pixel", INTEGER_PIXELS, ids=sitk.GetPixelIDValueAsString)
def test_every_pixel_type_gives_the_same_float32_result(pixel, weights):
    # whole numbers 0 and 40..120 (more distinct values than a label map has): exact in every pixel type
    t2 = sitk.Round(sitk.Mask(volume((2, 16, 18)) * 4 - 360, volume((2, 16, 18)) > 0))
    t1 = sitk.Round(sitk.Mask(guide_for(t2, 2) * 4 - 360, guide_for(t2, 2) > 0))
    reference = sitk.GetArrayFromImage(super_resolve(t2, t1, 2, model_path=weights, device="cpu", guide_check="off"))
    out = super_resolve(sitk.Cast(t2, pixel), sitk.Cast(t1, pixel), 2, model_path=weights, device="cpu", guide_check="off")
    assert out.GetPixelID() == sitk.sitkFloat32
    np.testing.assert_allclose(sitk.GetArrayFromImage(out), reference, rtol=1e-5, atol=1e-4)


def test_ct_like_negative_volume_is_refused(weights):
    ct = sitk.Cast(volume((2, 16, 16)), sitk.sitkFloat32) * 10 - 1000  # -1000 background, like air in HU
    with pytest.raises(InputError, match="negative voxels.*CT, phase or difference"):
        super_resolve(ct, guide_for(ct, 2), 2, model_path=weights, device="cpu", guide_check="off")


def test_slight_negative_ringing_is_accepted(weights):
    t2 = volume((2, 16, 16))
    voxels = sitk.GetArrayFromImage(t2)
    voxels[voxels == 0] = -0.3  # small ringing below zero in the background
    ringing = sitk.GetImageFromArray(voxels)
    ringing.CopyInformation(t2)
    out = super_resolve(ringing, guide_for(t2, 2), 2, model_path=weights, device="cpu", guide_check="off")
    assert np.isfinite(sitk.GetArrayFromImage(out)).all()


def test_single_2d_slice_gives_a_2d_slice(weights):
    t2 = volume((3, 16, 20), spacing=(0.7, 0.8, 3.0), origin=(5.0, -2.0, 0.0))
    t1 = guide_for(t2, 2)
    # the same slice as a one-slice volume (normalisation is per volume, so not slice 1 of the stack's result)
    one = [sitk.JoinSeries(image[:, :, 1]) for image in (t2, t1)]
    stack = sitk.GetArrayFromImage(super_resolve(*one, 2, model_path=weights, device="cpu", guide_check="off"))
    out = super_resolve(t2[:, :, 1], t1[:, :, 1], 2, model_path=weights, device="cpu", guide_check="off")
    assert out.GetDimension() == 2 and out.GetSize() == (40, 32)
    assert out.GetSpacing() == pytest.approx((0.35, 0.4)) and out.GetOrigin() == pytest.approx((5.0, -2.0))
    np.testing.assert_allclose(sitk.GetArrayFromImage(out), stack[0], rtol=1e-5, atol=1e-4)
    with pytest.raises(InputError, match="T1 must be the matching 2-D slice"):
        super_resolve(t2[:, :, 1], t1, 2, model_path=weights, device="cpu", guide_check="off")


def test_four_dimensional_series_is_refused(weights):
    series = sitk.JoinSeries([volume((2, 8, 8)), volume((2, 8, 8), seed=3)])
    with pytest.raises(InputError, match="4-D series holds several volumes"):
        super_resolve(series, None, 2, model_path=weights, device="cpu", guide_check="off")


@pytest.mark.parametrize("rows,cols", [(1, 1), (2, 3), (5, 7), (31, 1)])
def test_slices_smaller_than_the_windows(rows, cols, weights):
    rng = np.random.default_rng(0)
    t2 = sitk.GetImageFromArray(rng.uniform(1, 2, (2, rows, cols)).astype(np.float32))
    t1 = sitk.GetImageFromArray(rng.uniform(1, 2, (2, 2 * rows, 2 * cols)).astype(np.float32))
    t1.SetSpacing((0.5, 0.5, 1.0))
    out = super_resolve(t2, t1, 2, model_path=weights, device="cpu", guide_check="off")
    assert out.GetSize() == (2 * cols, 2 * rows, 2)
    assert np.isfinite(sitk.GetArrayFromImage(out)).all()


# ---------- weights ----------


def test_weights_round_trip_and_sha256(tmp_path):
    model = tiny_model(3)
    digest = save_weights(model, tmp_path / "m.safetensors", {"note": "x"})
    assert digest == sha256_of(tmp_path / "m.safetensors")
    loaded = load_model(tmp_path / "m.safetensors", digest)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name])


def test_written_weights_get_the_permissions_of_the_umask(tmp_path):
    """safetensors alone writes 0600 whatever the umask, locking a shared run folder away from a team."""
    import os

    previous = os.umask(0o022)
    try:
        save_weights(tiny_model(2), tmp_path / "w.safetensors")
    finally:
        os.umask(previous)
    assert (tmp_path / "w.safetensors").stat().st_mode & 0o777 == 0o644


def weights_file(folder: Path, damage: str) -> Path:
    """A tiny x2 weights file in `folder`, then damaged: 'missing', 'truncated', 'not_safetensors' (or left alone)."""
    path = folder / "m.safetensors"
    save_weights(tiny_model(2), path)
    if damage == "missing":
        path.unlink()
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "not_safetensors":
        path.write_bytes(b"\x80\x04pickle data, not safetensors")
    return path


@pytest.mark.parametrize(
    "damage,message",
    [
        ("missing", "not found"),
        ("truncated", "cannot read model weights"),
        ("not_safetensors", "cannot read model weights"),
        ("foreign_tensors", "holds no Cohf-T configuration"),
        ("wrong_shapes", "do not fit the Cohf-T network"),
    ],
)
def test_damaged_weights_are_refused(damage, message, tmp_path):
    path = weights_file(tmp_path, damage)
    if damage == "foreign_tensors":
        from safetensors.torch import save_file

        save_file({"weight": torch.zeros(3)}, str(path))
    elif damage == "wrong_shapes":
        header = json.loads(json.dumps(tiny_model(2).config.to_dict()))
        from safetensors.torch import save_file

        save_file({"weight": torch.zeros(3)}, str(path), metadata={"cohft_config": json.dumps(header)})
    with pytest.raises(WeightsError, match=message):
        load_model(path)


def test_a_header_that_describes_another_network_is_one_short_error(tmp_path):
    """A weights file whose header was edited to a wider network: torch lists every tensor that does not fit (tens
    of thousands of characters); the error names the first and counts the rest."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = save_tiny(tmp_path)
    with safe_open(str(path), "pt") as handle:
        metadata, tensors = handle.metadata(), {name: handle.get_tensor(name) for name in handle.keys()}
    config = json.loads(metadata["cohft_config"])
    config["dim"] *= 2
    save_file(tensors, str(path), metadata={**metadata, "cohft_config": json.dumps(config)})
    with pytest.raises(WeightsError, match=r"do not fit the Cohf-T network their header describes: size mismatch "
                                           r"for .* \(and \d+ more\); the file is damaged") as error:
        load_model(path)
    assert len(str(error.value)) < 400


@pytest.mark.parametrize("damage", ["missing", "truncated", "not_safetensors", "wrong scale"])
def test_a_damaged_weights_file_of_the_users_is_refused_before_the_guide_check(damage, tmp_path):
    """The guide check judges the T1 with the run's network: a user's file that can not serve is the run's error,
    said once, not a guide check 'not run' followed by the same error (the real sample, the default guide check)."""
    import warnings

    from CohfTSuperResLib.data.sample_data import read_sample
    from CohfTSuperResLib.errors import GuideNote

    path = weights_file(tmp_path, damage)
    if damage == "wrong scale":
        save_weights(tiny_model(3), path)
    sample = read_sample()
    with warnings.catch_warnings(record=True) as caught, pytest.raises((WeightsError, InputError)) as error:
        warnings.simplefilter("always")
        super_resolve(sample["lr_t2"], sample["t1"], 2, model_path=path, device="cpu")
    assert path.name in str(error.value)
    assert not [warning for warning in caught if issubclass(warning.category, GuideNote)]


def test_tampered_shipped_model_is_refused(tmp_path, monkeypatch):
    folder = tmp_path / "Models"
    digest = save_weights(tiny_model(2), folder / "S_x2.safetensors")
    manifest = {"models": [{"variant": "S", "scale": 2, "use_t1": True, "file": "S_x2.safetensors", "sha256": digest}]}
    (folder / "models.json").write_text(json.dumps(manifest))
    monkeypatch.setenv(models_registry.MODELS_ENV, str(folder))
    t2 = volume((1, 12, 12))
    assert super_resolve(t2, guide_for(t2, 2), 2, device="cpu", guide_check="off").GetSize() == (24, 24, 1)
    data = bytearray((folder / "S_x2.safetensors").read_bytes())
    data[-1] ^= 0xFF  # one flipped byte in the last weight
    (folder / "S_x2.safetensors").write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="fail their checksum"):
        super_resolve(t2, guide_for(t2, 2), 2, device="cpu", guide_check="off")
    with pytest.raises(WeightsError, match="no shipped S x3 model"):
        super_resolve(t2, guide_for(t2, 3), 3, device="cpu", guide_check="off")


def test_a_damaged_shipped_model_is_the_runs_error_not_a_skipped_guide_check(tmp_path, monkeypatch):
    """With the default guide check, a tampered shipped model stops the run with its checksum error, said once: the
    check is skipped (with a note) only where its models are not installed, never for a damaged one."""
    import warnings

    from CohfTSuperResLib.data.sample_data import read_sample
    from CohfTSuperResLib.errors import GuideNote

    folder, entries = tmp_path / "Models", []
    for use_t1, name in ((True, "S_x2.safetensors"), (False, "S_x2_noT1.safetensors")):
        digest = save_weights(tiny_model(2, use_t1=use_t1), folder / name)
        entries.append({"variant": "S", "scale": 2, "use_t1": use_t1, "file": name, "sha256": digest})
    (folder / "models.json").write_text(json.dumps({"models": entries}))
    monkeypatch.setenv(models_registry.MODELS_ENV, str(folder))
    data = bytearray((folder / "S_x2.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (folder / "S_x2.safetensors").write_bytes(bytes(data))
    sample = read_sample()
    with warnings.catch_warnings(record=True) as caught, pytest.raises(WeightsError, match="fail their checksum"):
        warnings.simplefilter("always")
        super_resolve(sample["lr_t2"], sample["t1"], 2, device="cpu")
    assert not [warning for warning in caught if issubclass(warning.category, GuideNote)]


def test_a_models_folder_set_in_the_environment_is_used_or_reported(tmp_path, monkeypatch):
    """$COHFT_SR_MODELS naming a folder without models (a typo) is reported, not passed over for the installed ones."""
    monkeypatch.setenv(models_registry.MODELS_ENV, str(tmp_path / "Modles"))
    t2 = volume((1, 12, 12))
    with pytest.raises(WeightsError, match="no shipped S x2 model .*Modles"):
        super_resolve(t2, guide_for(t2, 2), 2, device="cpu", guide_check="off")


def test_onnx_model_of_the_wrong_scale_is_refused(tmp_path):
    pytest.importorskip("onnxruntime")
    from CohfTSuperResLib.inference.onnx_export import export_onnx

    path = export_onnx(tiny_model(3), tmp_path / "x3.onnx")
    t2 = volume((1, 12, 12))
    with pytest.raises(InputError, match="is the in-plane x3 model, but in-plane x2"):
        super_resolve(t2, guide_for(t2, 2), 2, model_path=path, backend="onnx", device="cpu", guide_check="off")


# ---------- output files ----------


def test_unwritable_output_location_is_a_clear_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(InputError, match="cannot write"):
        volume_io.write_volume(volume((1, 4, 4)), blocker / "out.nii.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_disk_full_leaves_no_partial_file(tmp_path, monkeypatch):
    def full_disk(image, path, useCompression=False):
        Path(path).write_bytes(b"half a volume")
        raise RuntimeError("Exception thrown in SimpleITK ImageFileWriter_Execute\nNo space left on device")

    monkeypatch.setattr(volume_io.sitk, "WriteImage", full_disk)
    target = tmp_path / "out.nii.gz"
    with pytest.raises(InputError, match="No space left on device"):
        volume_io.write_volume(volume((1, 4, 4)), target)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_replaced_only_by_a_complete_file(tmp_path, monkeypatch):
    target = tmp_path / "out.nii.gz"
    target.write_bytes(b"the user's earlier result")
    monkeypatch.setattr(volume_io.sitk, "WriteImage", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("disk full")))
    with pytest.raises(InputError):
        volume_io.write_volume(volume((1, 4, 4)), target)
    assert target.read_bytes() == b"the user's earlier result"


# ---------- security ----------

FORBIDDEN = {
    r"\btorch\.load\(": "unpickling torch.load",
    r"\bimport pickle\b|\bpickle\.": "pickle",
    r"shell\s*=\s*True|os\.system\(|os\.popen\(": "shell string execution",
    r"\burllib\b|\brequests\b|\bhttp\.client\b|\bsocket\b": "network access",
}


@pytest.mark.parametrize("folder", [LIBRARY, MODULE], ids=["library", "slicer-module"])
def test_no_pickle_network_or_shell_in_the_shipped_code(folder):
    if not folder.is_dir():
        pytest.skip(f"{folder} absent")
    found = []
    for path in sorted(folder.rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            for pattern, what in FORBIDDEN.items():
                if re.search(pattern, code) and not code.lstrip().startswith(('"', "'")):
                    found.append(f"{path.name}:{number}: {what}: {line.strip()}")
    assert not found, "\n".join(found)


# ---------- weights integrity beyond checksums ----------


def test_weights_with_nan_or_inf_are_refused_on_load(tmp_path):
    model = tiny_model(2)
    with torch.no_grad():
        model.image_gate[0].weight[0, 0, 0, 0] = float("nan")
    save_weights(model, tmp_path / "nan.safetensors")
    with pytest.raises(WeightsError, match="NaN or Inf values in 1 tensor"):
        load_model(tmp_path / "nan.safetensors")


@pytest.mark.parametrize("metadata,message", [
    ({"cohft_config": "{not json"}, "not CohfTSuperRes metadata"),
    ({"format": "pt", "other": "{x"}, "holds no Cohf-T configuration"),
    ({"format": "pt"}, "holds no Cohf-T configuration"),
    ({"cohft_config": json.dumps({"scale": 7})}, "impossible Cohf-T network.*scale"),
    ({"cohft_config": json.dumps({"scale": 2, "dim": -3})}, "impossible Cohf-T network.*dim"),
    ({"cohft_config": json.dumps({"scale": 2, "wings": 2})}, "impossible Cohf-T network.*wings"),
    ({"cohft_config": json.dumps([1, 2])}, "impossible Cohf-T network"),
])
def test_foreign_or_impossible_headers_are_weights_errors(tmp_path, metadata, message):
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(3)}, str(tmp_path / "m.safetensors"), metadata=metadata)
    with pytest.raises(WeightsError, match=message):
        load_model(tmp_path / "m.safetensors")


def test_a_network_that_gives_inf_is_an_inference_error_and_nothing_is_returned(tmp_path):
    from CohfTSuperResLib.errors import InferenceError

    model = tiny_model(2)
    with torch.no_grad():
        model.to_image.weight.fill_(1e38)  # finite weights whose output overflows float32
    save_weights(model, tmp_path / "huge.safetensors")
    t2 = volume((2, 16, 16))
    with pytest.raises(InferenceError, match="NaN or Inf voxel"):
        super_resolve(t2, guide_for(t2, 2), 2, model_path=tmp_path / "huge.safetensors", device="cpu", guide_check="off")


def test_cli_messages_use_command_line_wording(tmp_path, weights, capsys):
    from CohfTSuperResLib.cli import main

    no_t1 = save_tiny(tmp_path, 2, use_t1=False)
    t2 = volume((2, 16, 16))
    sitk.WriteImage(t2, str(tmp_path / "t2.nrrd"))
    sitk.WriteImage(guide_for(t2, 2), str(tmp_path / "t1.nrrd"))
    assert main(["run", "--t2", str(tmp_path / "t2.nrrd"), "--t1", str(tmp_path / "t1.nrrd"), "--model", str(no_t1),
                 "-o", str(tmp_path / "sr.nrrd"), "--device", "cpu"]) == 1
    error = capsys.readouterr().err
    assert "trained without a T1 guide: run it without the T1" in error and "t1=None" not in error
