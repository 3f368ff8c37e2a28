"""Rewards of a rollout under the run's scorer, with the columns its components read."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from grpo.context import RunContext
from grpo.rewards.columns import reward_columns
from grpo.rewards.executor import ExecutorStats
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
    ctx.prompts.record(examples, rollout.texts, scores.total.tolist(), repeats)  # observed at the step's end
    return scores


def share_observed(ctx: RunContext) -> None:
    """Hand the step's scored rows to `ctx.prompts.observe` (e.g. AFlow's best workflows): every
    process's rows, in rank order, on every process, so every rank builds the same prompts. Every
    process calls it once per step (a collective under data parallelism when the prompts learn)."""
    if not ctx.prompts.learns:
        return
    parts = [ctx.prompts.take_pending()]
    if ctx.accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        parts = gather_object(parts)  # one list per process, in rank order
    for rows in parts:
        if rows:
            examples, completions, rewards = zip(*rows)
            ctx.prompts.observe(list(examples), list(completions), list(rewards), 1)


def executor_metrics(ctx: RunContext) -> dict[str, float]:
    """The executor's use this step over every process (reward/executor_*: calls, tokens, failures,
    retries and the callers' counts summed; the cache hit rate of all requests), and over the run so
    far (reward/executor_calls_total, _tokens_total, _cost_usd_total when priced: what a chart of
    spend reads). Empty when no component calls the executor; otherwise every process calls it once
    per step (a collective under data parallelism) and all get the same keys: the union of every
    process's counters."""
    stats = ctx.scorer.drain_stats()
    if stats is None:
        return {}
    if ctx.accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        stats = ExecutorStats.merged(gather_object([stats]))
    totals = ctx.executor_totals
    totals["calls"] = totals.get("calls", 0.0) + stats.calls
    totals["tokens"] = totals.get("tokens", 0.0) + stats.tokens
    if stats.cost_usd is not None:
        totals["cost_usd"] = totals.get("cost_usd", 0.0) + stats.cost_usd
    return {**stats.metrics(), **{f"reward/executor_{k}_total": float(v) for k, v in totals.items()}}
