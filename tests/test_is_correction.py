"""Sampler/trainer mismatch: importance weights and the logged differences, against hand-computed values."""

import math

import pytest
import torch

from grpo.algorithms.is_correction import importance_weights, logprob_mismatch
from grpo.algorithms.losses import policy_loss

# Two rows of three tokens; the last token of row 1 is padding (its log-probs are garbage).
TRAINER = torch.tensor([[-1.0, -2.0, -0.5], [-0.1, -3.0, 50.0]])
SAMPLER = torch.tensor([[-1.0, -2.5, -2.0], [-0.1, -1.0, -9.0]])
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])
# rho = exp(trainer - sampler): [[1, e^0.5, e^1.5], [1, e^-2, (masked)]]
E05, E15, EM2 = math.exp(0.5), math.exp(1.5), math.exp(-2.0)


def test_no_correction_is_the_mask():
    w = importance_weights(TRAINER, SAMPLER, MASK, "none", 2.0)
    assert w.tolist() == [[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]


def test_truncate_caps_the_ratio():
    w = importance_weights(TRAINER, SAMPLER, MASK, "truncate", 2.0)
    expected = [[1.0, E05, 2.0], [1.0, EM2, 0.0]]  # e^1.5 = 4.48 capped at 2
    assert torch.allclose(w, torch.tensor(expected), atol=1e-6)


def test_mask_drops_tokens_over_the_cap():
    w = importance_weights(TRAINER, SAMPLER, MASK, "mask", 2.0)
    expected = [[1.0, E05, 0.0], [1.0, EM2, 0.0]]  # e^1.5 > 2: dropped; e^0.5 = 1.65 kept as it is
    assert torch.allclose(w, torch.tensor(expected), atol=1e-6)


def test_cap_above_every_ratio_keeps_rho():
    w = importance_weights(TRAINER, SAMPLER, MASK, "truncate", 10.0)
    assert torch.allclose(w, torch.tensor([[1.0, E05, E15], [1.0, EM2, 0.0]]), atol=1e-6)


def test_weights_carry_no_gradient():
    trainer = TRAINER.clone().requires_grad_(True)
    w = importance_weights(trainer, SAMPLER, MASK, "truncate", 2.0)
    assert not w.requires_grad


def test_bad_mode_and_cap():
    with pytest.raises(ValueError, match="is_correction"):
        importance_weights(TRAINER, SAMPLER, MASK, "clip", 2.0)
    with pytest.raises(ValueError, match="cap"):
        importance_weights(TRAINER, SAMPLER, MASK, "truncate", 0.0)


def test_mismatch_sum_count_max():
    total, count, biggest = logprob_mismatch(TRAINER, SAMPLER, MASK)
    # |diff| on masked tokens: 0, 0.5, 1.5, 0, 2.0 (the padding's 59 is ignored)
    assert total.item() == pytest.approx(4.0)
    assert count.item() == 5
    assert biggest.item() == pytest.approx(2.0)


def test_mismatch_of_nothing():
    total, count, biggest = logprob_mismatch(TRAINER, SAMPLER, torch.zeros_like(MASK))
    assert (total.item(), count.item(), biggest.item()) == (0.0, 0.0, 0.0)


def test_weights_scale_the_surrogate_in_the_loss():
    """On-policy (ratio 1), token-mean: loss = -mean(w * A) over masked tokens, by hand."""
    logp = TRAINER.clone()
    adv = torch.tensor([1.0, -2.0])
    w = importance_weights(TRAINER, SAMPLER, MASK, "truncate", 2.0)
    loss, _ = policy_loss(logp, logp, adv, MASK.float(), loss_agg="token-mean", token_weights=w)
    by_hand = -((1.0 + E05 + 2.0) * 1.0 + (1.0 + EM2) * -2.0) / 5
    assert loss.item() == pytest.approx(by_hand, rel=1e-6)
