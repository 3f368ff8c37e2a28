"""Masks that decide which completions, groups and tokens train: truncation (overlong
filtering), dynamic sampling (DAPO / EasyR1 online filtering) and the top-entropy token mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from grpo.algorithms.advantages import _grouped


def truncation_mask(completion_ids: Tensor, eos_token_id: int | Sequence[int], mask: Tensor) -> Tensor:
    """Which completions were cut off before emitting an end-of-sequence token.

    Args:
        completion_ids: [N, T] generated token ids.
        eos_token_id: the EOS id, or several (chat models often stop on more than one).
        mask: [N, T] 1 on real completion tokens (only these are searched for EOS).

    Returns:
        [N] bool, True where no real token is an EOS (truncated). An empty row counts as
        truncated: it never ended properly.
    """
    eos = torch.as_tensor(eos_token_id, device=completion_ids.device).reshape(-1)  # [E]
    ended = torch.isin(completion_ids, eos) & mask.bool()  # [N, T]
    return ~ended.any(-1)  # [N]


def dynamic_sampling_keep(
    rewards: Tensor,
    group_size: int,
    *,
    filter_low: float | None = None,
    filter_high: float | None = None,
) -> Tensor:
    """Which groups carry a learning signal.

    Args:
        rewards: [N] rewards (or the metric to filter on, e.g. accuracy), groups contiguous.
        group_size: G.
        filter_low, filter_high: optional bounds on the group mean.

    Returns:
        [N/G] bool keep-mask per group. A group is dropped when all its rewards are equal (DAPO
        dynamic sampling: zero advantage, no gradient) or, when the bounds are given, when its
        mean is <= filter_low or >= filter_high. The strict inequalities follow EasyR1
        `RayPPOTrainer._select_filtered_sample_idxs` (`filter_low < mean < filter_high` is kept),
        so e.g. filter_low=0.01, filter_high=0.99 on accuracy drops all-wrong and all-right groups.
    """
    grouped = _grouped(rewards, group_size)  # [B, G]
    keep = grouped.amax(1) != grouped.amin(1)  # [B]
    mean = grouped.mean(1)  # [B]
    if filter_low is not None:
        keep &= mean > filter_low
    if filter_high is not None:
        keep &= mean < filter_high
    return keep


def top_entropy_token_mask(entropy: Tensor, mask: Tensor, quantile: float) -> Tensor:
    """Keep only the highest-entropy "forking" tokens (Wang et al. 2025, "80/20" paper).

    `quantile` follows TRL's `top_entropy_quantile`: it is the FRACTION of tokens kept, the top
    `quantile` by entropy. As TRL `GRPOTrainer.get_high_entropy_mask`, a token is kept when its
    entropy is >= torch.quantile(masked entropies, 1 - quantile) (linear interpolation), so
    1.0 keeps every real token, 0.2 keeps the top 20% (ties at the threshold are all kept), and
    0.0 keeps only the maximum-entropy token(s).

    Args:
        entropy: [N, T] token entropies.
        mask: [N, T] 1 on real completion tokens; padding is never kept.
        quantile: in [0, 1].

    Returns:
        [N, T] bool; all False when the mask is empty.
    """
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"top-entropy quantile must be in [0, 1] (fraction of tokens kept), got {quantile}")
    real = mask.bool()  # [N, T]
    entropy = entropy.detach().float()  # compare in float32, where the threshold is computed
    values = entropy[real]  # [M]
    if values.numel() == 0:
        return torch.zeros_like(real)
    threshold = torch.quantile(values, 1.0 - quantile)
    return (entropy >= threshold) & real  # [N, T]
