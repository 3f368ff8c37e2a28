"""KL estimators (values and gradients) and KL controllers, against hand-computed numbers.

Shared example: logp = [-1, -2, -0.5], ref = [-1.5, -1, -0.5], so u = logp - ref = [0.5, -1, 0].
  k3 = e^-u + u - 1:   e^-0.5 - 0.5 = 0.1065307,  e^1 - 2 = 0.7182818,  0
  dk3/dlogp = 1 - e^-u: 0.3934693, -1.7182818, 0
  dk2/dlogp = u:        0.5, -1, 0
"""

import pytest
import torch

from grpo.algorithms.kl import AdaptiveKLController, FixedKLController, kl_divergence

LOGP = [-1.0, -2.0, -0.5]
REF = [-1.5, -1.0, -0.5]


def _value_and_grad(estimator):
    logp = torch.tensor([LOGP], requires_grad=True)  # [1, 3]
    ref = torch.tensor([REF], requires_grad=True)
    kl = kl_divergence(logp, ref, estimator)
    kl.sum().backward()
    return kl.detach()[0], logp.grad[0], ref.grad[0]


def _close(actual, expected):
    torch.testing.assert_close(actual, torch.tensor(expected), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "estimator, value, grad",
    [
        ("k1", [0.5, -1.0, 0.0], [1.0, 1.0, 1.0]),
        ("abs", [0.5, 1.0, 0.0], [1.0, -1.0, 0.0]),
        ("k2", [0.125, 0.5, 0.0], [0.5, -1.0, 0.0]),
        ("k3", [0.1065307, 0.7182818, 0.0], [0.3934693, -1.7182818, 0.0]),
        # straight-through: value of k1/k3, gradient of k2
        ("k1+", [0.5, -1.0, 0.0], [0.5, -1.0, 0.0]),
        ("k3+", [0.1065307, 0.7182818, 0.0], [0.5, -1.0, 0.0]),
    ],
)
def test_estimator_values_and_gradients(estimator, value, grad):
    v, g, g_ref = _value_and_grad(estimator)
    _close(v, value)
    _close(g, grad)
    if estimator != "abs":  # abs has sign(0) = 0 on both sides, the others are functions of logp - ref
        _close(g_ref, [-x for x in grad])


@pytest.mark.parametrize("alias, name", [("kl", "k1"), ("mse", "k2"), ("low_var_kl", "k3"), ("low_var_kl+", "k3+")])
def test_verl_aliases(alias, name):
    for a, b in zip(_value_and_grad(alias), _value_and_grad(name)):
        torch.testing.assert_close(a, b)


def test_k3_is_clamped_like_verl():
    # ref - logp = 30 -> clamped to 20 -> e^20 - 21 ~ 4.9e8 -> clamped to 10
    # ref - logp = -30 -> clamped to -20 -> e^-20 + 19 ~ 19 -> clamped to 10
    logp = torch.tensor([[-31.0, -1.0]])
    ref = torch.tensor([[-1.0, -31.0]])
    _close(kl_divergence(logp, ref, "k3")[0], [10.0, 10.0])


def test_unknown_estimator_raises():
    with pytest.raises(ValueError, match="unknown KL estimator 'full'"):
        kl_divergence(torch.zeros(1, 1), torch.zeros(1, 1), "full")


def test_adaptive_controller_clips_the_proportional_error():
    ctl = AdaptiveKLController(init_kl_coef=0.1, target_kl=6.0, horizon=10000)
    ctl.update(current_kl=9.0, n_steps=256)  # 9/6 - 1 = 0.5 -> 0.2; x (1 + 0.2 * 256 / 10000) = x 1.00512
    assert ctl.value == pytest.approx(0.100512, abs=1e-12)
    ctl.update(current_kl=3.0, n_steps=256)  # 3/6 - 1 = -0.5 -> -0.2; x 0.99488
    assert ctl.value == pytest.approx(0.09999737856, abs=1e-12)


def test_adaptive_controller_inside_the_band():
    ctl = AdaptiveKLController(init_kl_coef=1.0, target_kl=6.0, horizon=1000)
    ctl.update(current_kl=6.6, n_steps=100)  # error 0.1 -> x (1 + 0.1 * 100 / 1000) = x 1.01
    assert ctl.value == pytest.approx(1.01, abs=1e-12)


def test_controller_state_round_trip():
    ctl = AdaptiveKLController(0.1, 6.0, 10000)
    ctl.update(9.0, 256)
    restored = AdaptiveKLController(0.1, 6.0, 10000)
    restored.load_state_dict(ctl.state_dict())
    assert restored.value == ctl.value
    fixed = FixedKLController(0.05)
    fixed.update(100.0, 256)
    assert fixed.value == 0.05
    other = FixedKLController(0.0)
    other.load_state_dict(fixed.state_dict())
    assert other.value == 0.05


def test_adaptive_controller_rejects_bad_settings():
    with pytest.raises(ValueError, match="target_kl > 0 and horizon > 0"):
        AdaptiveKLController(0.1, 0.0, 100)
