"""The columns every reward component may read (grpo/rewards/components.py), one entry per row."""

from __future__ import annotations

from collections.abc import Sequence

from grpo.rollout.engine import Rollout
from grpo.tasks.base import Example
from grpo.tasks.candidates import load_candidates


def reward_columns(
    examples: Sequence[Example],
    prompts: list[str],
    rollout: Rollout,
    repeats: int,
    *,
    default_pattern: str,
    max_new_tokens: int,
    candidates_path: str | None = None,
    logp_mean: list[float] | None = None,
) -> dict[str, list]:
    """Columns of a rollout whose rows are each example repeated `repeats` times.

    `logp_mean` (mean token log-prob under the policy) is given by callers whose scorer reads it
    (Lever's quality); `candidates_path` adds the offline file's score and label where a
    completion is one of its candidates.
    """
    rows = [ex for ex in examples for _ in range(repeats)]
    columns = dict(
        problem=[ex.prompt for ex in rows],  # the task's own prompt (the policy's may carry more: tasks/prompts.py)
        answer=[ex.answer for ex in rows],
        domain=[ex.domain for ex in rows],
        tests=[ex.tests for ex in rows],
        # JSONL records carry their own pattern (per domain, or the record's meta.answer_pattern)
        answer_pattern=[ex.meta.get("answer_pattern", default_pattern) for ex in rows],
        truncated=rollout.truncated.tolist(),
        completion_length=rollout.lengths.tolist(),
        max_new_tokens=[max_new_tokens] * len(rows),
    )
    if candidates_path:
        columns.update(load_candidates(candidates_path).columns(columns["problem"], rollout.texts))
    if logp_mean is not None:
        columns["completion_logp_mean"] = list(logp_mean)
    return columns
