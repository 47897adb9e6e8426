"""The one input check of the library (input_checks.check_inputs): label maps, sheared grids, acquisition axis,
intensities out of float32's range, volumes that cannot be normalised — each refused or decided before any model
loads, with a library error type."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from inference_helpers import guide_for, save_tiny, volume

from CohfTSuperResLib.errors import InputError, InputNote
from CohfTSuperResLib.inference.input_checks import check_inputs
from CohfTSuperResLib.inference.engine import super_resolve
from CohfTSuperResLib.data.synthetic_volumes import lr_volume

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("weights"), 2)


def _labels(pixel=sitk.sitkUInt8, values: int = 5) -> sitk.Image:
    voxels = (np.arange(3 * 16 * 16).reshape(3, 16, 16) % values).astype(np.uint8)
    image = sitk.Cast(sitk.GetImageFromArray(voxels), pixel)
    image.SetSpacing((1.0, 1.0, 3.0))
    return image


@pytest.mark.parametrize("pixel", [sitk.sitkUInt8, sitk.sitkInt16, sitk.sitkUInt32])
def test_integer_volume_with_few_values_is_a_label_map(pixel):
    with pytest.raises(InputError, match=r"T2 is a label map \(5 distinct integer values\)"):
        check_inputs(_labels(pixel), None, 2)


@pytest.mark.parametrize("role", ["T2", "T1"])
def test_float_label_maps_and_masks_are_refused(role):
    """Labels and masks stored as floats (a 0/500 mask, 4 labels): refused like integer ones, in either role."""
    t2 = volume((3, 16, 16))
    voxels = sitk.GetArrayFromImage(t2)
    for fake, count in ((np.where(voxels > 50, 500.0, 0.0), 2), (np.digitize(voxels, np.quantile(voxels[voxels > 0], [0.2, 0.5, 0.8])) * 1.0, 4)):
        image = sitk.GetImageFromArray(fake.astype(np.float32))
        image.CopyInformation(t2)
        with pytest.raises(InputError, match=rf"{role} is a label map \({count} distinct values\)"):
            check_inputs(image, guide_for(t2, 2), 2) if role == "T2" else check_inputs(t2, image, 2)


def test_label_maps_by_metadata_are_refused(tmp_path):
    image = sitk.Cast(volume((3, 16, 16)), sitk.sitkFloat32)
    labelled = sitk.Image(image)
    labelled.SetMetaData("intent_code", "1002")  # NIFTI_INTENT_LABEL
    segmentation = sitk.Image(image)
    segmentation.SetMetaData("Segment0_ID", "Segment_1")  # a Slicer .seg.nrrd
    for candidate in (labelled, segmentation):
        with pytest.raises(InputError, match="label map"):
            check_inputs(candidate, None, 2)
    check_inputs(image, None, 2)  # the same voxels without label metadata are an image


def test_integer_image_with_many_values_is_accepted():
    t2 = sitk.Cast(sitk.Round(volume((3, 16, 16))), sitk.sitkInt16)  # 0 and 100..120 -> 22 values: a label map
    with pytest.raises(InputError, match="label map"):
        check_inputs(t2, None, 2)
    t2 = sitk.Cast(sitk.Round(volume((3, 16, 16)) * 10), sitk.sitkInt16)  # 0 and 1000..1200
    assert check_inputs(t2, None, 2).slice_axis == 2


def test_sheared_direction_is_refused_before_the_run():
    t2 = volume((3, 16, 16))
    t2.SetDirection((1.0, 0.3, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))  # not orthonormal: a shear
    with pytest.raises(InputError, match="direction matrix is not orthonormal"):
        check_inputs(t2, None, 2)
    rotated = volume((3, 16, 16), direction=(0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    check_inputs(rotated, None, 2)


@pytest.mark.parametrize("thick_axis", [0, 1])
def test_sagittal_and_coronal_acquisitions_are_sliced_across_the_thick_axis(thick_axis, weights):
    """The thick axis is picked with a one-line note, and the result is that of the explicit axis."""
    size = (18, 16, 14)  # voxel axes i, j, k
    spacing = tuple(3.0 if axis == thick_axis else 1.0 for axis in range(3))
    t2 = volume(size[::-1], spacing=spacing)
    hr_size = [n if axis == thick_axis else 2 * n for axis, n in enumerate(size)]
    hr_spacing = tuple(d if axis == thick_axis else d / 2 for axis, d in enumerate(spacing))
    t1 = volume(tuple(hr_size[::-1]), spacing=hr_spacing, seed=2)
    checked = check_inputs(t2, t1, 2)
    assert checked.slice_axis == thick_axis
    assert len(checked.notes) == 1 and f"slice axis is voxel axis {thick_axis}" in checked.notes[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        automatic = super_resolve(t2, t1, 2, model_path=weights, device="cpu", guide_check="off")
    assert [w.category for w in caught if issubclass(w.category, InputNote)] == [InputNote]
    explicit = super_resolve(t2, t1, 2, model_path=weights, device="cpu", slice_axis=thick_axis, guide_check="off")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(automatic), sitk.GetArrayFromImage(explicit))
    expected = [n if axis == thick_axis else 2 * n for axis, n in enumerate(t2.GetSize())]
    assert list(automatic.GetSize()) == expected


def test_axial_acquisition_has_no_note():
    checked = check_inputs(volume((3, 16, 16), spacing=(0.5, 0.5, 3.0)), None, 2)
    assert checked.slice_axis == 2 and checked.notes == ()


def test_an_lr_made_from_1mm_data_is_sliced_along_its_1mm_axis_and_an_explicit_axis_is_kept():
    lr = lr_volume(volume((4, 16, 16), spacing=(1.0, 1.0, 1.0)), 2)  # 2 x 2 x 1 mm: in-plane is coarser
    checked = check_inputs(lr, None, 2)
    assert checked.slice_axis == 2 and checked.notes == ()  # square in-plane pixels, the odd axis is the slices'
    assert check_inputs(lr, None, 2, slice_axis=0).slice_axis == 0


@pytest.mark.parametrize("peak", [3e38, 1e300])
def test_intensities_beyond_float32_are_refused(peak):
    voxels = sitk.GetArrayFromImage(volume((3, 16, 16))).astype(np.float64)
    voxels[voxels > 0] *= peak / voxels.max()
    with pytest.raises(InputError, match="beyond what float32 processing can carry"):
        check_inputs(sitk.GetImageFromArray(voxels), None, 2)


def test_sparse_volume_that_cannot_be_normalised_is_an_input_error():
    voxels = np.zeros((3, 16, 16), dtype=np.float32)
    voxels[1, 2, 3] = -5.0
    voxels[1, 2, 4] = 1e-3
    voxels[0, 0, 0] = 0.0
    with pytest.raises(InputError):
        check_inputs(sitk.GetImageFromArray(voxels), None, 2)


def test_t1_of_the_wrong_type_or_far_away_is_refused():
    t2 = volume((3, 16, 16))
    t1 = guide_for(t2, 2)
    far = sitk.Image(t1)
    far.SetOrigin((500.0, 500.0, 500.0))
    with pytest.raises(InputError, match="does not overlap"):
        check_inputs(t2, far, 2)
    with pytest.raises(InputError, match="label map"):
        check_inputs(t2, _labels(), 2)
    with pytest.raises(InputError, match="the T2 is a 3-D volume, so the T1 must be the registered 3-D T1 volume"):
        check_inputs(t2, t1[:, :, 1], 2)
