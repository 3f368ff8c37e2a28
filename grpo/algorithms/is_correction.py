"""Sampler/trainer mismatch: how far the sampling engine's log-probs are from the trainer's, and
the truncated importance-sampling correction TRL and verl apply when another engine (vLLM)
samples.

The engine that samples (vLLM kernels, bf16, another batch shape) and the trainer that scores
compute slightly different probabilities for the same weights: the rollout is off-policy by a
little. Per token the importance weight rho = exp(logp_trainer - logp_sampler) makes the
gradient on-policy again; it is capped so that a rare token the sampler under-rated cannot blow
up the loss:

- `truncate` (TIS, TRL's `token_truncate`, verl's `tis_imp_ratio_cap`): w = min(rho, cap)
- `mask` (TRL's `token_mask`): w = rho where rho <= cap, 0 where it is larger (the token is dropped)
- `none`: w = 1

The weights multiply the surrogate term of each token (`policy_loss(token_weights=...)`); they
carry no gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor

from grpo.algorithms.names import IS_CORRECTIONS


def importance_weights(trainer_logp: Tensor, sampler_logp: Tensor, mask: Tensor, mode: str, cap: float) -> Tensor:
    """[N, T] per-token weights (0 where `mask` is 0), detached.

    Args:
        trainer_logp: [N, T] log-probs of the sampled tokens under the trainer's policy (the weights
            that sampled, as the trainer computes them).
        sampler_logp: [N, T] the same tokens' log-probs as the sampling engine reported them.
        mask: [N, T] 1 on completion tokens.
        mode: none | truncate | mask.
        cap: the largest weight kept (truncate) or allowed (mask); > 0.
    """
    if mode not in IS_CORRECTIONS:
        raise ValueError(f"unknown is_correction {mode!r}; choose one of {IS_CORRECTIONS}")
    if cap <= 0:
        raise ValueError(f"the importance-weight cap must be > 0, got {cap}")
    mask = mask.to(trainer_logp.dtype)
    if mode == "none":
        return mask
    # the log-ratio is clamped before exp: a masked position's log-probs may be anything (padding)
    log_ratio = (trainer_logp.detach() - sampler_logp.detach()).clamp(-20.0, 20.0)
    rho = torch.exp(log_ratio)
    if mode == "truncate":
        weights = rho.clamp(max=cap)
    else:
        weights = torch.where(rho <= cap, rho, torch.zeros_like(rho))
    return weights * mask


def logprob_mismatch(trainer_logp: Tensor, sampler_logp: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(sum, count, max) of |logp_trainer - logp_sampler| over masked tokens, as 0-dim tensors.

    Sums and counts (not a mean) so that micro-batches and processes combine exactly:
    mean = sum of sums / sum of counts, max = max of maxes. An empty mask gives (0, 0, 0).
    """
    mask = mask.to(torch.bool)
    diff = (trainer_logp.detach() - sampler_logp.detach()).abs()
    chosen = diff[mask]
    if chosen.numel() == 0:
        zero = diff.new_zeros(())
        return zero, zero.clone(), zero.clone()
    return chosen.sum(), diff.new_tensor(float(chosen.numel())), chosen.max()
