"""Reward-weighted cross-entropy (RCE): the warm-up stage before GRPO.

Each prompt has G scored candidates (sampled or offline, groups contiguous). RCE imitates them
with per-candidate weights derived from the rewards, normalised so that each group's weights sum
to 1: every prompt then pulls with the same total weight however many candidates it has.
No anchor has this stage (anchors_algorithms.md section 7, gap 4).
"""

from __future__ import annotations

import torch
from torch import Tensor

from grpo.algorithms.advantages import _grouped, compute_advantages

RCE_WEIGHT_MODES = ("softmax", "normalized", "uniform")


def rce_weights(
    rewards: Tensor,
    group_size: int,
    *,
    tau: float = 1.0,
    mode: str = "softmax",
    eps: float = 1e-6,
    keep: Tensor | None = None,
) -> Tensor:
    """Per-candidate imitation weights; each group's weights sum to 1 (or are all 0).

    Args:
        rewards: [N] candidate rewards, N = B*G, groups contiguous.
        group_size: G.
        tau: softmax temperature (> 0); small tau approaches "imitate the best candidate".
        mode: "softmax": softmax(r / tau) within the group.
            "normalized": group z-scores (r - mean)/(std + eps), clipped at 0, renormalised. A group
                with no positive z-score (all rewards equal) gets uniform weights, so "normalized"
                agrees with "softmax" on flat groups: an all-correct group is still imitated. Drop
                groups you do not want to imitate with `keep` (see `filter_candidates`).
            "uniform": 1/G (plain SFT on the candidates).
        eps: see compute_advantages.
        keep: [N] bool, False for dropped candidates: their weight is 0 and the group's other
            weights are renormalised (the z-scores still use every candidate). A group with no kept
            candidate gets all-zero weights.

    Returns:
        [N] weights.
    """
    if mode not in RCE_WEIGHT_MODES:
        raise ValueError(f"unknown RCE weight mode {mode!r}; choose one of {RCE_WEIGHT_MODES}")
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    grouped = _grouped(rewards, group_size)  # [B, G]
    kept = torch.ones_like(grouped, dtype=torch.bool) if keep is None else keep.view_as(grouped).bool()  # [B, G]
    if mode == "softmax":
        # all-dropped group: softmax of all -inf is NaN -> 0
        return (grouped / tau).masked_fill(~kept, float("-inf")).softmax(-1).nan_to_num(0.0).view(-1)  # [N]
    if mode == "normalized":
        z = compute_advantages(rewards, group_size, estimator="grpo", scale_rewards="group", eps=eps)  # [N]
        w = z.view_as(grouped).clamp(min=0) * kept  # [B, G]
    else:
        w = torch.zeros_like(grouped)
    uniform = kept / kept.sum(-1, keepdim=True).clamp(min=1)  # [B, G]
    total = w.sum(-1, keepdim=True)  # [B, 1]
    return torch.where(total > 0, w / total.clamp(min=torch.finfo(w.dtype).tiny), uniform).view(-1)  # [N]


def rce_loss(
    token_logp: Tensor,
    mask: Tensor,
    weights: Tensor,
    *,
    length_normalize: bool = True,
    num_groups: float | None = None,
) -> Tensor:
    """Weighted negative log-likelihood of the candidates.

    Args:
        token_logp: [N, T] log-probs of the candidate tokens under the model.
        mask: [N, T] 1 on candidate tokens.
        weights: [N] from `rce_weights` (no grad).
        length_normalize: divide each candidate's log-likelihood by its token count (so long
            candidates do not dominate); False sums tokens.
        num_groups: denominator. Defaults to sum(weights), which is the number of groups with a kept
            candidate when each group's weights sum to 1. Pass the full batch's count when
            accumulating gradients over micro-batches of one batch.

    Returns:
        0-dim loss = -sum_i w_i * ll_i / num_groups; 0 if every weight is 0.
    """
    m = mask.to(token_logp.dtype)  # [N, T]
    ll = (token_logp * m).sum(-1)  # [N]
    if length_normalize:
        ll = ll / m.sum(-1).clamp(min=1)
    denom = weights.sum() if num_groups is None else torch.as_tensor(num_groups, dtype=ll.dtype)
    return -(weights * ll).sum() / denom.clamp(min=torch.finfo(ll.dtype).tiny)


def filter_candidates(
    rewards: Tensor,
    correct: Tensor,
    *,
    min_reward: float | None = None,
    drop_incorrect_below: float | None = None,
    quality: Tensor | None = None,
) -> Tensor:
    """Which candidates RCE should imitate (seed 004: drop correctness=0 candidates with a low
    quality score, e.g. beam_score).

    Args:
        rewards: [N] combined reward.
        correct: [N] correctness (0/1 or bool).
        min_reward: drop candidates with reward < min_reward.
        drop_incorrect_below: drop incorrect candidates whose quality < this.
        quality: [N] score compared with drop_incorrect_below; defaults to `rewards`.

    Returns:
        [N] bool keep-mask (pass it to `rce_weights(keep=...)`).
    """
    keep = torch.ones_like(rewards, dtype=torch.bool)  # [N]
    if min_reward is not None:
        keep &= rewards >= min_reward
    if drop_incorrect_below is not None:
        score = rewards if quality is None else quality
        keep &= ~((correct == 0) & (score < drop_incorrect_below))
    return keep
