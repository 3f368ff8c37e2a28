"""Combine several reward components (correctness, format, quality, ...) into one reward.

Same two modes as TRL's `multi_objective_aggregation` (GRPOTrainer._generate_and_score_completions).
"""

from __future__ import annotations

import torch
from torch import Tensor

from grpo.algorithms.advantages import compute_advantages
from grpo.algorithms.names import AGGREGATION_MODES  # noqa: F401  (re-exported)


def combine_rewards(
    components: dict[str, Tensor],
    weights: dict[str, float],
    *,
    mode: str = "sum_then_normalize",
    group_size: int | None = None,
    eps: float = 1e-6,
) -> Tensor:
    """Weighted sum of reward components.

    Args:
        components: name -> [N] reward from that component (all the same length, no NaN: an
            unscorable completion must be decided on by the caller, not silently scored 0).
        weights: name -> weight; must name exactly the components.
        mode: "sum_then_normalize": sum_k w_k r_k of the raw values; the advantage step normalises.
            "normalize_then_sum" (GDPO): each component is z-scored within its group first
            (flat groups -> 0), so a component with a large scale cannot drown the others. TRL then
            whitens the sum over the batch: to reproduce TRL exactly, use the
            "reinforce_pp" advantage estimator on this output.
        group_size: G, required for "normalize_then_sum".
        eps: added to the per-group std in "normalize_then_sum".

    Returns:
        [N] combined reward.
    """
    if mode not in AGGREGATION_MODES:
        raise ValueError(f"unknown reward aggregation {mode!r}; choose one of {AGGREGATION_MODES}")
    if not components:
        raise ValueError("combine_rewards needs at least one reward component")
    if set(components) != set(weights):
        raise ValueError(
            f"reward weights must name exactly the components: components {sorted(components)}, "
            f"weights {sorted(weights)}"
        )
    shapes = {name: tuple(r.shape) for name, r in components.items()}
    if len(set(shapes.values())) != 1 or any(len(s) != 1 for s in shapes.values()):
        raise ValueError(f"every reward component must be 1-D [N] of the same length, got shapes {shapes}")
    for name, r in components.items():
        if torch.isnan(r).any():
            raise ValueError(f"reward component {name!r} contains NaN")
    if mode == "normalize_then_sum" and group_size is None:
        raise ValueError("normalize_then_sum needs group_size to z-score each component within its group")

    total = 0.0
    for name, r in components.items():
        r = r if r.is_floating_point() else r.float()  # [N]
        if mode == "normalize_then_sum":
            r = compute_advantages(r, group_size, estimator="grpo", scale_rewards="group", eps=eps)  # [N]
        total = total + weights[name] * r
    return total
