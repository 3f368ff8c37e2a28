"""Sampling completions (the rollout-engine seam) and scoring them with the policy."""
