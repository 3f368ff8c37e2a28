"""compute_advantages / group_stats against advantages worked out by hand.

Shared example: rewards [1, 0, 0, 1 | 0, 0, 0, 0], G = 4.
  group 0: mean 0.5, unbiased std sqrt(4 * 0.25 / 3) = 0.5773503, so +-0.5 / 0.5773503 = +-0.8660254
  group 1: flat, so exactly 0 for every group-baseline estimator
  batch:   mean 0.25, unbiased std sqrt((2 * 0.75^2 + 6 * 0.25^2) / 7) = sqrt(1.5 / 7) = 0.4629100
"""

import pytest
import torch

from grpo.algorithms.advantages import compute_advantages, group_stats

R = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0])


def _close(actual, expected, atol=1e-5):
    torch.testing.assert_close(actual, torch.tensor(expected), atol=atol, rtol=0)


def test_grpo_group_std():
    adv = compute_advantages(R, 4)
    _close(adv, [0.8660254, -0.8660254, -0.8660254, 0.8660254, 0, 0, 0, 0])
    assert (adv[4:] == 0).all()


def test_grpo_group_std_eps_is_added_to_std():
    adv = compute_advantages(R, 4, eps=0.4226497)  # std + eps = 1.0
    _close(adv[:4], [0.5, -0.5, -0.5, 0.5])


def test_grpo_batch_std():
    # (r - group mean) / batch std: 0.5 / 0.4629100 = 1.0801234
    adv = compute_advantages(R, 4, scale_rewards="batch")
    _close(adv, [1.0801234, -1.0801234, -1.0801234, 1.0801234, 0, 0, 0, 0])


def test_grpo_no_std_dr_grpo():
    adv = compute_advantages(R, 4, scale_rewards="none")
    _close(adv, [0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0])


def test_rloo_leave_one_out():
    # group [3, 1, 2, 2]: 3 - 5/3 = 4/3, 1 - 7/3 = -4/3, 2 - 6/3 = 0; group [5, 5, 5, 5]: 0
    r = torch.tensor([3.0, 1.0, 2.0, 2.0, 5.0, 5.0, 5.0, 5.0])
    adv = compute_advantages(r, 4, estimator="rloo")
    _close(adv, [4 / 3, -4 / 3, 0, 0, 0, 0, 0, 0])
    # binary rewards: 1 - 1/3 = 2/3, 0 - 2/3 = -2/3
    _close(compute_advantages(R, 4, estimator="rloo")[:4], [2 / 3, -2 / 3, -2 / 3, 2 / 3])


def test_reinforce_pp_whitens_over_batch_without_group_baseline():
    # (1 - 0.25) / 0.4629100 = 1.6201852, (0 - 0.25) / 0.4629100 = -0.5400617; the flat group is NOT 0
    adv = compute_advantages(R, 4, estimator="reinforce_pp")
    _close(adv, [1.6201852, -0.5400617, -0.5400617, 1.6201852] + [-0.5400617] * 4)


def test_reinforce_pp_baseline():
    # centred [0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0]; unbiased std sqrt(1 / 7) = 0.3779645; 0.5 / 0.3779645 = 1.3228757
    adv = compute_advantages(R, 4, estimator="reinforce_pp_baseline")
    _close(adv, [1.3228757, -1.3228757, -1.3228757, 1.3228757, 0, 0, 0, 0])
    assert (adv[4:] == 0).all()


@pytest.mark.parametrize("estimator", ["grpo", "rloo", "reinforce_pp", "reinforce_pp_baseline"])
@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_flat_rewards_give_exact_zero_never_nan(estimator, scale):
    # 0.1 is not exactly representable: a mean of it need not equal it, so zeros must be enforced
    r = torch.full((6,), 0.1)
    adv = compute_advantages(r, 3, estimator=estimator, scale_rewards=scale)
    assert (adv == 0).all()


def test_group_of_one_gives_zero_not_nan():
    adv = compute_advantages(torch.tensor([1.0, 0.0, 2.0]), 1)
    assert (adv == 0).all()


def test_integer_rewards_accepted():
    _close(compute_advantages(torch.tensor([1, 0, 0, 1]), 4, scale_rewards="none"), [0.5, -0.5, -0.5, 0.5])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"estimator": "ppo"}, "unknown advantage estimator 'ppo'"),
        ({"scale_rewards": "global"}, "unknown scale_rewards 'global'"),
    ],
)
def test_unknown_options_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        compute_advantages(R, 4, **kwargs)


def test_bad_group_split_raises():
    with pytest.raises(ValueError, match="N=8 rewards cannot be split into groups of group_size=3"):
        compute_advantages(R, 3)
    with pytest.raises(ValueError, match="rloo needs group_size >= 2"):
        compute_advantages(R, 1, estimator="rloo")


def test_group_stats():
    stats = group_stats(R, 4)
    _close(stats["mean"], [0.5, 0.0])
    _close(stats["std"], [0.5773503, 0.0])
    assert stats["frac_zero_std_groups"].item() == 0.5
