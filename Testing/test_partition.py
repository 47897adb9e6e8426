"""Token grouping and padding helpers of the attention modules."""

import pytest
import torch

from CohfTSuperResLib.model.partition import group_tokens, pad_to_multiple, ungroup_tokens


@pytest.mark.parametrize("grouping", ["window", "dilated", "global"])
def test_group_then_ungroup_is_identity(grouping):
    x = torch.randn(2, 5, 12, 18)
    tokens = group_tokens(x, grouping, 6)
    assert torch.equal(ungroup_tokens(tokens, grouping, 6, 2, 12, 18), x)


def test_window_groups_neighbours():
    x = torch.arange(12 * 18, dtype=torch.float32).view(1, 1, 12, 18)
    tokens = group_tokens(x, "window", 6)
    assert tokens.shape == (2 * 3, 36, 1)
    first = tokens[0, :, 0].view(6, 6)
    assert torch.equal(first, x[0, 0, :6, :6])


def test_dilated_groups_tokens_h_over_g_apart():
    x = torch.arange(12 * 18, dtype=torch.float32).view(1, 1, 12, 18)
    tokens = group_tokens(x, "dilated", 6)
    assert tokens.shape == (2 * 3, 36, 1)
    first = tokens[0, :, 0].view(6, 6)
    # rows 12/6 = 2 apart, columns 18/6 = 3 apart: the window spans the whole map
    assert torch.equal(first, x[0, 0, ::2, ::3])


def test_pad_to_multiple_reflects_and_handles_tiny_maps():
    x = torch.arange(35, dtype=torch.float32).view(1, 1, 5, 7)
    padded = pad_to_multiple(x, 6)
    assert padded.shape[-2:] == (6, 12)
    assert torch.equal(padded[..., :5, :7], x)
    assert torch.equal(padded[0, 0, 5, :7], x[0, 0, 3])  # reflect about the last row
    tiny = torch.ones(1, 1, 2, 2)
    assert pad_to_multiple(tiny, 6).shape[-2:] == (6, 6)  # too small to reflect: replicate
    assert pad_to_multiple(x, 6, minimum=12).shape[-2:] == (12, 12)  # at least the minimum
    assert pad_to_multiple(torch.ones(1, 1, 18, 13), 6, minimum=12).shape[-2:] == (18, 18)
