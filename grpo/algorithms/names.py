"""The names each algorithm choice accepts: plain tuples, no torch, so config checks
(`grpo.diff`, the pre-run check) validate choices without importing the math."""

ADVANTAGE_ESTIMATORS = ("grpo", "rloo", "reinforce_pp", "reinforce_pp_baseline")
SCALE_REWARDS = ("group", "batch", "none")
KL_ESTIMATORS = ("k1", "k2", "k3", "abs", "k1+", "k3+")
KL_VERL_ALIASES = {"kl": "k1", "mse": "k2", "low_var_kl": "k3", "low_var_kl+": "k3+"}
LOSS_AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")
RATIO_LEVELS = ("token", "sequence")
AGGREGATION_MODES = ("sum_then_normalize", "normalize_then_sum")
KL_CONTROLLERS = ("fixed", "adaptive")
OPTIMIZERS = ("adamw", "adamw_fused", "sgd")
PARALLEL_STRATEGIES = ("ddp", "fsdp")  # trainer.parallel (grpo/parallel/)
# Rollouts (rollout.*): who samples, how the policy reaches a vLLM engine, the mismatch correction.
ROLLOUT_ENGINES = ("merged", "hf", "vllm", "vllm_server")
VLLM_SYNC_MODES = ("adapter", "merged")
IS_CORRECTIONS = ("none", "truncate", "mask")
# The operators an AFlow workflow may call (grpo/rewards/aflow/operators.py implements each).
AFLOW_OPERATORS = ("Custom", "AnswerGenerate", "ScEnsemble", "Programmer", "Test", "Format", "Review", "Revise")
