"""Per-token KL(pi_theta || pi_ref) estimators and KL-coefficient controllers.

Tokens are sampled from pi_theta, so with u = log pi_theta - log pi_ref (Schulman, "Approximating
KL divergence", 2020; verl `core_algos.kl_penalty_forward`):
    k1 = u               unbiased value, gradient is not the KL gradient, can be negative
    k2 = u^2 / 2         biased value, but its gradient is the KL gradient
    k3 = e^-u + u - 1    unbiased, >= 0, low variance (TRL's only estimator, verl "low_var_kl")
The "+" forms (verl) report the k1/k3 value but back-propagate k2's gradient (straight-through).
"""

from __future__ import annotations

from typing import Protocol

from torch import Tensor

from grpo.algorithms.names import KL_ESTIMATORS  # noqa: F401  (re-exported)
from grpo.algorithms.names import KL_VERL_ALIASES as _VERL_ALIASES


def kl_divergence(logp: Tensor, ref_logp: Tensor, estimator: str = "k3") -> Tensor:
    """Per-token KL estimate.

    Args:
        logp: [N, T] log-probs of the sampled tokens under the policy.
        ref_logp: [N, T] log-probs of the same tokens under the reference model.
        estimator: one of KL_ESTIMATORS, or a verl alias ("kl", "mse", "low_var_kl", "low_var_kl+").

    Returns:
        [N, T] estimate; padding positions are not masked here (the caller masks).
    """
    name = _VERL_ALIASES.get(estimator, estimator)
    if name not in KL_ESTIMATORS:
        raise ValueError(
            f"unknown KL estimator {estimator!r}; choose one of {KL_ESTIMATORS} or a verl alias {tuple(_VERL_ALIASES)}"
        )
    u = logp - ref_logp  # [N, T]
    if name == "abs":
        return u.abs()
    k2 = 0.5 * u.square()  # [N, T]
    if name == "k2":
        return k2
    if name.startswith("k1"):
        value = u
    else:
        # As verl's low_var_kl: clamp the log-ratio before exp (no overflow), then the estimate.
        log_ratio = (-u).clamp(-20.0, 20.0)  # log(pi_ref / pi_theta)
        value = (log_ratio.exp() - log_ratio - 1.0).clamp(-10.0, 10.0)  # [N, T]
    if name.endswith("+"):
        return k2 + (value - k2).detach()  # value of k1/k3, gradient of k2
    return value


class KLController(Protocol):
    """The KL coefficient of the next step, and how it moves after one."""

    value: float

    def update(self, current_kl: float, n_steps: int) -> None: ...

    def state_dict(self) -> dict[str, float]: ...

    def load_state_dict(self, state: dict[str, float]) -> None: ...


class FixedKLController:
    """Constant KL coefficient (the default everywhere)."""

    def __init__(self, kl_coef: float):
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        """No-op; same interface as AdaptiveKLController."""

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


class AdaptiveKLController:
    """Proportional controller that steers the measured KL towards `target_kl`.

    Ziegler et al. 2019 (arXiv 1909.08593), as in verl/EasyR1 `AdaptiveKLController`:
        error = clip(current_kl / target_kl - 1, -0.2, 0.2)
        value *= 1 + error * n_steps / horizon
    """

    def __init__(self, init_kl_coef: float, target_kl: float, horizon: int):
        if target_kl <= 0 or horizon <= 0:
            raise ValueError(f"adaptive KL needs target_kl > 0 and horizon > 0, got {target_kl=} {horizon=}")
        self.value = float(init_kl_coef)
        self.target = float(target_kl)
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        """Scale the coefficient after `n_steps` samples that measured `current_kl`."""
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


def kl_controller(kind: str, kl_coef: float, target_kl: float, horizon: int) -> KLController:
    """`fixed` keeps `kl_coef`; `adaptive` steers the measured KL towards `target_kl`."""
    if kind == "adaptive":
        return AdaptiveKLController(kl_coef, target_kl, horizon)
    if kind == "fixed":
        return FixedKLController(kl_coef)
    raise ValueError(f"unknown KL controller {kind!r}; choose fixed or adaptive")
