"""Truncation, dynamic-sampling and top-entropy masks against hand-worked cases."""

import pytest
import torch

from grpo.algorithms.sampling import dynamic_sampling_keep, top_entropy_token_mask, truncation_mask

EOS = 2


def test_truncation_mask():
    ids = torch.tensor([[5, 6, 2, 0], [5, 6, 7, 8], [2, 0, 0, 0], [0, 0, 0, 0], [5, 6, 0, 2]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0]])
    # ended, cut off, ended at once, empty (never ended), EOS only in padding (cut off)
    assert truncation_mask(ids, EOS, mask).tolist() == [False, True, False, True, True]
    # several stop ids: 8 ends row 1
    assert truncation_mask(ids, [EOS, 8], mask).tolist() == [False, False, False, True, True]


def test_dynamic_sampling_drops_flat_groups():
    r = torch.tensor([1.0, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 1, 1, 1, 0, 0.5, 0.5, 0.5, 0.5])
    # means: 1, 0, 0.25, 0.75, 0.5 (flat)
    assert dynamic_sampling_keep(r, 4).tolist() == [False, False, True, True, False]
    # EasyR1 keeps filter_low < mean < filter_high: a mean equal to a bound is dropped
    assert dynamic_sampling_keep(r, 4, filter_low=0.25).tolist() == [False, False, False, True, False]
    assert dynamic_sampling_keep(r, 4, filter_high=0.75).tolist() == [False, False, True, False, False]
    assert dynamic_sampling_keep(r, 4, filter_low=0.2, filter_high=0.8).tolist() == [False, False, True, True, False]


# Real entropies (padding holds 9.0 and must never be kept) sorted: 0.1 0.2 0.3 0.5 0.7 0.9
ENT = torch.tensor([[0.1, 0.5, 0.9, 9.0], [0.3, 0.7, 0.2, 9.0]])
MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0]])


@pytest.mark.parametrize(
    "quantile, expected",
    [
        (1.0, [[1, 1, 1, 0], [1, 1, 1, 0]]),  # keep all real tokens (TRL: no mask at 1.0)
        (0.5, [[0, 1, 1, 0], [0, 1, 0, 0]]),  # threshold quantile(0.5) = (0.3 + 0.5) / 2 = 0.4
        (0.2, [[0, 0, 1, 0], [0, 1, 0, 0]]),  # threshold quantile(0.8) = 0.7 (position 4 of 0..5)
        (0.0, [[0, 0, 1, 0], [0, 0, 0, 0]]),  # only the maximum
    ],
)
def test_top_entropy_token_mask(quantile, expected):
    assert top_entropy_token_mask(ENT, MASK, quantile).int().tolist() == expected


def test_top_entropy_empty_mask_and_bad_quantile():
    assert not top_entropy_token_mask(ENT, torch.zeros_like(MASK), 0.5).any()
    with pytest.raises(ValueError, match="fraction of tokens kept"):
        top_entropy_token_mask(ENT, MASK, 1.5)
