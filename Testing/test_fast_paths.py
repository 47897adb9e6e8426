"""The CPU speed paths give the plain result: fused dense blocks and concatenations, the single-sample AdaIN,
head tokens, channel statistics, the softmax without row maxima, freed-memory reuse, the content box; the ONNX
cache key follows the graph code."""

from __future__ import annotations

import copy
import platform

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from inference_helpers import guide_for, save_tiny, volume

from CohfTSuperResLib.inference import onnx_cache
from CohfTSuperResLib.inference.allocator import reuse_freed_memory
from CohfTSuperResLib.inference.backends import TorchRunner
from CohfTSuperResLib.inference.cropping import content_box
from CohfTSuperResLib.inference.engine import super_resolve
from CohfTSuperResLib.inference import fast_attention as attention_module
from CohfTSuperResLib.inference.fast_attention import EXP_SAFE_BOUND, softmax_product
from CohfTSuperResLib.inference.fast_paths import FAST_CLASSES, accelerate, channels_last_stats
from CohfTSuperResLib.inference import fused_ops
from CohfTSuperResLib.inference.fused_ops import can_fuse, conv_of_concatenation
from CohfTSuperResLib.model import build_model
from CohfTSuperResLib.model.adain import PointwiseAdaIN, channel_stats
from CohfTSuperResLib.model.attention import BasicAttention
from CohfTSuperResLib.model.partition import group_head_tokens, group_tokens
from CohfTSuperResLib.model.rrdb import ResidualDenseBlock

torch.set_num_threads(1)


@pytest.mark.parametrize(("channels", "growth", "convs"), [(16, 16, 3), (8, 4, 5), (6, 6, 1)])
def test_fused_dense_block_equals_the_concatenating_one(channels, growth, convs):
    torch.manual_seed(0)
    block = ResidualDenseBlock(channels, growth, convs).eval()
    for parameter in block.parameters():
        torch.nn.init.normal_(parameter, std=0.2)
    fast = accelerate(copy.deepcopy(block))
    x = torch.randn(2, channels, 19, 23).contiguous(memory_format=torch.channels_last)
    plain = block(x).detach()  # the reference: concatenations
    assert torch.equal(plain, fast(x).detach())  # autograd on: the fast class defers to the reference
    with torch.inference_mode():
        fused = fast(x)
        reference = block(x)
    assert torch.allclose(fused, plain, atol=1e-5, rtol=1e-5)
    assert torch.allclose(reference, plain, atol=1e-5, rtol=1e-5)


def test_fusion_only_for_cpu_float32_inference():
    x = torch.rand(1, 4, 8, 8)
    with torch.inference_mode():
        assert not can_fuse(x.double())
        assert not can_fuse(x[0])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not can_fuse(x)
    assert not can_fuse(x)  # autograd on: training takes the plain path


def test_a_fused_call_that_raises_gives_the_plain_result_and_the_plain_path_from_then_on(monkeypatch):
    """An operator version that passes the probe may still refuse a shape at run time (docs/benchmarks.md, "GPU:
    NVIDIA H100"): the run must go on with the plain operations, not crash."""
    monkeypatch.setattr(fused_ops, "_run_time_failures", [])
    network = build_model("S", 2).eval()
    lr, t1 = torch.rand(1, 1, 12, 10), torch.rand(1, 1, 24, 20)
    with torch.inference_mode():
        reference = network.super_resolve_image(lr, t1)
    runner = TorchRunner(copy.deepcopy(network))
    calls = []

    def refuse(*args):
        calls.append(args)
        raise RuntimeError("could not create a memory")

    monkeypatch.setattr(fused_ops, "_fused_conv_add", refuse)
    monkeypatch.setattr(fused_ops, "_fused_conv_leaky", refuse)
    first = runner.run(lr, t1, torch.device("cpu"))
    assert len(calls) == 1  # the first refusal switched the fused path off
    torch.testing.assert_close(first, reference, rtol=1e-5, atol=1e-5)
    with torch.inference_mode():
        assert not can_fuse(torch.rand(1, 4, 8, 8))
    torch.testing.assert_close(runner.run(lr, t1, torch.device("cpu")), reference, rtol=1e-5, atol=1e-5)
    assert len(calls) == 1


