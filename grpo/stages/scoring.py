"""Rewards of a rollout under the run's scorer, with the columns its components read."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from grpo.context import RunContext
from grpo.rewards.columns import reward_columns
from grpo.rewards.scorer import Scores
from grpo.rollout.engine import Rollout
from grpo.rollout.logprobs import sequence_logprobs
from grpo.tasks.base import Example


def rollout_columns(
    ctx: RunContext,
    examples: Sequence[Example],
    prompts: list[str],
    rollout: Rollout,
    repeats: int,
    logp: torch.Tensor | None = None,
) -> dict[str, list]:
    """The reward columns of a rollout whose rows are each example repeated `repeats` times.

    The mean token log-prob is computed (or taken from `logp`) only when the scorer reads it.
    """
    logp_mean = None
    if ctx.scorer.needs_logp:
        if logp is None:
            with torch.no_grad():
                logp = sequence_logprobs(ctx.sampler_model, rollout, 1.0)
        m = rollout.completion_mask.to(logp.dtype)
        logp_mean = ((logp * m).sum(1) / m.sum(1).clamp(min=1)).tolist()
    return reward_columns(
        examples,
        prompts,
        rollout,
        repeats,
        default_pattern=ctx.task.answer_pattern,
        max_new_tokens=ctx.max_new_tokens,
        candidates_path=ctx.cfg.task.candidates_path,
        logp_mean=logp_mean,
    )


def score(
    ctx: RunContext,
    examples: Sequence[Example],
    prompts: list[str],
    rollout: Rollout,
    repeats: int,
    logp: torch.Tensor | None = None,
) -> Scores:
    """Rewards of a rollout whose rows are each example repeated `repeats` times."""
    columns = rollout_columns(ctx, examples, prompts, rollout, repeats, logp)
    scores = ctx.scorer(prompts, rollout.texts, group_size=repeats, **columns)
    ctx.prompts.observe(examples, rollout.texts, scores.total.tolist(), repeats)  # e.g. AFlow's best workflows
    return scores
