"""The demo's synthetic brain phantom: any slice count, deterministic, zero background, T1/T2 contrasts."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from CohfTSuperResLib.data.phantom import brain_phantom


@pytest.mark.parametrize("slices", [1, 2, 3, 12])
def test_phantom_has_the_asked_size_for_any_slice_count(slices):
    t2, t1 = brain_phantom(size=48, slices=slices, seed=0)
    for image in (t2, t1):
        assert image.GetSize() == (48, 48, slices)
        array = sitk.GetArrayFromImage(image)
        assert array.dtype == np.float32 and np.isfinite(array).all()
        assert array[:, 0, :].max() == 0 and array[:, :, 0].max() == 0  # skull-stripped background


def test_phantom_is_deterministic_and_seeded():
    first = sitk.GetArrayFromImage(brain_phantom(size=48, slices=2, seed=1)[0])
    again = sitk.GetArrayFromImage(brain_phantom(size=48, slices=2, seed=1)[0])
    other = sitk.GetArrayFromImage(brain_phantom(size=48, slices=2, seed=2)[0])
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_phantom_contrasts_are_reversed_between_t2_and_t1():
    """CSF is bright on T2 and dark on T1, white matter the reverse: the two anticorrelate in the brain."""
    t2, t1 = (sitk.GetArrayFromImage(image)[0] for image in brain_phantom(size=96, slices=1, seed=0))
    brain = t2 > 0
    assert np.corrcoef(t2[brain], t1[brain])[0, 1] < -0.5
