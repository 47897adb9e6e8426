"""Every degradation of the project: the LR synthesis by k-space truncation, and the training augmentations.

LR synthesis (``degrade``), the paper's protocol (Sec. 4.1, after MTrans): take the
2-D FFT of an HR slice of size (H, W), keep only the central (H/s) x (W/s)
block of k-space, inverse-FFT it and take the magnitude. The result is scaled
by (h*w)/(H*W) so that the intensity level is preserved: a constant image
stays exactly that constant.

Grid convention (the MR reconstruction / DFT one, shared with ``model/upsample.py``):
the LR voxel j sits at the HR voxel s*j. Hence an LR volume made from an HR one
keeps the HR origin and has its in-plane spacing multiplied by s, and a
super-resolved output keeps the LR origin with its in-plane spacing divided by
s. (``zero_fill_upsample`` obeys the same convention: its sample s*j equals
the LR sample j.)

The k-space functions work on torch tensors of shape (..., H, W) (any leading batch
dimensions) and also accept numpy arrays, returning the same type. The
k-space block is centred with the fftshift convention: after ``fftshift`` the
zero frequency sits at index N//2, and the kept block starts at N//2 - n//2.

Thick-slice acquisition (``thick_slices``): thin slices averaged into thick ones under a slice profile, for
through-plane super-resolution: thick slice k covers thin slices k*n .. k*n + n - 1 and is centred on their
middle; ``box`` weighs each thin slice by its overlap with a slab of (1 - gap) * n thin slices, ``gaussian`` by a
Gaussian of that full width at half maximum (reaching into the neighbouring slabs).

Training augmentations (numpy and torch only, so they run wherever a training pack is read):
``IntensityAugmentation`` (gamma, bias field and k-space noise of the T2 pair, gamma and bias field of
the T1) and ``GuideRandomisation`` (the T1 made as imperfect as real guides are).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from CohfTSuperResLib.options import SLICE_PROFILES, check_scale

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def _to_tensor(array: np.ndarray | torch.Tensor) -> torch.Tensor:
    """View a numpy array or tensor as a floating (or complex) torch tensor with at least 2 dims."""
    tensor = torch.from_numpy(np.ascontiguousarray(array)) if isinstance(array, np.ndarray) else array
    if tensor.dim() < 2:
        raise ValueError(f"expected an image of shape (..., H, W), got shape {tuple(tensor.shape)}")
    if not (tensor.is_floating_point() or tensor.is_complex()):
        tensor = tensor.to(torch.float32)
    elif tensor.dtype in (torch.float16, torch.bfloat16):
        tensor = tensor.to(torch.float32)
    return tensor


def _like_input(result: torch.Tensor, original: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Return result as a numpy array when the original input was one."""
    if isinstance(original, np.ndarray):
        return result.detach().cpu().numpy()
    return result


def _block_start(full: int, part: int) -> int:
    """Index where the centred block of length part starts in a fftshift-ed axis of length full."""
    return full // 2 - part // 2


def trimmed_length(length: int, scale: int) -> int:
    """The largest multiple of scale not above length (what trimming keeps); ValueError when that is 0."""
    kept = length - length % check_scale(scale, supported=None)
    if kept == 0:
        raise ValueError(f"a side of {length} samples is smaller than the scale factor {scale}")
    return kept


GAUSSIAN_FWHM = 2.0 * math.sqrt(2.0 * math.log(2.0))  # full width at half maximum / sigma