def test_fused_operator_is_used_on_x86():
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("the oneDNN fused operator is probed on x86-64 only here")
    with torch.inference_mode():
        assert can_fuse(torch.rand(1, 4, 8, 8)), "torch's fused CPU convolution did not pass its probe on x86-64"


def test_reuse_freed_memory_is_active_on_glibc_and_leaves_results_unchanged():
    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 4, 3, padding=1)
    x = torch.rand(1, 4, 300, 300)
    with torch.inference_mode():
        before = conv(x)
        with reuse_freed_memory() as active:
            during = conv(x)
        with pytest.raises(RuntimeError), reuse_freed_memory():
            raise RuntimeError("an error inside still restores glibc's settings")
        after = conv(x)
    assert active == glibc
    assert torch.equal(before, during) and torch.equal(before, after)


def test_content_box_covers_the_content_with_margin_in_multiples():
    lr = torch.zeros(2, 1, 200, 150)
    lr[0, 0, 40:60, 30:50] = 1.0
    lr[1, 0, 90:100, 70:75] = 1.0
    box = content_box(lr, multiple=30, margin=16)
    assert box is not None and box.height % 30 == 0 and box.width % 30 == 0
    assert box.top <= 40 - 16 and box.top + box.height >= 100 + 16
    assert box.left <= 30 - 16 and box.left + box.width >= 75 + 16
    assert 0 <= box.top and box.top + box.height <= 200 and 0 <= box.left and box.left + box.width <= 150
    assert content_box(torch.zeros(1, 1, 90, 90), 30) is None  # nothing to run
    assert content_box(torch.ones(1, 1, 90, 90), 30) is None  # nothing to skip
    edge = torch.zeros(1, 1, 300, 300)
    edge[0, 0, 0:5, 290:300] = 1.0
    box = content_box(edge, 30, margin=16)
    assert (box.top, box.left, box.height, box.width) == (0, 240, 60, 60)  # 5 x 10 + 2 x 16 -> 60, flush with the edges
    box = content_box(edge, 6, minimum=30, margin=8)
    assert (box.top, box.left, box.height, box.width) == (0, 270, 30, 30)  # 5 x 10 + 2 x 8 -> 24 x 30 -> at least 30


def test_content_box_leaves_out_faint_background_only():
    lr = torch.zeros(1, 1, 300, 300)
    lr[0, 0, 120:160, 130:170] = 0.8  # the head
    lr[0, 0, 10:12, 10:12] = 0.01  # faint noise far from it, below the threshold
    box = content_box(lr, multiple=30, threshold=0.02, margin=8)
    assert (box.top, box.left, box.height, box.width) == (110, 120, 60, 60)  # 40 + 2 x 8 -> 60 around the head
    lr[0, 0, 10:12, 10:12] = 0.05  # a sample above the threshold is content wherever it is
    box = content_box(lr, multiple=30, threshold=0.02, margin=8)
    assert box.top == 0 and box.left == 0 and box.height >= 160 + 8 and box.width >= 170 + 8


