"""The algorithm math as pure functions: tensors in, tensors out, no configs, no models.

advantages  rewards -> advantages (grpo, rloo, reinforce++)
kl          per-token KL estimators, fixed/adaptive KL coefficient
losses      clipped surrogate + KL + entropy, loss aggregation, log-probs/entropy from logits
rce         reward-weighted cross-entropy warm-up
rewards_agg combining several reward components
sampling    truncation, dynamic-sampling and top-entropy masks
"""

from grpo.algorithms.advantages import ADVANTAGE_ESTIMATORS, compute_advantages, group_stats
from grpo.algorithms.kl import KL_ESTIMATORS, AdaptiveKLController, FixedKLController, kl_divergence
from grpo.algorithms.losses import (
    LOSS_AGG_MODES,
    aggregate_loss,
    entropy_from_logits,
    policy_loss,
    token_log_probs,
)
from grpo.algorithms.rce import filter_candidates, rce_loss, rce_weights
from grpo.algorithms.rewards_agg import combine_rewards
from grpo.algorithms.sampling import dynamic_sampling_keep, top_entropy_token_mask, truncation_mask

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "KL_ESTIMATORS",
    "LOSS_AGG_MODES",
    "AdaptiveKLController",
    "FixedKLController",
    "aggregate_loss",
    "combine_rewards",
    "compute_advantages",
    "dynamic_sampling_keep",
    "entropy_from_logits",
    "filter_candidates",
    "group_stats",
    "kl_divergence",
    "policy_loss",
    "rce_loss",
    "rce_weights",
    "token_log_probs",
    "top_entropy_token_mask",
    "truncation_mask",
]
