"""Validation on held-out prompts: accuracy (the verifiable correctness) and mean reward, per domain."""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import torch

from grpo.rewards.components import correctness
from grpo.rollout.engine import SamplingParams, repeat_prompts
from grpo.stages.common import RunContext, score
from grpo.tasks.base import Example


def eval_params(ctx: RunContext) -> SamplingParams:
    e, g = ctx.cfg.eval.generation, ctx.cfg.generation
    return SamplingParams(max_new_tokens=ctx.max_new_tokens, greedy=e.greedy, temperature=e.temperature, top_p=e.top_p, top_k=g.top_k)


@torch.no_grad()
def evaluate(ctx: RunContext, examples: Sequence[Example], progress=None) -> dict[str, float]:
    """Metrics over `examples` (split across processes, gathered); n samples per prompt."""
    n = ctx.cfg.eval.generation.n
    local = ctx.local_share(examples)
    params = eval_params(ctx)
    correct, reward, domains = [], [], []
    bs = ctx.cfg.eval.batch_size
    for start in range(0, len(local), bs):
        part = local[start:start + bs]
        prompts = repeat_prompts([ex.prompt for ex in part], n)
        rollout = ctx.engine.generate(ctx.sampler_model, prompts, params)
        scores = score(ctx, part, prompts, rollout, n)
        answers = [ex.answer for ex in part for _ in range(n)]
        correct += correctness(prompts, rollout.texts, answer=answers, answer_pattern=[ctx.task.answer_pattern] * len(prompts),
                               numeric_tolerance=ctx.cfg.reward.numeric_tolerance)
        reward += scores.total.tolist()
        domains += [ex.domain for ex in part for _ in range(n)]
        if progress is not None:
            progress.update(len(part))
    names = sorted(set(ex.domain for ex in examples))
    domain_ids = torch.tensor([names.index(d) for d in domains], dtype=torch.long)
    acc = ctx.accelerator
    correct_t = acc.gather_for_metrics(torch.tensor(correct, dtype=torch.float32, device=acc.device)).cpu()
    reward_t = acc.gather_for_metrics(torch.tensor(reward, dtype=torch.float32, device=acc.device)).cpu()
    domain_t = acc.gather_for_metrics(domain_ids.to(acc.device)).cpu()
    metrics = {"val/accuracy": correct_t.mean().item(), "val/reward": reward_t.mean().item()}
    if len(names) > 1:
        by = defaultdict(list)
        for c, d in zip(correct_t.tolist(), domain_t.tolist()):
            by[names[d]].append(c)
        metrics.update({f"val/accuracy/{d}": sum(v) / len(v) for d, v in by.items()})
    return metrics
