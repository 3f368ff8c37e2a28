"""The algorithm math as pure functions: tensors in, tensors out, no configs, no models.

advantages  rewards -> advantages (grpo, rloo, reinforce++)
kl          per-token KL estimators, fixed/adaptive KL coefficient
losses      clipped surrogate + KL + entropy, loss aggregation, log-probs/entropy from logits
rce         reward-weighted cross-entropy warm-up
rewards_agg combining several reward components
sampling    truncation, dynamic-sampling and top-entropy masks
names       the names each choice accepts (torch-free, for config checks)

Import from the submodules; this package imports nothing, so `grpo.algorithms.names` stays light.
"""
