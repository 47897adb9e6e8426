"""The Cohf-T network: shapes at any slice size, every variant and scale, ablations, input checks."""

import pytest
import torch

from CohfTSuperResLib.model.gradient import gradient_magnitude
from CohfTSuperResLib.model import build_model, count_parameters
from CohfTSuperResLib.options import SCALES, VARIANTS
from CohfTSuperResLib.model.attention import BasicAttention

SMALL_SIZES = [(17, 23), (6, 5), (31, 29)]
SLICE_SIZES = [(181, 217), (256, 256), (348, 384)]


def _inputs(scale, height, width, batch=1, seed=0):
    generator = torch.Generator().manual_seed(seed)
    lr = torch.rand(batch, 1, height, width, generator=generator)
    t1 = torch.rand(batch, 1, scale * height, scale * width, generator=generator)
    return lr, t1


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("size", SMALL_SIZES)
def test_forward_shapes_every_variant_scale_small_size(variant, scale, size):
    torch.manual_seed(0)
    model = build_model(variant, scale).eval()
    lr, t1 = _inputs(scale, *size, batch=2)
    with torch.no_grad():
        sr, grad = model(lr, t1)
    expected = (2, 1, scale * size[0], scale * size[1])
    assert sr.shape == expected and grad.shape == expected
    assert sr.dtype == torch.float32 and grad.dtype == torch.float32
    assert torch.isfinite(sr).all() and torch.isfinite(grad).all()


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("size", [pytest.param(size, marks=pytest.mark.slow) if size == (348, 384) else size
                                  for size in SLICE_SIZES])
def test_variant_s_on_real_slice_sizes(scale, size):
    torch.manual_seed(0)
    model = build_model("S", scale).eval()
    lr, t1 = _inputs(scale, *size)
    with torch.no_grad():
        sr, grad = model(lr, t1)
    assert sr.shape == grad.shape == (1, 1, scale * size[0], scale * size[1])


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["M", "L"])
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("size", SLICE_SIZES)
def test_larger_variants_on_real_slice_sizes(variant, scale, size):
    model = build_model(variant, scale).eval()
    lr, t1 = _inputs(scale, *size)
    with torch.no_grad():
        sr, _ = model(lr, t1)
    assert sr.shape == (1, 1, scale * size[0], scale * size[1])


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_backward_reaches_every_parameter(variant):
    torch.manual_seed(0)
    model = build_model(variant, 2)
    lr, t1 = _inputs(2, 13, 14, batch=2)
    sr, grad = model(lr, t1)
    (sr.square().mean() + grad.square().mean()).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no finite gradient for {missing[:5]}"


def test_output_is_independent_of_the_other_batch_members():
    torch.manual_seed(0)
    model = build_model("S", 3).eval()
    lr, t1 = _inputs(3, 19, 16, batch=3)
    with torch.no_grad():
        batched, _ = model(lr, t1)
        alone, _ = model(lr[1:2], t1[1:2])
    torch.testing.assert_close(batched[1:2], alone, rtol=1e-4, atol=1e-5)


def test_t1_changes_the_output_of_the_guided_model():
    torch.manual_seed(0)
    model = build_model("S", 2).eval()
    lr, t1 = _inputs(2, 24, 24)
    with torch.no_grad():
        first, _ = model(lr, t1)
        second, _ = model(lr, t1.flip(-1))
    assert (first - second).abs().max() > 1e-6


def test_without_t1_the_network_has_no_t1_branch_and_refuses_a_t1():
    guided = build_model("S", 4)
    unguided = build_model("S", 4, use_t1=False)
    assert unguided.t1_gate is None
    assert all(stage.block.cross_modal is None and stage.block.align is None for stage in unguided.stages)
    assert not any("t1_gate" in name or "cross_modal" in name for name, _ in unguided.named_parameters())
    assert count_parameters(unguided) < count_parameters(guided)
    lr, t1 = _inputs(4, 10, 12)
    sr, _ = unguided(lr)
    assert sr.shape == (1, 1, 40, 48)
    with pytest.raises(ValueError, match="without the T1 guide"):
        unguided(lr, t1)


def test_without_adain_the_alignment_module_is_gone():
    guided = build_model("S", 2)
    plain = build_model("S", 2, adain=False)
    assert all(stage.block.align is None for stage in plain.stages)
    assert all(stage.block.cross_modal is not None for stage in plain.stages)
    assert count_parameters(plain) < count_parameters(guided)


def test_inter_head_switch_changes_the_attention_and_nothing_else():
    torch.manual_seed(0)
    with_heads = BasicAttention(8, heads=4, patch=1, grouping="window", window=6, inter_head=True).eval()
    without = BasicAttention(8, heads=4, patch=1, grouping="window", window=6, inter_head=False).eval()
    without.load_state_dict(with_heads.state_dict(), strict=True)  # same parameters: A is parameter-free
    x = torch.randn(1, 8, 12, 12)
    with torch.no_grad():
        assert (with_heads(x, x) - without(x, x)).abs().max() > 1e-4
    full = build_model("S", 2)
    ablated = build_model("S", 2, inter_head=False)
    assert not any(module.inter_head for module in ablated.modules() if isinstance(module, BasicAttention))
    assert count_parameters(full) == count_parameters(ablated)


def test_short_range_attention_is_local_and_long_range_is_not():
    torch.manual_seed(0)
    x = torch.randn(1, 8, 24, 24)
    changed = x.clone()
    changed[0, 0, 0, 0] += 5.0  # one channel: a shift of all channels would vanish in the LayerNorm
    for grouping, far_changes in (("window", False), ("dilated", True)):
        module = BasicAttention(8, heads=4, patch=1, grouping=grouping, window=6).eval()
        with torch.no_grad():
            delta = (module(changed, changed) - module(x, x)).abs().sum(dim=1)[0]
        far_region = delta[8:, 8:]  # beyond the first 6x6 window and the 3x3 conv halo
        assert bool((far_region > 1e-5).any()) == far_changes, grouping


