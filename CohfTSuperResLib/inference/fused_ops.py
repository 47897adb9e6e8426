"""A convolution and the operation after it in one oneDNN call, for inference on the CPU (fast_paths.py).

torch's eager CPU path writes a convolution's output, then reads it again for the LeakyReLU or
the residual addition that follows; oneDNN can apply either on the fly. torch exposes this as
`torch.ops.mkldnn._convolution_pointwise` (what torch.compile uses on the CPU), an internal
operator: it is used only for float32 CPU tensors without autograd, tracing or autocast, and only
after a probe in the forms the network uses matched the unfused result up to rounding (oneDNN may sum
in another order). Otherwise the plain operations run, and they also take over for good when a fused
call raises at run time (an operator version that passes the probe and still refuses a shape;
docs/benchmarks.md, "GPU: NVIDIA H100", names the one seen).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F


def _same(weight: torch.Tensor) -> tuple[list[int], list[int], list[int], int]:
    """Padding, stride, dilation and groups of a stride-1 'same' convolution with this (odd-sized) weight."""
    return [weight.shape[-2] // 2, weight.shape[-1] // 2], [1, 1], [1, 1], 1


def _fused_conv_leaky(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, slope: float) -> torch.Tensor:
    return torch.ops.mkldnn._convolution_pointwise(x, weight, bias, *_same(weight), "leaky_relu", [slope], "")


def _fused_conv_add(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, other: torch.Tensor
) -> torch.Tensor:
    return torch.ops.mkldnn._convolution_pointwise.binary(
        x, other, weight, bias, *_same(weight), "add", 1.0, None, [], None
    )


LOG = logging.getLogger(__name__)
# The error of the first fused call that raised at run time; once there is one, the plain operations run.
_run_time_failures: list[str] = []


@functools.cache
def _operator_works() -> bool:
    """True when the fused operator exists here and reproduces the plain operations, up to rounding, in the forms
    the network calls it: channels-last maps, weights that are column shares of a channels-last weight, and
    additions to a many-channel and to a one-channel map (the HR image head)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(1, 4, 9, 7, generator=generator).contiguous(memory_format=torch.channels_last)
    other = torch.rand(1, 4, 9, 7, generator=generator).contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(4, 4, 3, 3, generator=generator), torch.randn(4, generator=generator)
    head = torch.randn(1, 8, 3, 3, generator=generator).contiguous(memory_format=torch.channels_last)
    share = head[:, 4:]
    try:
        with torch.inference_mode():
            plain = F.conv2d(x, weight, bias, padding=1)
            image = F.conv2d(x, head[:, :4], None, padding=1)
            return bool(
                torch.allclose(_fused_conv_leaky(x, weight, bias, 0.2), F.leaky_relu(plain, 0.2), rtol=1e-5, atol=1e-5)
                and torch.allclose(_fused_conv_add(x, weight, bias, other), plain + other, rtol=1e-5, atol=1e-5)
                and torch.allclose(_fused_conv_add(x, share, None, image), F.conv2d(x, share, None, padding=1) + image,
                                   rtol=1e-5, atol=1e-5)
            )
    except (RuntimeError, AttributeError, NotImplementedError, TypeError):
        return False


def _fused_or_plain(fused: Callable[[], torch.Tensor], plain: Callable[[], torch.Tensor]) -> torch.Tensor:
    """fused(), or plain() when it raises a RuntimeError; then the plain operations run from here on."""
    try:
        return fused()
    except RuntimeError as error:
        _run_time_failures.append(str(error))
        LOG.info("the fused oneDNN convolution failed (%s); the plain operations run from now on", error)
        return plain()


def _cpu_autocast() -> bool:
    """Whether CPU autocast is on (torch < 2.4 has no device argument to is_autocast_enabled)."""
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:
        return torch.is_autocast_cpu_enabled()


def cpu_float_inference(x: torch.Tensor) -> bool:
    """Whether x is a CPU float32 tensor of an inference run: no autograd, autocast, tracing or export."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.is_grad_enabled()
        and not _cpu_autocast()
        and not torch.compiler.is_compiling()
    )


def can_fuse(x: torch.Tensor) -> bool:
    """Whether the fused path applies to this input: a 4-D map of a CPU float32 inference run, operator checked."""
    return x.dim() == 4 and cpu_float_inference(x) and not _run_time_failures and _operator_works()


def conv_leaky(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, slope: float) -> torch.Tensor:
    """LeakyReLU(conv(x)) for a stride-1 'same' convolution (odd kernel), fused where `can_fuse(x)`."""
    def plain() -> torch.Tensor:
        return F.leaky_relu(F.conv2d(x, weight, bias, padding=_same(weight)[0]), slope)

    if can_fuse(x):
        return _fused_or_plain(lambda: _fused_conv_leaky(x, weight, bias, slope), plain)
    return plain()


def conv_add(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, other: torch.Tensor) -> torch.Tensor:
    """conv(x) + other for a stride-1 'same' convolution (odd kernel), other of the output's shape; fused where
    `can_fuse(x)` and `other` has the input's layout."""
    def plain() -> torch.Tensor:
        return F.conv2d(x, weight, bias, padding=_same(weight)[0]) + other

    if can_fuse(x) and other.shape[1] == weight.shape[0] and _same_layout(x, other):
        return _fused_or_plain(lambda: _fused_conv_add(x, weight, bias, other), plain)
    return plain()


def conv_of_concatenation(
    parts: Sequence[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """conv(cat(parts, dim=1)) for a stride-1 'same' convolution. Where `can_fuse`, the sum of one convolution
    per part (its columns of the weight), each after the first adding its share in the same oneDNN call: no
    concatenated map is written (the HR image head: one 32-channel 780 x 660 map less per slice)."""
    if not can_fuse(parts[0]):
        return F.conv2d(torch.cat(list(parts), dim=1), weight, bias, padding=_same(weight)[0])
    shares = weight.split([part.shape[1] for part in parts], dim=1)
    total = F.conv2d(parts[0], shares[0], bias, padding=_same(weight)[0])
    for part, share in zip(parts[1:], shares[1:], strict=True):
        total = conv_add(part, share, None, total)
    return total


def _same_layout(x: torch.Tensor, other: torch.Tensor) -> bool:
    """Both channels-last, or both plain contiguous (what the fused addition reads without a copy)."""
    layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    return other.is_contiguous(memory_format=layout)
