"""GRPO groups drawn from the offline candidates file (`rollout.candidates=file`, seed 004's beams).

A group for a prompt takes its G completions from that prompt's top-k candidates by the file's
score, k from `schedule.grpo_top_k`: `early` for the first `switch_epoch` GRPO epochs, `late`
after (seed 004's plan: 3, then 5; null: every candidate). This k counts candidate sequences; it
is not sampling top-k. The rows are scored and trained on like sampled ones; the policy did not
sample them, so their old and reference log-probs are the step's usual recomputation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from grpo.config.derived import epochs_to_steps
from grpo.context import RunContext
from grpo.rollout.engine import Rollout, repeat_prompts
from grpo.schedules import step_schedule
from grpo.stages.rce import rollout_from_texts
from grpo.tasks.base import Example


def grpo_top_k(ctx: RunContext, step: int) -> int | None:
    """The k of GRPO step `step` (0-based within the stage); None: every candidate."""
    k = ctx.cfg.schedule.grpo_top_k
    if k.early is None:
        return None
    switch = epochs_to_steps(k.switch_epoch, ctx.derived.steps_per_epoch)
    return step_schedule(step, early=k.early, late=k.late if k.late is not None else k.early, switch_step=switch)


def draw(k: int, group_size: int, generator: torch.Generator | None = None) -> list[int]:
    """`group_size` picks among `k` candidates: a random order of all k, repeated as often as needed,
    so each candidate appears floor(G/k) or ceil(G/k) times. The run's random stream by default."""
    order = torch.randperm(k, generator=generator).tolist()
    return [order[i % k] for i in range(group_size)]


def file_groups(
    ctx: RunContext, examples: Sequence[Example], top_k: int | None, prompts: list[str] | None = None
) -> Rollout:
    """[B x G] rows: each example's G completions drawn from its top-k candidates in task.candidates_path
    (found by the example's own prompt), after the prompt the policy is shown: `prompts` [B x G], the
    rows' prompts as sampling builds them (default: `ctx.prompts.for_sampling(examples)`, repeated)."""
    from grpo.tasks.candidates import load_candidates

    found, G = load_candidates(ctx.cfg.task.candidates_path), ctx.cfg.rollout.group_size
    texts = []
    for ex in examples:
        group = found.top(ex.prompt, top_k)
        texts += [group[i].text for i in draw(len(group), G)]
    if prompts is None:
        prompts = repeat_prompts(ctx.prompts.for_sampling(examples), G)
    return rollout_from_texts(ctx, prompts, texts)
