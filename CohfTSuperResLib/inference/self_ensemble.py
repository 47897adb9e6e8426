"""Self-ensemble (opt-in: RunOptions.self_ensemble): the network run on flipped and transposed copies of each slice,
every result brought back to the slice's own orientation and averaged.

The network is not exactly symmetric under flips and transposition, so its errors on the copies partly differ and
their average is closer to the truth (measured gain and cost: docs/benchmarks.md, "Self-ensemble"). The copies, in
the order they are added: the slice itself, flipped left-right, flipped up-down, flipped both ways, then the same
four transposed (rows and columns swapped).

A flip must keep the geometry the network was trained on: LR sample j sits at HR sample s*j (model/upsample.py,
the k-space degradation), not at the centre of its s HR samples. Flipping an LR row of w samples puts its first
sample at HR sample s*(w-1) of the flipped HR row of s*w samples, s - 1 short of its end; so along every flipped axis
the HR T1 is moved by s - 1 samples towards its start after flipping, and the network's output moved back by the same
amount before it is flipped back. The s - 1 HR samples at the far end that no flipped copy covers come from the
unflipped run. The through-plane network has s = 1 (its planes are interpolated onto the thin grid first) and
is never transposed: its thick axis must stay along the rows (options.THROUGH_PLANE_SELF_ENSEMBLES).
"""

from __future__ import annotations

import torch

from CohfTSuperResLib.inference.backends import Runner
from CohfTSuperResLib.model import CohfTConfig

ROWS, COLS = -2, -1
# (axes flipped, transposed) of each copy, in the order the copies are added
COPIES: tuple[tuple[tuple[int, ...], bool], ...] = tuple(
    (flips, transposed) for transposed in (False, True) for flips in ((), (COLS,), (ROWS,), (ROWS, COLS))
)


class SelfEnsembleRunner:
    """A Runner that averages another runner's results on the first `count` COPIES of each batch."""

    def __init__(self, runner: Runner, count: int) -> None:
        if not 1 <= count <= len(COPIES):
            raise ValueError(f"a self-ensemble has 1 to {len(COPIES)} copies, not {count}")
        self.runner, self.count = runner, count

    @property
    def config(self) -> CohfTConfig:
        return self.runner.config

    def run(self, lr: torch.Tensor, t1: torch.Tensor | None, device: torch.device) -> torch.Tensor:
        """The mean SR of the batch's copies, each in the batch's own orientation (float32, CPU)."""
        shift = self.config.scale - 1
        plain = self.runner.run(lr, t1, device)
        total = plain.clone()
        for flips, transposed in COPIES[1 : self.count]:
            lr_copy = _flipped(_transposed(lr, transposed), flips)
            t1_copy = None if t1 is None else _moved_back(_flipped(_transposed(t1, transposed), flips), flips, shift)
            sr_copy = self.runner.run(lr_copy.contiguous(), None if t1_copy is None else t1_copy.contiguous(), device)
            fill = _transposed(plain, transposed)
            total += _transposed(_moved_back(_flipped(sr_copy, flips), flips, shift, fill), transposed)
        return total / self.count


def _transposed(image: torch.Tensor, transposed: bool) -> torch.Tensor:
    return image.transpose(ROWS, COLS) if transposed else image


def _flipped(image: torch.Tensor, flips: tuple[int, ...]) -> torch.Tensor:
    return image.flip(flips) if flips else image


def _moved_back(image: torch.Tensor, axes: tuple[int, ...], shift: int,
                fill: torch.Tensor | None = None) -> torch.Tensor:
    """`image` moved by `shift` samples towards the start along each of `axes` (sample k takes sample k + shift);
    the last `shift` samples along those axes from `fill` (None: left as they were)."""
    if shift == 0 or not axes:
        return image
    moved = (image if fill is None else fill).clone()
    target: list[slice] = [slice(None)] * image.dim()
    source: list[slice] = [slice(None)] * image.dim()
    for axis in axes:
        length = image.shape[axis]
        target[axis], source[axis] = slice(0, length - shift), slice(shift, length)
    moved[tuple(target)] = image[tuple(source)]
    return moved


def self_ensembled(runner: Runner, count: int) -> Runner:
    """`runner` itself for a count of 1, else its self-ensemble of `count` copies."""
    return runner if count == 1 else SelfEnsembleRunner(runner, count)
