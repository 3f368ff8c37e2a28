"""Outcome advantages for group-sampled completions.

Layout: N = B*G rewards, groups contiguous (rows [0..G-1] belong to prompt 0). One scalar
advantage per completion; the loss broadcasts it over the completion's tokens.

Formulas follow verl `core_algos.py` / TRL `GRPOTrainer._generate_and_score_completions`
(see shared/research/anchors_algorithms.md section 5). All std are Bessel-corrected (n-1), as in
all four anchors. A group whose rewards are all equal carries no learning signal: every
group-baseline estimator returns exactly 0 for it (not float noise divided by eps, never NaN).
"""

from __future__ import annotations

import torch
from torch import Tensor

from grpo.algorithms.names import ADVANTAGE_ESTIMATORS, SCALE_REWARDS  # noqa: F401  (re-exported)


def _grouped(rewards: Tensor, group_size: int) -> Tensor:
    """View rewards [N] as [B, G], with a clear error for a bad split."""
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [N], got shape {tuple(rewards.shape)}")
    if group_size < 1 or rewards.numel() % group_size != 0:
        raise ValueError(
            f"N={rewards.numel()} rewards cannot be split into groups of group_size={group_size}: "
            "N must be a positive multiple of group_size (groups are contiguous rows)"
        )
    rewards = rewards if rewards.is_floating_point() else rewards.float()
    return rewards.view(-1, group_size)  # [B, G]


def _std(x: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    """Unbiased std that is 0 (not NaN) where fewer than two values exist."""
    n = x.numel() if dim is None else x.shape[dim]
    if n < 2:
        return torch.zeros_like(x.mean() if dim is None else x.mean(dim, keepdim=keepdim))
    return x.std() if dim is None else x.std(dim, keepdim=keepdim)


def group_stats(rewards: Tensor, group_size: int) -> dict[str, Tensor]:
    """Per-group reward statistics, for logging and the "why is the loss ~0" diagnostic.

    Args:
        rewards: [N] scalar reward per completion.
        group_size: G, completions per prompt.

    Returns:
        "mean" [B], "std" [B] (unbiased; 0 for G=1), and "frac_zero_std_groups" (0-dim float):
        the fraction of groups whose rewards are all exactly equal (zero advantage everywhere).
    """
    grouped = _grouped(rewards, group_size)  # [B, G]
    flat = (grouped.amax(1) == grouped.amin(1)).float()  # [B]
    return {"mean": grouped.mean(1), "std": _std(grouped, 1), "frac_zero_std_groups": flat.mean()}


def compute_advantages(
    rewards: Tensor,
    group_size: int,
    *,
    estimator: str = "grpo",
    scale_rewards: str = "group",
    eps: float = 1e-6,
) -> Tensor:
    """Turn per-completion rewards into advantages.

    Args:
        rewards: [N] scalar reward per completion, N = B*G, groups contiguous.
        group_size: G.
        estimator: one of ADVANTAGE_ESTIMATORS.
            "grpo": (r - mean_g) / (std + eps), std chosen by `scale_rewards`.
            "rloo": r_i - mean of the other G-1 rewards of the group (no std; needs G >= 2).
            "reinforce_pp": (r - mean_batch) / (std_batch + eps), no group baseline. Note this one
                does NOT zero flat groups: without a group baseline an all-correct group in a mixed
                batch is above the batch mean. Only a flat batch gives 0.
            "reinforce_pp_baseline": r - mean_g, then divided by the batch std of those centred
                values + eps. (verl also re-subtracts the batch mean; the mean of group-centred
                values is exactly 0 in real arithmetic, so we skip it and keep flat groups at 0.)
        scale_rewards: only for "grpo": "group" (per-group std; TRL/verl default), "batch" (std of
            all N rewards, TRL scale_rewards="batch"), "none" (no division: Dr. GRPO).
        eps: added to the std (verl/EasyR1 1e-6; TRL uses 1e-4).

    Returns:
        [N] float advantages.
    """
    if estimator not in ADVANTAGE_ESTIMATORS:
        raise ValueError(f"unknown advantage estimator {estimator!r}; choose one of {ADVANTAGE_ESTIMATORS}")
    if scale_rewards not in SCALE_REWARDS:
        raise ValueError(f"unknown scale_rewards {scale_rewards!r}; choose one of {SCALE_REWARDS}")
    grouped = _grouped(rewards, group_size)  # [B, G]
    flat = grouped.amax(1, keepdim=True) == grouped.amin(1, keepdim=True)  # [B, 1]
    centred = grouped - grouped.mean(1, keepdim=True)  # [B, G]

    if estimator == "reinforce_pp":
        adv = (grouped - grouped.mean()) / (_std(grouped) + eps)  # [B, G]
        return adv.masked_fill(grouped.amax() == grouped.amin(), 0.0).view(-1)  # [N]

    if estimator == "grpo":
        if scale_rewards == "group":
            adv = centred / (_std(grouped, 1, keepdim=True) + eps)  # [B, G]
        elif scale_rewards == "batch":
            adv = centred / (_std(grouped) + eps)  # [B, G]
        else:
            adv = centred
    elif estimator == "rloo":
        if group_size < 2:
            raise ValueError("rloo needs group_size >= 2 (the baseline is the mean of the other G-1 rewards)")
        # r_i - (sum - r_i)/(G-1) == centred * G/(G-1)
        adv = centred * (group_size / (group_size - 1))  # [B, G]
    else:  # reinforce_pp_baseline
        adv = centred / (_std(centred) + eps)  # [B, G]
    return torch.where(flat, torch.zeros_like(adv), adv).view(-1)  # [N]