def slice_profile_weights(length: int, factor: int, profile: str = "box", gap: float = 0.0) -> np.ndarray:
    """(length // factor, length) weights: row k gives each thin slice's share in thick slice k (rows sum to 1).

    gap: the fraction of each thick slice's spacing that its profile does not cover (0 to < 1; 0.2 is a 20 %
    slice gap, the slice thickness 0.8 times the spacing).
    """
    check_scale(factor, supported=None)
    if profile not in SLICE_PROFILES:
        raise ValueError(f"unknown slice profile {profile!r}; use one of {', '.join(SLICE_PROFILES)}")
    if not 0.0 <= gap < 1.0:
        raise ValueError(f"a slice gap of {gap} is not in [0, 1)")
    width = (1.0 - gap) * factor
    thin = np.arange(length, dtype=np.float64)
    centres = factor * np.arange(trimmed_length(length, factor) // factor) + (factor - 1) / 2.0
    offset = thin[None, :] - centres[:, None]
    if profile == "box":
        weights = np.clip(np.minimum(offset + 0.5, width / 2.0) - np.maximum(offset - 0.5, -width / 2.0), 0.0, None)
    else:
        weights = np.exp(-0.5 * (offset * GAUSSIAN_FWHM / width) ** 2)
    return weights / weights.sum(axis=1, keepdims=True)


def thick_slices(stack: np.ndarray, factor: int, profile: str = "box", gap: float = 0.0) -> np.ndarray:
    """Thick slices along axis 0 of a (N, ...) array of thin ones: (N // factor, ...) float32."""
    weights = slice_profile_weights(stack.shape[0], factor, profile, gap)
    flat = stack.reshape(stack.shape[0], -1).astype(np.float64)
    return (weights @ flat).reshape((weights.shape[0],) + stack.shape[1:]).astype(np.float32)


def crop_to_multiple(array: ArrayT, scale: int) -> ArrayT:
    """Trim trailing rows/columns of the last two axes so both are divisible by scale."""
    if array.ndim < 2:
        raise ValueError(f"expected an image of shape (..., H, W), got shape {tuple(array.shape)}")
    return array[..., : trimmed_length(array.shape[-2], scale), : trimmed_length(array.shape[-1], scale)]


def kspace_crop(hr: ArrayT, scale: int) -> ArrayT:
    """Complex LR image (..., H/s, W/s): the central k-space block of hr, inverse-FFT-ed, level-preserving.

    Raises ValueError when H or W is not divisible by scale (see ``crop_to_multiple``).
    """
    scale = check_scale(scale, supported=None)
    image = _to_tensor(hr)
    height, width = image.shape[-2:]
    if height % scale or width % scale:
        raise ValueError(
            f"image size {height} x {width} is not divisible by the scale factor {scale}; "
            f"trim it first with crop_to_multiple(image, {scale})"
        )
    return kspace_resize(hr, (height // scale, width // scale))


def kspace_resize(image: ArrayT, shape: tuple[int, int]) -> ArrayT:
    """Complex image (..., h, w) of the central h x w k-space block of image (..., H, W), level-preserving.

    The same acquisition with fewer samples (h <= H, w <= W) over the same field of view: the new sample j sits at
    the old position j * H / h (the DFT grid), so a whole-number ratio is ``kspace_crop``.
    """
    tensor = _to_tensor(image)
    height, width = tensor.shape[-2:]
    low_h, low_w = shape
    if not (0 < low_h <= height and 0 < low_w <= width):
        raise ValueError(f"a k-space block of {low_h} x {low_w} does not fit an image of {height} x {width}")
    spectrum = torch.fft.fftshift(torch.fft.fft2(tensor), dim=(-2, -1))
    top, left = _block_start(height, low_h), _block_start(width, low_w)
    block = spectrum[..., top : top + low_h, left : left + low_w]
    low = torch.fft.ifft2(torch.fft.ifftshift(block, dim=(-2, -1)))
    return _like_input(low * ((low_h * low_w) / (height * width)), image)


def degrade(hr: ArrayT, scale: int, noise: float = 0.0, rng: np.random.Generator | None = None) -> ArrayT:
    """The paper's LR synthesis: magnitude of ``kspace_crop(hr, scale)``, shape (..., H/s, W/s), real.

    noise > 0 adds complex Gaussian noise of that standard deviation (per real and imaginary part, drawn from
    the numpy generator rng) before the magnitude: white noise in the image is white noise in k-space too.
    """
    low = kspace_crop(_to_tensor(hr), scale)
    if noise > 0:
        rng = rng if rng is not None else np.random.default_rng()
        shape = tuple(low.shape)
        drawn = noise * (rng.standard_normal(shape) + 1j * rng.standard_normal(shape))
        low = low + torch.from_numpy(drawn).to(device=low.device, dtype=low.dtype)
    return _like_input(low.abs(), hr)


def zero_fill_upsample(lr: ArrayT, scale: int) -> ArrayT:
    """Zero-filled k-space interpolation baseline: (..., h, w) -> magnitude image (..., s*h, s*w).

    The FFT of lr (real or complex) is placed, centred, in an all-zero (s*h, s*w)
    spectrum, inverse-FFT-ed and its magnitude taken; the intensity level is kept.
    """
    scale = check_scale(scale, supported=None)
    image = _to_tensor(lr)
    low_h, low_w = image.shape[-2:]
    height, width = scale * low_h, scale * low_w
    block = torch.fft.fftshift(torch.fft.fft2(image), dim=(-2, -1))
    spectrum = block.new_zeros(block.shape[:-2] + (height, width))
    top, left = _block_start(height, low_h), _block_start(width, low_w)
    spectrum[..., top : top + low_h, left : left + low_w] = block
    high = torch.fft.ifft2(torch.fft.ifftshift(spectrum, dim=(-2, -1)))
    return _like_input((high * ((height * width) / (low_h * low_w))).abs(), lr)


@dataclass(frozen=True)
class IntensityAugmentation:
    """Ranges of the intensity augmentation (normalised units); each part is applied with probability `chance`.

    Intensity augmentation (``IntensityAugmentation``), on the whole normalised slices before the LR is
    synthesised, each part with probability 1/2: a gamma curve and a smooth multiplicative bias field on
    the T2 (so the LR input and the HR target share them) and, independently, on the T1; and complex
    Gaussian noise added to the LR image before its magnitude is taken, which is white noise in k-space
    (the inverse FFT of white noise is white noise). The HR target stays noise-free.
    """

    gamma_log_range: float = 0.3  # gamma = exp(U(-r, r))
    bias_range: float = 0.15  # log-field = sum of c * (x, y, x^2, y^2, xy), c ~ U(-r, r), x, y in [-1, 1]
    noise_max: float = 0.02  # k-space noise std ~ U(0, noise_max)
    chance: float = 0.5

    def gamma_and_bias(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A random gamma curve and smooth bias field on one normalised 2-D image (each with probability chance)."""
        if rng.random() < self.chance:
            image = np.clip(image, 0.0, None) ** np.exp(rng.uniform(-self.gamma_log_range, self.gamma_log_range))
        if rng.random() < self.chance:
            y, x = np.meshgrid(*(np.linspace(-1.0, 1.0, n) for n in image.shape), indexing="ij")
            terms = np.stack([x, y, x * x, y * y, x * y])
            field = np.exp(np.tensordot(rng.uniform(-self.bias_range, self.bias_range, 5), terms, axes=1))
            image = image * field
        return image.astype(np.float32)

    def apply(self, hr: np.ndarray, t1: np.ndarray, scale: int,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(LR, HR T2, T1) of one whole slice after augmentation; the LR is synthesised from the augmented HR."""
        hr = self.gamma_and_bias(hr, rng)
        t1 = self.gamma_and_bias(t1, rng)
        noise = rng.uniform(0.0, self.noise_max) if rng.random() < self.chance else 0.0
        return degrade(hr, scale, noise, rng), hr, t1


GUIDE_PARTS = ("misregistration", "resolution", "parallel_slices", "intensity", "dropout")
CURVE_KNOTS = 6


@dataclass(frozen=True)
class GuideRandomisation:
    """The training T1 made as imperfect as real guides are, the T2 target left unchanged: the chances and ranges
    of each part (GUIDE_PARTS).

    Real T1 guides are 1-3 mm off their T2 after registration, have other contrast curves and bias fields,
    may be blurrier or thick-sliced, or are missing. A network trained on perfect pairs trusts its guide
    blindly; one trained on randomised guides can only gain from the T1 where the LR T2 agrees with it.
    Each part is drawn independently with its own chance (0 turns it off), on the T1 slab around one
    training slice, before the patch is cut:

    - ``misregistration``: a rigid motion of the T1 volume, shifts U(-max, max) mm along each axis
      (in-plane and through-plane) and rotations U(-max, max) degrees about each axis, sampled
      trilinearly from the neighbouring slices;
    - ``resolution``: either a Gaussian blur (sigma U(0.3, max) mm in every axis) or thick slices
      (a box average of U(2, 5) mm along a random axis with a random phase, linearly resampled back);
    - ``parallel_slices``: thick slices (a box average of U(2, 5) mm, a random phase, linearly resampled back) along
      the T2's own slice axis, where the caller names it: a 2-D T1 acquired in the same orientation as the 2-D T2.
      Through-plane (the thick axis) it holds no detail along the axis to restore; in-plane (the slices' normal,
      axis 0 of the stack) each T1 slice becomes an average of its neighbours, as a 2-D T1 resampled onto the T2's
      slices is; a no-op where no axis is named;
    - ``intensity``: a smooth random monotone curve (piecewise linear through sorted random knots),
      a gamma, a smooth multiplicative bias field and Gaussian noise;
    - ``dropout``: the guide replaced by zeros (an absent T1).

    All sizes are in millimetres and use the volume's voxel spacing (slice, row, column).
    """

    misregistration: float = 0.6
    resolution: float = 0.3
    parallel_slices: float = 0.2
    intensity: float = 0.5
    dropout: float = 0.1
    max_shift_mm: float = 3.0
    max_rotation_degrees: float = 3.0
    max_blur_mm: float = 1.5
    thick_slice_mm: tuple[float, float] = (2.0, 5.0)
    max_noise: float = 0.04

    @classmethod
    def only(cls, parts: list[str] | tuple[str, ...]) -> GuideRandomisation:
        """The default chances for the named parts, 0 for the others ('none' or [] turns every part off)."""
        unknown = sorted(set(parts) - set(GUIDE_PARTS) - {"all", "none"})
        if unknown:
            raise ValueError(f"unknown guide randomisation part(s) {unknown}; use {', '.join(GUIDE_PARTS)}, "
                             "all or none")
        if "all" in parts:
            return cls()
        default = cls()
        return replace(default, **{part: getattr(default, part) if part in parts else 0.0 for part in GUIDE_PARTS})

    @property
    def active(self) -> list[str]:
        return [part for part in GUIDE_PARTS if getattr(self, part) > 0]

    def slab_radius(self, spacing: tuple[float, float, float]) -> int:
        """Slices needed on each side of the centre slice: the largest shift, slice thickness, blur and the
        through-plane reach of a tilt at 128 mm from the slice centre (a 256 mm field of view)."""
        tilt = 128.0 * math.tan(math.radians(self.max_rotation_degrees))
        reach = self.max_shift_mm + tilt + self.thick_slice_mm[1] + 2 * self.max_blur_mm
        return int(math.ceil(reach / spacing[0])) + 1

    def to_dict(self) -> dict[str, float | list[float]]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}

    def apply(self, stack: np.ndarray, index: int, spacing: tuple[float, float, float],
              rng: np.random.Generator, slice_axis: int | None = None) -> np.ndarray:
        """The randomised T1 slice `index` of a (N, H, W) T1 stack of consecutive slices, float32 (H, W);
        `slice_axis` (0-2, stack axes) is the T2's thick-slice axis where there is one (``parallel_slices``)."""
        parts = [part for part in GUIDE_PARTS
                 if part != "parallel_slices" or slice_axis is not None]  # no axis, no draw
        use = {part: rng.random() < getattr(self, part) for part in parts}
        if use["dropout"]:
            return np.zeros(stack.shape[1:], dtype=np.float32)
        parallel_axis = slice_axis if use.get("parallel_slices") else None
        if use["misregistration"] or use["resolution"] or parallel_axis is not None:
            image = self._resample(stack, index, spacing, use["misregistration"], use["resolution"], parallel_axis,
                                   rng)
        else:
            image = np.asarray(stack[index], dtype=np.float32)
        if use["intensity"]:
            image = self._remap_intensity(image, rng)
        return image.astype(np.float32, copy=False)

    def _resample(self, stack: np.ndarray, index: int, spacing: tuple[float, float, float], move: bool,
                  degrade: bool, parallel_axis: int | None, rng: np.random.Generator) -> np.ndarray:
        radius = self.slab_radius(spacing)
        rows = np.clip(np.arange(index - radius, index + radius + 1), 0, stack.shape[0] - 1)
        slab = torch.from_numpy(np.ascontiguousarray(stack[rows], dtype=np.float32))[None, None]
        if degrade:
            slab = self._lose_resolution(slab, spacing, rng)
        if parallel_axis is not None:
            slab = self._thick_along(slab, spacing, parallel_axis, rng)
        if not move:
            return slab[0, 0, radius].numpy()
        return _rigidly_moved_slice(slab, radius, spacing, self._motion(rng))

    def _motion(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(rotation matrix, shift in mm) in (slice, row, column) axes."""
        angles = np.radians(rng.uniform(-self.max_rotation_degrees, self.max_rotation_degrees, 3))
        rotation = np.eye(3)
        for axis, angle in enumerate(angles):
            a, b = [k for k in range(3) if k != axis]
            turn = np.eye(3)
            turn[a, a] = turn[b, b] = math.cos(angle)
            turn[a, b], turn[b, a] = -math.sin(angle), math.sin(angle)
            rotation = turn @ rotation
        return rotation, rng.uniform(-self.max_shift_mm, self.max_shift_mm, 3)

    def _lose_resolution(self, slab: torch.Tensor, spacing: tuple[float, float, float],
                         rng: np.random.Generator) -> torch.Tensor:
        """A Gaussian blur of the slab, or thick slices along one random axis (box average, resampled back)."""
        if rng.random() < 0.5:
            sigma_mm = rng.uniform(0.3, self.max_blur_mm)
            for axis in range(3):
                slab = _blur_along(slab, sigma_mm / spacing[axis], axis)
            return slab
        return self._thick_along(slab, spacing, int(rng.integers(3)), rng)

    def _thick_along(self, slab: torch.Tensor, spacing: tuple[float, float, float], axis: int,
                     rng: np.random.Generator) -> torch.Tensor:
        """Thick slices of U(thick_slice_mm) along `axis` of the slab, at a random phase, resampled back."""
        width = max(2, int(round(rng.uniform(*self.thick_slice_mm) / spacing[axis])))
        return _thick_slices_along(slab, width, int(rng.integers(width)), axis)

    def _remap_intensity(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Monotone random curve, gamma, bias field and noise on the tissue of a normalised slice."""
        top = 1.5
        knots_x = np.linspace(0.0, top, CURVE_KNOTS)
        knots_y = np.concatenate([[0.0], np.cumsum(rng.uniform(0.2, 1.0, CURVE_KNOTS - 1))])
        knots_y *= top / knots_y[-1]
        positive = np.clip(image, 0.0, None)
        curve = np.interp(positive, knots_x, knots_y, right=np.nan)
        curve = np.where(np.isnan(curve), positive, curve)  # above the last knot: unchanged
        curve = curve ** math.exp(rng.uniform(-0.4, 0.4))
        y, x = np.meshgrid(*(np.linspace(-1.0, 1.0, n) for n in image.shape), indexing="ij")
        terms = np.stack([x, y, x * x, y * y, x * y])
        curve = curve * np.exp(np.tensordot(rng.uniform(-0.3, 0.3, 5), terms, axes=1))
        noise = rng.uniform(0.0, self.max_noise)
        curve = curve + noise * rng.standard_normal(image.shape) * (image > 0)
        return curve.astype(np.float32)


def _blur_along(slab: torch.Tensor, sigma: float, axis: int) -> torch.Tensor:
    """Gaussian blur of a (1, 1, D, H, W) tensor along spatial axis 0-2 (sigma in voxels), edges replicated."""
    radius = max(1, int(math.ceil(3 * sigma)))
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / sigma) ** 2)
    taps /= taps.sum()
    shape = [1, 1, 1, 1, 1]
    shape[2 + axis] = taps.numel()
    padding = [0, 0, 0, 0, 0, 0]
    padding[2 * (2 - axis)] = padding[2 * (2 - axis) + 1] = radius
    return F.conv3d(F.pad(slab, padding, mode="replicate"), taps.view(shape))


def _thick_slices_along(slab: torch.Tensor, width: int, phase: int, axis: int) -> torch.Tensor:
    """Box averages of `width` voxels along spatial axis 0-2 starting at `phase`, linearly resampled back."""
    length = slab.shape[2 + axis]
    starts = np.arange(phase - width, length, width)
    centres, averages = [], []
    for start in starts:
        lo, hi = max(0, start), min(length, start + width)
        if hi <= lo:
            continue
        centres.append(0.5 * (lo + hi - 1))
        averages.append(slab.narrow(2 + axis, lo, hi - lo).mean(dim=2 + axis, keepdim=True))
    thick = torch.cat(averages, dim=2 + axis)
    position = torch.arange(length, dtype=torch.float32)
    centre = torch.tensor(centres, dtype=torch.float32)
    upper = torch.searchsorted(centre, position).clamp(1, len(centres) - 1) if len(centres) > 1 else None
    if upper is None:
        return thick.expand_as(slab).clone()
    lower = upper - 1
    weight = ((position - centre[lower]) / (centre[upper] - centre[lower])).clamp(0.0, 1.0)
    shape = [1, 1, 1, 1, 1]
    shape[2 + axis] = length
    weight = weight.view(shape)
    return (thick.index_select(2 + axis, lower) * (1 - weight) + thick.index_select(2 + axis, upper) * weight)


def _rigidly_moved_slice(slab: torch.Tensor, centre_slice: int, spacing: tuple[float, float, float],
                         motion: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The centre slice of a (1, 1, D, H, W) slab after the slab's content is moved rigidly (rotation about
    the slice centre, then shift; both in mm), trilinear, zero outside."""
    rotation, shift = motion
    _, _, depth, height, width = slab.shape
    spacing_arr = np.asarray(spacing, dtype=np.float64)
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    centre = np.array([centre_slice, (height - 1) / 2, (width - 1) / 2])
    points = np.stack([np.full(rows.shape, centre_slice, dtype=np.float64), rows, cols], axis=-1)
    # moving the content by (R, t) samples the source at R^-1 (p - c - t) + c, in mm
    offset_mm = (points - centre) * spacing_arr - shift
    source = (offset_mm @ rotation) / spacing_arr + centre  # rows of p @ R = R^T p = R^-1 p
    sizes = np.array([depth, height, width], dtype=np.float64)
    normalised = 2.0 * source / (sizes - 1) - 1.0
    grid = torch.from_numpy(normalised[..., ::-1].copy()).float()[None, None]  # (x, y, z) order
    moved = F.grid_sample(slab, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return moved[0, 0, 0].numpy()