def test_engine_runs_the_network_on_the_content_box_only(tmp_path, monkeypatch):
    t2 = volume((2, 90, 120))
    voxels = sitk.GetArrayFromImage(t2)
    voxels[:, :, :] = 0
    voxels[:, 20:40, 30:55] = 100.0 + 1.5 * np.arange(25, dtype=np.float32)  # not whole numbers: not a label map
    small = sitk.GetImageFromArray(voxels)
    small.CopyInformation(t2)
    t1 = guide_for(small, 2)
    weights = save_tiny(tmp_path, 2)
    seen = []
    original = TorchRunner.run
    monkeypatch.setattr(TorchRunner, "run", lambda self, lr, t1, device: seen.append(lr.shape) or original(
        self, lr, t1, device))
    cropped = sitk.GetArrayFromImage(super_resolve(small, t1, 2, model_path=weights, device="cpu", guide_check="off"))
    # 20 x 25 + 2 x 8 margin -> 36 x 42 (multiples of the input multiple 6, at least 30), not 90 x 120
    assert seen and all(shape[-2:] == (36, 42) for shape in seen)
    seen.clear()
    whole = sitk.GetArrayFromImage(super_resolve(small, t1, 2, model_path=weights, device="cpu", whole_slices=True, guide_check="off"))
    assert seen and all(shape[-2:] == (90, 120) for shape in seen)
    background = np.abs(whole) == 0
    assert np.array_equal(cropped[background], whole[background])  # zero wherever the input has nothing
    # the network is slice-wide, so less context changes the result (shipped models: docs/benchmarks.md)
    assert np.abs(cropped - whole).mean() < 0.25 * np.abs(whole).mean()


def test_onnx_cache_key_follows_the_graph_code(monkeypatch):
    path = onnx_cache.cached_path("ab" * 32)
    assert path.name == f"{'ab' * 32}-{onnx_cache.graph_code_digest()}.onnx"
    assert onnx_cache.cached_path("ab" * 32) == path  # stable
    monkeypatch.setattr(onnx_cache, "GRAPH_SOURCES", ("model/rrdb.py",))
    assert onnx_cache.cached_path("ab" * 32) != path  # other sources, other graph, other file


def test_channel_statistics_do_not_depend_on_the_memory_layout():
    x = torch.randn(2, 5, 31, 17) * 3 + 1
    plain = channel_stats(x)
    channels_last = channels_last_stats(x.contiguous(memory_format=torch.channels_last))
    for a, b in zip(plain, channels_last, strict=True):
        assert a.shape == b.shape == (2, 5, 1, 1)
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("grouping", ["window", "dilated", "global"])
def test_head_tokens_are_the_grouped_tokens_split_into_heads(grouping):
    x = torch.randn(2, 8, 12, 18)
    tokens = group_tokens(x, grouping, 6)
    heads = group_head_tokens(x, grouping, 6, 4)
    assert torch.equal(heads, tokens.view(*tokens.shape[:2], 4, 2).transpose(1, 2))


@pytest.mark.parametrize("widths, out_channels", [((16, 16), 16), ((16, 16), 1), ((9, 16, 7), 5)])
def test_convolution_of_parts_equals_the_convolution_of_their_concatenation(widths, out_channels):
    torch.manual_seed(0)
    parts = [torch.randn(1, width, 13, 11).contiguous(memory_format=torch.channels_last) for width in widths]
    weight, bias = torch.randn(out_channels, sum(widths), 3, 3), torch.randn(out_channels)
    with torch.inference_mode():
        assert can_fuse(parts[0])
        expected = F.conv2d(torch.cat(parts, dim=1), weight, bias, padding=1)
        # sums of up to 288 products, values of size ~17: rounding differs by up to ~2e-5
        torch.testing.assert_close(conv_of_concatenation(parts, weight, bias), expected, rtol=1e-5, atol=1e-4)