def test_bad_inputs_raise_clear_value_errors():
    model = build_model("S", 2).eval()
    lr, t1 = _inputs(2, 10, 10)
    with pytest.raises(ValueError, match="batch, 1, height, width"):
        model(lr[0], t1)
    with pytest.raises(ValueError, match="HR T1 must have shape"):
        model(lr, t1[..., :-1])
    with pytest.raises(ValueError, match="needs the registered HR T1"):
        model(lr)
    broken = lr.clone()
    broken[0, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        model(broken, t1)
    broken_t1 = t1.clone()
    broken_t1[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="HR T1 contains NaN or Inf"):
        model(lr, broken_t1)
    with pytest.raises(ValueError, match="unknown model variant"):
        build_model("XL", 2)
    with pytest.raises(ValueError, match="scale must be one of"):
        build_model("S", 5)


def test_forward_is_deterministic():
    torch.manual_seed(0)
    model = build_model("S", 2).eval()
    lr, t1 = _inputs(2, 20, 22)
    with torch.no_grad():
        assert torch.equal(model(lr, t1)[0], model(lr, t1)[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    """Full fp32 on both: TF32 convolutions (torch's CUDA default, on Ampere and later) are switched off here,
    since with them an H200 differed from the CPU by up to 4.8e-4 on this input (docs/benchmarks.md)."""
    torch.manual_seed(0)
    model = build_model("S", 2).eval()
    lr, t1 = _inputs(2, 30, 30)
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.no_grad():
            cpu, _ = model(lr, t1)
            gpu, _ = model.to("cuda")(lr.cuda(), t1.cuda())
    finally:
        torch.backends.cudnn.allow_tf32 = saved
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-3, atol=1e-4)


def test_adain_beta_reaches_the_output_with_channel_modulation_only():
    """A beta shared by all channels is removed by the attention's channel LayerNorm (zero gradient, the paper's
    text); per-channel beta is not."""
    gradients = {}
    for modulation in ("pixel", "channel"):
        torch.manual_seed(0)
        model = build_model("S", 2, adain_modulation=modulation)
        lr, t1 = _inputs(2, 12, 14, batch=2)
        sr, grad = model(lr, t1)
        (sr.square().mean() + grad.square().mean()).backward()
        gradients[modulation] = max(float(stage.block.align.to_beta.weight.grad.abs().max()) for stage in model.stages)
    assert gradients["pixel"] < 1e-9
    assert gradients["channel"] > 1e-6


def test_local_cross_attention_starts_at_the_co_located_t1_patch():
    """With the locality prior, a query's largest correlation at initialisation is its own place in the T1."""
    torch.manual_seed(0)
    model = build_model("S", 2).eval()
    attention = model.stages[0].block.cross_modal
    assert attention.grouping == "window" and attention.relative_bias is not None
    x1, x2 = torch.randn(1, 16, 30, 30), torch.randn(1, 16, 60, 60)
    weights = attention.attention_weights(x1, x2)  # (groups, heads, 36, 36)
    diagonal = torch.diagonal(weights[:, 0], dim1=-2, dim2=-1)
    assert bool((weights[:, 0].argmax(dim=-1) == torch.arange(36)).float().mean() > 0.9)
    assert float(diagonal.mean()) > 0.3
    global_model = build_model("S", 2, cross_position="none")
    assert global_model.stages[0].block.cross_modal.grouping == "global"
    assert global_model.stages[0].block.cross_modal.relative_bias is None


def test_guide_input_feeds_the_folded_t1_to_the_input_gate():
    torch.manual_seed(0)
    direct = build_model("S", 3)
    plain = build_model("S", 3, guide_input=False)
    assert direct.image_gate[0].in_channels == 1 + 2 * 9 and plain.image_gate[0].in_channels == 1
    assert build_model("S", 3, use_t1=False).image_gate[0].in_channels == 1
    lr, t1 = _inputs(3, 10, 11)
    changed = t1.clone()
    changed[0, 0, 4, 4] += 1.0  # one HR T1 sample moves the features of its LR sample through the input gate
    direct.eval()
    with torch.no_grad():
        folded = [torch.nn.functional.pixel_unshuffle(x, 3) for x in (t1, gradient_magnitude(t1))]
        features = direct.image_gate(torch.cat([lr, *folded], 1))
        sr, _ = direct(lr, t1)
        sr_changed, _ = direct(lr, changed)
    assert features.shape == (1, 16, 10, 11)
    assert (sr - sr_changed).abs().max() > 1e-6


def test_stored_configs_without_the_new_switches_mean_the_papers_network():
    from CohfTSuperResLib.model import CohfTConfig
    from CohfTSuperResLib.model.config import PAPER_TEXT_SWITCHES

    old = {key: value for key, value in build_model("S", 2).config.to_dict().items() if key not in PAPER_TEXT_SWITCHES}
    config = CohfTConfig.from_dict(old)
    assert (config.adain_modulation, config.cross_position, config.guide_input) == ("pixel", "none", False)
    assert CohfTConfig.from_dict(build_model("S", 4).config.to_dict()) == build_model("S", 4).config
    with pytest.raises(ValueError, match="unknown Cohf-T configuration key"):
        CohfTConfig.from_dict({**old, "colour": "red"})
    for bad in ({"scale": 7}, {"scale": 2.0}, {"dim": 0}, {"heads": "4"}, {"cross_position": "far"},
                {"use_t1": "yes"}):
        with pytest.raises(ValueError):
            CohfTConfig.from_dict({**old, **bad})
