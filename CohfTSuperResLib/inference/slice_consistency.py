"""Consistency of restored thin slices with the thick slices they were restored from (the through-plane mode).

Each thick slice of a 2-D acquisition is a weighted mean of the thin slices it covers, under its slice profile
(``data.degradations.slice_profile_weights``: box or Gaussian, with a gap). The network's thin slices need not
average back to the thick slice they came from. ``consistent_thin_slices`` makes them do so with the smallest
change: with W the (K, n*K) profile weights, the thin slices x become x + W^T (W W^T)^-1 (t - W x), the orthogonal
projection onto the thin stacks whose profile-weighted means are the thick slices t (back-projection, as in
iterative back-projection super-resolution). Only that projection's component changes; detail that the thick
slices can not see (what W maps to zero) stays the network's. The thin slices of a thick slice that is exactly 0
(background) are set to 0.

The profile must not be wider than the acquisition's: a wide one ties each thin slice to neighbouring thick slices
that it does not contribute to. Where the profile is not known, a Gaussian of full width at half maximum 0.8 times the
slice spacing was the safest on the selection source over the profiles the networks were trained with; the step is
off by default, because it helps the no-T1 network more than the guided one, so that a bad T1 costs more against the
no-T1 model (docs/benchmarks.md, "Consistency with the thick slices").
"""

from __future__ import annotations

import numpy as np

from CohfTSuperResLib.data.degradations import slice_profile_weights

ROWS_PER_CHUNK = 32  # rows (numpy axis 1) projected at a time, bounding the float32 temporaries


def back_projection(thin_count: int, factor: int, profile: str, gap: float) -> tuple[np.ndarray, np.ndarray]:
    """(W, P): the (K, n*K) profile weights of K = thin_count / factor thick slices, and P = W^T (W W^T)^-1, which
    maps a residual of the thick slices onto the thin ones; float32."""
    weights = slice_profile_weights(thin_count, factor, profile, gap)
    spread = np.linalg.solve(weights @ weights.T, weights).T
    return weights.astype(np.float32), spread.astype(np.float32)


def consistent_thin_slices(thin: np.ndarray, thick: np.ndarray, profile: str, gap: float) -> np.ndarray:
    """The (n*K, J, I) thin slices, projected (module docstring) so that their means under the slice profile are the
    (K, J, I) thick slices, and 0 where their thick slice is 0; float32, a new array. The thin slices of thick slice k
    are n*k .. n*k + n - 1."""
    if thin.ndim != 3 or thick.ndim != 3 or thin.shape[1:] != thick.shape[1:] or thin.shape[0] % thick.shape[0]:
        raise ValueError(f"thin slices {thin.shape} do not tile thick slices {thick.shape} along axis 0")
    weights, spread = back_projection(thin.shape[0], thin.shape[0] // thick.shape[0], profile, gap)
    result = np.array(thin, dtype=np.float32)
    for start in range(0, thin.shape[1], ROWS_PER_CHUNK):
        rows = slice(start, start + ROWS_PER_CHUNK)
        part = result[:, rows].reshape(thin.shape[0], -1)
        residual = thick[:, rows].reshape(thick.shape[0], -1).astype(np.float32) - weights @ part
        part += spread @ residual
        result[:, rows] = part.reshape(result[:, rows].shape)
    result[np.repeat(thick == 0, thin.shape[0] // thick.shape[0], axis=0)] = 0.0
    return result
