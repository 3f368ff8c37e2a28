"""RCE weights, loss and candidate filter against hand-computed values."""

import math

import pytest
import torch

from grpo.algorithms.rce import filter_candidates, rce_loss, rce_weights


def _close(actual, expected):
    torch.testing.assert_close(actual, torch.tensor(expected), atol=1e-6, rtol=0)


def test_softmax_weights():
    # softmax(0, ln 3) = [1/4, 3/4]; a flat group -> [1/2, 1/2]
    _close(rce_weights(torch.tensor([0.0, math.log(3), 1.0, 1.0]), 2), [0.25, 0.75, 0.5, 0.5])
    # tau 2: softmax(0, ln3 / 2) = [1, sqrt 3] / (1 + sqrt 3) = [0.3660254, 0.6339746]
    _close(rce_weights(torch.tensor([0.0, math.log(3)]), 2, tau=2.0), [0.3660254, 0.6339746])


def test_normalized_weights():
    # [1,0,0,1]: z = [+,-,-,+] -> clipped [z,0,0,z] -> [1/2, 0, 0, 1/2]
    # [2,2,2,2]: flat -> uniform 1/4 (same as softmax on a flat group)
    # [3,1,2,2]: z = [+, -, 0, 0] -> [1, 0, 0, 0]
    r = torch.tensor([1.0, 0, 0, 1, 2, 2, 2, 2, 3, 1, 2, 2])
    _close(rce_weights(r, 4, mode="normalized"), [0.5, 0, 0, 0.5, 0.25, 0.25, 0.25, 0.25, 1, 0, 0, 0])


def test_uniform_weights():
    _close(rce_weights(torch.tensor([5.0, 1.0, 0.0]), 3, mode="uniform"), [1 / 3, 1 / 3, 1 / 3])


def test_keep_mask_renormalises_within_the_group():
    r = torch.tensor([0.0, math.log(3), 1.0, 1.0])
    keep = torch.tensor([True, False, False, False])
    _close(rce_weights(r, 2, keep=keep), [1.0, 0.0, 0.0, 0.0])  # second group fully dropped -> zeros
    # normalized, group [3,1,2,2] with the only positive z-score (3) dropped -> uniform over the kept three
    keep = torch.tensor([False, True, True, True])
    _close(rce_weights(torch.tensor([3.0, 1, 2, 2]), 4, mode="normalized", keep=keep), [0, 1 / 3, 1 / 3, 1 / 3])
    _close(rce_weights(torch.tensor([3.0, 1, 2, 2]), 4, mode="uniform", keep=keep), [0, 1 / 3, 1 / 3, 1 / 3])


def test_bad_weight_options_raise():
    with pytest.raises(ValueError, match="unknown RCE weight mode 'rank'"):
        rce_weights(torch.zeros(2), 2, mode="rank")
    with pytest.raises(ValueError, match="tau must be > 0"):
        rce_weights(torch.zeros(2), 2, tau=0.0)
    with pytest.raises(ValueError, match="group_size=3"):
        rce_weights(torch.zeros(4), 3)


# Two groups of two candidates:
#   row 0: logp [-1, -3]  mask [1, 1]  sum -4, mean -2
#   row 1: logp [-2, 9]   mask [1, 0]  sum -2, mean -2   (9 is padding)
#   row 2: logp [-.5,-.5] mask [1, 1]  sum -1, mean -0.5
#   row 3: logp [-4, 9]   mask [1, 0]  sum -4, mean -4
LOGP = torch.tensor([[-1.0, -3.0], [-2.0, 9.0], [-0.5, -0.5], [-4.0, 9.0]])
MASK = torch.tensor([[1, 1], [1, 0], [1, 1], [1, 0]])
W = torch.tensor([0.25, 0.75, 0.5, 0.5])


def test_rce_loss_length_normalized():
    # -(0.25*-2 + 0.75*-2 + 0.5*-0.5 + 0.5*-4) / 2 groups = 4.25 / 2
    logp = LOGP.clone().requires_grad_()
    loss = rce_loss(logp, MASK, W)
    loss.backward()
    assert loss.item() == pytest.approx(2.125)
    # d/dlogp[0,0] = -w0 / (2 tokens * 2 groups); padding gets nothing
    assert logp.grad[0, 0].item() == pytest.approx(-0.0625)
    assert logp.grad[1, 1].item() == 0.0


def test_rce_loss_token_sum_and_explicit_group_count():
    # -(0.25*-4 + 0.75*-2 + 0.5*-1 + 0.5*-4) / 2 = 5 / 2
    assert rce_loss(LOGP, MASK, W, length_normalize=False).item() == pytest.approx(2.5)
    assert rce_loss(LOGP, MASK, W, num_groups=4).item() == pytest.approx(1.0625)


def test_rce_loss_all_zero_weights_is_zero():
    assert rce_loss(LOGP, MASK, torch.zeros(4)).item() == 0.0


def test_filter_candidates():
    rewards = torch.tensor([0.9, 0.2, 0.5, 0.1])
    correct = torch.tensor([1, 0, 0, 1])
    assert filter_candidates(rewards, correct).tolist() == [True, True, True, True]
    # drop incorrect with score < 0.3: only row 1 (row 3 is correct, row 2 scores 0.5)
    assert filter_candidates(rewards, correct, drop_incorrect_below=0.3).tolist() == [True, False, True, True]
    both = filter_candidates(rewards, correct, drop_incorrect_below=0.3, min_reward=0.15)
    assert both.tolist() == [True, False, True, False]
    # a separate quality score (seed 004: beam_score) decides instead of the reward
    quality = torch.tensor([0.0, 0.0, 0.1, 0.0])
    kept = filter_candidates(rewards, correct, drop_incorrect_below=0.3, quality=quality)
    assert kept.tolist() == [True, False, False, True]
