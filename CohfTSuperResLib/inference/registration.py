"""Rigid registration of the T1 to the T2 (``RunOptions.register``), before the guide check and the run.

SimpleITK's registration framework: Mattes mutual information (the two contrasts differ), a rigid (Euler) transform
started from the volumes' geometric centres, three resolution levels, a random sample of the T2's tissue voxels
(those above 10 % of its robust scale), regular-step gradient descent. The result is applied to the T1's geometry
(origin and direction), not to its voxels: the registered T1 is exactly the T1 moved, with no resampling, and the
inputs are not modified.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from CohfTSuperResLib.errors import InputError

SHRINK_FACTORS = (4, 2, 1)
SMOOTHING_MM = (2.0, 1.0, 0.0)
SAMPLING = 0.05  # share of the T2's masked voxels used per iteration ...
MIN_SAMPLES = 3000  # ... but at least this many at each level (all of them where there are fewer)
ITERATIONS = 100  # per level
HISTOGRAM_BINS = 32
TISSUE_LEVEL = 0.1  # of the T2's robust scale: the registration's mask
SEED = 1
MIN_SIZE = 8  # voxels along every axis of the T2 (the coarsest level smooths and shrinks by 4)


@dataclass(frozen=True)
class Registration:
    """The registered T1 (the T1 moved, voxels untouched), the transform (T2 points to T1 points), and how far it
    moved the T1: the largest displacement over the T2's tissue, in mm."""

    t1: sitk.Image
    transform: sitk.Euler3DTransform
    displacement_mm: float
    seconds: float

    def summary(self) -> str:
        return (f"registration: the T1 was moved by up to {self.displacement_mm:.1f} mm over the T2's tissue "
                f"({self.seconds:.1f} s)")


def register_t1(t2: sitk.Image, t1: sitk.Image, t2_scale: float) -> Registration:
    """Register the T1 to the T2 rigidly; InputError when the registration fails or the T2 is too small for it."""
    if min(t2.GetSize()) < MIN_SIZE:
        raise InputError(f"the T2 ({' x '.join(map(str, t2.GetSize()))} voxels) is too small to register the T1 to it "
                         f"(at least {MIN_SIZE} voxels along every axis): register the T1 beforehand")
    started = time.monotonic()
    fixed, moving = sitk.Cast(t2, sitk.sitkFloat32), sitk.Cast(t1, sitk.sitkFloat32)
    mask = sitk.Cast(fixed > TISSUE_LEVEL * t2_scale, sitk.sitkUInt8)
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(HISTOGRAM_BINS)
    method.SetMetricSamplingStrategy(method.RANDOM)
    masked = max(1, int(sitk.GetArrayViewFromImage(mask).sum()))
    method.SetMetricSamplingPercentagePerLevel(
        [min(1.0, max(SAMPLING, MIN_SAMPLES * shrink**3 / masked)) for shrink in SHRINK_FACTORS], SEED)
    method.SetMetricFixedMask(mask)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-3, numberOfIterations=ITERATIONS,
                                                   relaxationFactor=0.5)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(SHRINK_FACTORS))
    method.SetSmoothingSigmasPerLevel(list(SMOOTHING_MM))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    start = sitk.CenteredTransformInitializer(fixed, moving, sitk.Euler3DTransform(),
                                              sitk.CenteredTransformInitializerFilter.GEOMETRY)
    method.SetInitialTransform(start, inPlace=False)
    try:
        result = method.Execute(fixed, moving)
    except RuntimeError as error:
        raise InputError(f"the registration of the T1 to the T2 failed: {error}") from error
    transform = sitk.Euler3DTransform(result.GetNthTransform(0) if isinstance(result, sitk.CompositeTransform)
                                      else result)
    moved = moved_by(t1, transform)
    return Registration(moved, transform, largest_displacement(transform, fixed, mask), time.monotonic() - started)


def moved_by(image: sitk.Image, transform: sitk.Euler3DTransform) -> sitk.Image:
    """The image with its geometry moved by the inverse of a rigid transform that maps T2 points to its points: a
    voxel at point y now sits at T^-1(y). Voxels untouched, no resampling."""
    rotation = np.asarray(transform.GetMatrix()).reshape(3, 3)
    inverse = transform.GetInverse()
    moved = sitk.Image(image)
    moved.SetOrigin(inverse.TransformPoint(image.GetOrigin()))
    moved.SetDirection(tuple((rotation.T @ np.asarray(image.GetDirection()).reshape(3, 3)).ravel()))
    return moved


def largest_displacement(transform: sitk.Transform, t2: sitk.Image, mask: sitk.Image) -> float:
    """The largest distance (mm) between a T2 tissue point and its image under the transform (corners of the mask's
    bounding box: a rigid motion's displacement is largest at the extremes)."""
    statistics = sitk.LabelShapeStatisticsImageFilter()
    statistics.Execute(mask)
    if not statistics.HasLabel(1):
        return 0.0
    x, y, z, sx, sy, sz = statistics.GetBoundingBox(1)
    corners = [(i, j, k) for i in (x, x + sx - 1) for j in (y, y + sy - 1) for k in (z, z + sz - 1)]
    distances = []
    for corner in corners:
        point = np.asarray(t2.TransformIndexToPhysicalPoint(corner))
        distances.append(float(np.linalg.norm(np.asarray(transform.TransformPoint(tuple(point))) - point)))
    return max(distances)
