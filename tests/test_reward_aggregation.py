"""combine_rewards against hand-computed values."""

import pytest
import torch

from grpo.algorithms.rewards_agg import combine_rewards

CORRECT = torch.tensor([1.0, 0.0, 1.0, 0.0])
QUALITY = torch.tensor([0.5, 0.2, 0.9, 0.1])


def _close(actual, expected):
    torch.testing.assert_close(actual, torch.tensor(expected), atol=1e-5, rtol=0)


def test_sum_then_normalize_is_a_weighted_sum_of_raw_values():
    # 1*correct + 0.2*quality
    got = combine_rewards({"correct": CORRECT, "quality": QUALITY}, {"correct": 1.0, "quality": 0.2})
    _close(got, [1.1, 0.04, 1.18, 0.02])


def test_normalize_then_sum_z_scores_each_component_per_group():
    # G=2: every non-flat pair z-scores to +-0.5 / std([a, b]) = +-0.7071068 whatever its scale, so
    # 1*z_correct + 0.2*z_quality = +-0.8485281
    got = combine_rewards(
        {"correct": CORRECT, "quality": QUALITY},
        {"correct": 1.0, "quality": 0.2},
        mode="normalize_then_sum",
        group_size=2,
    )
    _close(got, [0.8485281, -0.8485281, 0.8485281, -0.8485281])
    # a flat component in a group contributes exactly 0 there
    flat_quality = torch.tensor([0.5, 0.5, 0.9, 0.1])
    got = combine_rewards(
        {"correct": CORRECT, "quality": flat_quality},
        {"correct": 1.0, "quality": 0.2},
        mode="normalize_then_sum",
        group_size=2,
    )
    _close(got, [0.7071068, -0.7071068, 0.8485281, -0.8485281])


def test_integer_components_accepted():
    _close(combine_rewards({"c": torch.tensor([1, 0])}, {"c": 2.0}), [2.0, 0.0])


@pytest.mark.parametrize(
    "components, weights, kwargs, match",
    [
        ({"c": CORRECT}, {"c": 1.0, "q": 1.0}, {}, "must name exactly the components"),
        ({"c": torch.tensor([1.0, float("nan")])}, {"c": 1.0}, {}, "'c' contains NaN"),
        ({"c": CORRECT, "q": QUALITY[:3]}, {"c": 1.0, "q": 1.0}, {}, "same length"),
        ({"c": CORRECT}, {"c": 1.0}, {"mode": "normalize_then_sum"}, "needs group_size"),
        ({"c": CORRECT}, {"c": 1.0}, {"mode": "max"}, "unknown reward aggregation 'max'"),
        ({}, {}, {}, "at least one"),
    ],
)
def test_bad_inputs_raise(components, weights, kwargs, match):
    with pytest.raises(ValueError, match=match):
        combine_rewards(components, weights, **kwargs)
