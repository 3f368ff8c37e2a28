"""Validation on held-out prompts: accuracy (verifiable correctness) and reward, per domain.

One loop serves training-time validation (`validate`) and `python -m grpo.eval` (`collect`):
n samples per prompt, scored by the run's reward; with n > 1 also pass@k, mean@n, best@n and
majority@n (grpo/metrics.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from grpo.context import RunContext
from grpo.metrics import metric_keys, summarize
from grpo.rewards.aflow.components import workflow_answers
from grpo.rewards.answers import predicted_answer
from grpo.rewards.code_exec import extract_program
from grpo.rewards.components import solved
from grpo.rollout.engine import SamplingParams, repeat_prompts
from grpo.stages.scoring import rollout_columns
from grpo.tasks.base import Example


def eval_params(ctx: RunContext) -> SamplingParams:
    e, g = ctx.cfg.eval.generation, ctx.cfg.generation
    return SamplingParams(
        max_new_tokens=ctx.max_new_tokens, greedy=e.greedy, temperature=e.temperature, top_p=e.top_p, top_k=g.top_k
    )


@dataclass
class Samples:
    """One row per generated sample; prompts' samples are contiguous (n per prompt)."""

    domains: list[str]
    correct: list[float]
    reward: list[float]
    answers: list[str | None]  # what the sample answered (majority vote); None: no answer
    completions: list[str]


def collect(ctx, examples: Sequence[Example], progress=None) -> Samples:
    """Generate eval.generation.n samples per prompt and score each: correct (`solved`), reward, answer."""
    n, params, bs = ctx.cfg.eval.generation.n, eval_params(ctx), ctx.cfg.eval.batch_size
    out = Samples([], [], [], [], [])
    for start in range(0, len(examples), bs):
        part = examples[start : start + bs]
        prompts = repeat_prompts(ctx.prompts.for_sampling(part), n)
        rollout = ctx.engine.generate(ctx.sampler_model, prompts, params)
        columns = rollout_columns(ctx, part, prompts, rollout, n)
        scores = ctx.scorer(prompts, rollout.texts, **columns)
        texts = rollout.texts
        if ctx.task.name == "aflow":  # a workflow is judged by the answer it returns when run ("" when it fails)
            texts = workflow_answers(rollout.texts, **columns, **ctx.scorer.options)
        out.correct += solved(prompts, texts, **columns, **ctx.scorer.options)
        out.reward += scores.total.tolist()
        out.domains += columns["domain"]
        out.completions += rollout.texts
        for text, gold, pattern, tests in zip(texts, columns["answer"], columns["answer_pattern"], columns["tests"]):
            answer = extract_program(text) if tests else predicted_answer(text, gold, pattern)
            out.answers.append(answer.strip() if answer is not None and answer.strip() else None)
        if progress is not None:
            progress.update(len(part))
    return out


@torch.no_grad()
def validate(ctx: RunContext, examples: Sequence[Example], progress=None) -> dict[str, float]:
    """Metrics over `examples`, split across processes and gathered."""
    from accelerate.utils import gather_object

    s = collect(ctx, ctx.local_share(examples), progress)
    gathered = (
        gather_object(x) if ctx.accelerator.num_processes > 1 else x
        for x in (s.domains, s.correct, s.reward, s.answers)
    )
    domains, correct, reward, answers = gathered
    summary = summarize(domains, correct, reward, answers, ctx.cfg.eval.generation.n)
    return {k: v for k, v in metric_keys(summary, "val").items() if "/prompts" not in k}
