"""Reward functions that misbehave on purpose, for the guard tests (TRL's reward contract)."""

import math


def raises_on_odd_length(prompts, completions, **_):
    """Raises for completions of odd length: a buggy user reward."""
    out = []
    for c in completions:
        if len(c) % 2:
            raise RuntimeError("odd completion")
        out.append(1.0)
    return out


def nan_reward(prompts, completions, **_):
    return [math.nan] * len(completions)
