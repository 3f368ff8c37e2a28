"""One RCE step: reward-weighted cross-entropy over scored candidates.

Candidates come from the policy (sampled, like GRPO's rollouts), from the task's finite
answer space (every answer scored by the same reward), or from an offline candidates file
(seed 004's beams, task.candidates_path). Weights are softmax(reward / tau) within each
prompt's candidates, so the policy imitates its best-scored candidates.

File groups differ in size: each prompt keeps its top `num_candidates` by the file's score
(Lever's top-k), and a step's groups are padded to the largest with rows of weight 0.
`drop_incorrect_below` drops wrong candidates whose quality is below it (seed 004's filter);
a group's remaining weights are renormalised.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from grpo.algorithms.rce import filter_candidates, rce_loss, rce_weights
from grpo.config.errors import ConfigError
from grpo.context import RunContext
from grpo.rollout.batch import chunks, take
from grpo.rollout.engine import Rollout, SamplingParams, completion_masks, repeat_prompts
from grpo.rollout.logprobs import sequence_logprobs
from grpo.stages.scoring import executor_metrics, score, share_observed
from grpo.stages.update import update
from grpo.tasks.base import Example


def rollout_from_texts(ctx: RunContext, prompts: list[str], texts: list[str]) -> Rollout:
    """Teacher-forcing inputs for given completions (each ends with EOS)."""
    tok = ctx.tokenizer
    device = next(ctx.sampler_model.parameters()).device
    prompt_ids, prompt_mask = ctx.token_ids.padded(prompts, device)
    ids = [x + [tok.eos_token_id] for x in ctx.token_ids(texts)]
    width = max(len(x) for x in ids)
    completion_ids = torch.tensor([x + [tok.pad_token_id] * (width - len(x)) for x in ids])
    mask, truncated = completion_masks(completion_ids, tok.eos_token_id)
    return Rollout(
        prompt_ids, prompt_mask, completion_ids.to(device), mask.to(device), truncated.to(device), list(texts)
    )


def candidates(ctx: RunContext, examples: Sequence[Example]) -> tuple[list[str], Rollout, int]:
    rce = ctx.cfg.algorithm.rce
    if rce.candidates == "task":
        space = ctx.task.answer_space
        if not space:
            raise ConfigError(
                "algorithm.rce.candidates", "task", f"task '{ctx.task.name}' has no finite answer space; use 'policy'"
            )
        prompts = repeat_prompts(ctx.prompts.for_sampling(examples), len(space))
        return prompts, rollout_from_texts(ctx, prompts, list(space) * len(examples)), len(space)
    k = rce.num_candidates
    prompts = repeat_prompts(ctx.prompts.for_sampling(examples), k)
    gen = ctx.cfg.generation
    rollout = ctx.engine.generate(
        ctx.sampler_model,
        prompts,
        SamplingParams(
            max_new_tokens=ctx.max_new_tokens, temperature=gen.temperature or 1.0, top_p=gen.top_p, top_k=gen.top_k
        ),
    )
    return prompts, rollout, k


def file_candidates(ctx: RunContext, examples: Sequence[Example]) -> tuple[list[str], Rollout, int, torch.Tensor]:
    """Each prompt's top `num_candidates` from task.candidates_path, padded to one group size K.

    Returns prompts [N = B x K], their rollout, K, and a [N] bool mask that is False on padding rows.
    """
    from grpo.tasks.candidates import load_candidates

    found = load_candidates(ctx.cfg.task.candidates_path)
    groups = [found.top(ex.prompt, ctx.cfg.algorithm.rce.num_candidates) for ex in examples]
    k = max(len(g) for g in groups)
    padded = [c for g in groups for c in (*g, *[None] * (k - len(g)))]  # [B x K], None on padding
    texts = [c.text if c is not None else "" for c in padded]
    real = torch.tensor([c is not None for c in padded])
    prompts = repeat_prompts(ctx.prompts.for_sampling(examples), k)
    return prompts, rollout_from_texts(ctx, prompts, texts), k, real


def kept_candidates(ctx: RunContext, scores, real: torch.Tensor | None) -> torch.Tensor | None:
    """[N] bool: candidates RCE imitates (real rows that pass seed 004's filter), or None for all."""
    rce = ctx.cfg.algorithm.rce
    keep = real
    if rce.drop_incorrect_below is not None:
        c = scores.components
        quality = c.get("beam_score", c.get("quality", scores.total))
        passed = filter_candidates(
            scores.total, c["correctness"], quality=quality, drop_incorrect_below=rce.drop_incorrect_below
        )
        keep = passed if keep is None else keep & passed
    return keep


def rce_step(ctx: RunContext, batch: Sequence[Example], optimizer, scheduler) -> dict[str, float]:
    cfg, acc = ctx.cfg, ctx.accelerator
    examples = ctx.local_share(batch)
    real = None
    if cfg.algorithm.rce.candidates == "file":
        prompts, rollout, k, real = file_candidates(ctx, examples)
    else:
        prompts, rollout, k = candidates(ctx, examples)
    scores = score(ctx, examples, prompts, rollout, k)
    share_observed(ctx)
    keep = kept_candidates(ctx, scores, real)
    weights = rce_weights(scores.total, k, tau=cfg.algorithm.rce.tau, keep=keep)  # [N], each group sums to 1 (or 0)
    shown = real if real is not None else torch.ones(len(prompts), dtype=torch.bool)  # padding rows are not logged

    ctx.policy.train()
    parts = chunks(len(prompts), cfg.trainer.gradient_accumulation_steps)
    total_loss, grad_norm, stepped, finite = 0.0, 0.0, False, True
    for rows in parts:
        with acc.accumulate(ctx.policy):
            part = take(rollout, rows)
            logp = sequence_logprobs(ctx.policy, part, 1.0)
            loss = rce_loss(
                logp,
                part.completion_mask,
                weights[rows],
                length_normalize=cfg.algorithm.rce.length_normalize,
                num_groups=len(examples) / len(parts),
            )
            finite = finite and math.isfinite(loss.item())
            grad_norm, stepped = update(ctx, loss, optimizer, scheduler, finite)
        total_loss += loss.item() / len(parts)
    metrics = {
        "rce/loss": total_loss,
        "rce/reward": scores.total[shown].mean().item(),
        **{f"rce/reward/{k}": v[shown].mean().item() for k, v in scores.components.items()},
        "rce/lr": scheduler.get_last_lr()[0],
        "rce/grad_norm": grad_norm,
        "rce/skipped": float(not stepped),
        **executor_metrics(ctx),
    }
    if keep is not None:
        metrics["rce/kept_frac"] = (keep & shown).sum().item() / max(int(shown.sum()), 1)
    return metrics