def test_adain_single_sample_path_equals_the_batched_formula():
    """One sample takes the path with mu1 and sigma1 / sigma2 folded into the heads; two samples the formula as
    written: the same values up to rounding."""
    torch.manual_seed(0)
    reference = PointwiseAdaIN(16, 2).eval()
    for head in (reference.to_gamma, reference.to_beta):
        torch.nn.init.normal_(head.weight, std=0.05)
        torch.nn.init.normal_(head.bias, std=0.1)
    adain = accelerate(copy.deepcopy(reference))
    x1 = (torch.randn(1, 16, 12, 10) * 2 + 1).contiguous(memory_format=torch.channels_last)
    x2 = (torch.randn(1, 16, 24, 20) * 0.5 - 3).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        single = adain(x1, x2)
        batched = adain(x1.repeat(2, 1, 1, 1), x2.repeat(2, 1, 1, 1))
        written = reference(x1, x2)
    torch.testing.assert_close(single[0], batched[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(single, written, rtol=1e-5, atol=1e-5)


def test_softmax_product_without_row_maxima_equals_softmax_then_product():
    torch.manual_seed(0)
    logits, values = torch.randn(50, 4, 36, 36) * 5, torch.randn(50, 4, 36, 4)
    expected = torch.softmax(logits, dim=-1) @ values
    bound = float(logits.abs().amax())
    assert bound < EXP_SAFE_BOUND
    torch.testing.assert_close(softmax_product(logits.clone(), values, bound), expected, rtol=1e-5, atol=1e-6)
    # logits beyond the safe bound (exp would overflow): the stable softmax, exactly
    large = logits * 20
    assert torch.equal(softmax_product(large.clone(), values, float(large.abs().amax())),
                       torch.softmax(large, dim=-1) @ values)
    assert torch.equal(softmax_product(logits.clone(), values, None), expected)


@pytest.mark.parametrize(("grouping", "patch", "position"), [("window", 1, "none"), ("dilated", 1, "none"),
                                                              ("window", 5, "local"), ("global", 5, "none")])
def test_attention_inference_path_equals_the_training_path(grouping, patch, position):
    """CPU inference skips the softmax's row maxima where the logits are provably small; with autograd on (as in
    training) the stable softmax runs: the same output up to rounding, also for logits too large to skip them."""
    torch.manual_seed(0)
    reference = BasicAttention(16, 4, patch, grouping, 6, position=position).eval()
    attention = accelerate(copy.deepcopy(reference))
    x = torch.randn(1, 16, 60, 30).contiguous(memory_format=torch.channels_last)
    for gain in (1.0, 40.0):  # 40: logits far above the bound, the stable path everywhere
        with torch.no_grad():
            for module in (attention, reference):
                for layer in (module.to_q, module.to_k):
                    layer.weight.mul_(gain)
        training_path = attention(x, x).detach()
        with torch.inference_mode():
            inference_path = attention(x, x)
            written = reference(x, x)
        torch.testing.assert_close(inference_path, training_path, rtol=1e-5, atol=1e-5)
        # the reference divides the logits by sqrt(d'), the fast path scales q: sharp softmaxes amplify the rounding
        torch.testing.assert_close(inference_path, written, rtol=1e-4, atol=1e-4)


def test_chunked_attention_equals_the_whole_softmax_product(monkeypatch):
    torch.manual_seed(0)
    q, k, v = torch.randn(23, 4, 36, 4), torch.randn(23, 4, 36, 4), torch.randn(23, 4, 36, 6)
    bias = torch.randn(4, 36, 36)
    expected = torch.softmax(q @ k.transpose(-1, -2) + bias, dim=-1) @ v
    monkeypatch.setattr(attention_module, "CHUNK_BYTES", 5 * 4 * 4 * 36 * (36 + 4 + 6 + 4 + 6))  # chunks of 5 groups
    with torch.inference_mode():
        torch.testing.assert_close(attention_module.chunked_attention(q, k, v, bias), expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(attention_module.chunked_attention(q, k, v), torch.softmax(
            q @ k.transpose(-1, -2), dim=-1) @ v, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("grouping", ["window", "dilated"])
def test_weight_bounds_hold_and_select_the_chunked_path(grouping, monkeypatch):
    """The logit and inter-head bounds from the weights alone hold for any input, also a huge, a constant and a
    one-hot map; at the trained models' scale they are below the safe bound, so the chunked path runs."""
    torch.manual_seed(0)
    attention = accelerate(BasicAttention(16, 4, 1, grouping, 6).eval())
    with torch.no_grad():
        for norm in (attention.embed_query[1], attention.embed_context[1]):
            norm.weight.uniform_(-1.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
    with torch.inference_mode():
        logit_bound, head_bound = attention._weight_bounds()
        assert logit_bound < EXP_SAFE_BOUND
        one_hot = torch.zeros(1, 16, 24, 18)
        one_hot[0, 3, 5, 7] = 1e4
        for x in (torch.randn(1, 16, 24, 18) * 1e3, torch.full((1, 16, 24, 18), 7.0), one_hot):
            x = x.contiguous(memory_format=torch.channels_last)
            q, k, v, _h, _w = attention._heads(x, x)
            assert float((q @ k.transpose(-1, -2)).abs().amax()) <= logit_bound
            assert float(v.square().sum(dim=-1).amax()) <= head_bound
        calls = []
        monkeypatch.setattr(attention_module, "chunked_attention",
                            lambda *args: calls.append(1) or attention_module.softmax_product(
                                args[0] @ args[1].transpose(-1, -2), args[2], None))
        attention(x, x)
    assert calls == [1]
    assert accelerate(BasicAttention(16, 4, 5, "window", 6))._weight_bounds() is None  # patch tokens: from the data


def test_engine_runs_one_slice_batches_each_on_its_own_box(tmp_path, monkeypatch):
    """One slice per CPU batch, each on its own box (whatever the order the engine picks): every slice lands in its
    own place."""
    voxels = np.zeros((4, 90, 120), dtype=np.float32)
    for index, half in enumerate((5, 25, 15, 35)):  # heads of growing and shrinking size
        voxels[index, 45 - half : 45 + half, 60 - half : 60 + half] = 100.25 + index  # not whole: not a label map
    t2 = sitk.GetImageFromArray(voxels)
    t2.SetSpacing((1.0, 1.0, 3.0))
    t1 = guide_for(t2, 2)
    weights = save_tiny(tmp_path, 2)
    seen = []
    original = TorchRunner.run
    monkeypatch.setattr(TorchRunner, "run", lambda self, lr, t1, device: seen.append(
        (lr.shape[-2] * lr.shape[-1], float(lr.amax()))) or original(self, lr, t1, device))
    result = sitk.GetArrayFromImage(super_resolve(t2, t1, 2, model_path=weights, device="cpu", guide_check="off"))
    assert len({area for area, _peak in seen}) > 1  # each slice ran on its own box
    for index in range(4):  # each output slice from its own input slice: brightest where its head is
        assert result[index][90, 120] > 0.5 * (100.25 + index)


@pytest.mark.parametrize(("scale", "use_t1"), [(2, True), (4, True), (3, False)])
def test_accelerated_network_equals_the_reference_network(scale, use_t1):
    """Every module with a fast path is swapped, and the whole network gives the reference's output."""
    torch.manual_seed(0)
    reference = build_model("S", scale, use_t1=use_t1).eval()
    with torch.no_grad():
        for name, parameter in reference.named_parameters():
            if "to_gamma" in name or "to_beta" in name:  # zero at initialisation: give AdaIN's heads some weight
                parameter.normal_(std=0.05)
    fast = accelerate(copy.deepcopy(reference))
    assert not [m for m in fast.modules() if type(m) in FAST_CLASSES]  # no module left with the reference class
    assert {type(m) for m in fast.modules()} & set(FAST_CLASSES.values())
    lr = torch.rand(1, 1, 30, 36).contiguous(memory_format=torch.channels_last)
    t1 = torch.rand(1, 1, 30 * scale, 36 * scale).contiguous(memory_format=torch.channels_last) if use_t1 else None
    with torch.inference_mode():
        expected = reference.super_resolve_image(lr, t1)
        torch.testing.assert_close(fast.super_resolve_image(lr, t1), expected, rtol=1e-4, atol=1e-5)
