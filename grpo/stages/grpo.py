"""One GRPO step: sample G completions per prompt, score, normalise in groups, update.

The math is in grpo.algorithms (pure functions); this module only orders the calls:
1. sample   2. reward   3. advantages   4. reference log-probs   5. loss, backward, step
"""

from __future__ import annotations

import math
import time
from typing import Sequence

import torch

from grpo.algorithms.advantages import compute_advantages, group_stats
from grpo.algorithms.losses import policy_loss
from grpo.rollout.engine import SamplingParams, repeat_prompts
from grpo.schedules import linear_schedule
from grpo.stages.common import RunContext, chunks, score, sequence_logprobs, take, update
from grpo.tasks.base import Example


def sampling_temperature(ctx: RunContext, step: int) -> float:
    sched = ctx.cfg.schedule.temperature
    if sched.enabled:
        return linear_schedule(step, initial=sched.initial, final=sched.final, decay_steps=sched.decay_steps)
    return ctx.cfg.generation.temperature


def grpo_step(ctx: RunContext, batch: Sequence[Example], step: int, optimizer, scheduler) -> tuple[dict[str, float], list[dict]]:
    """Run one optimizer step on this process's share of `batch`; returns (metrics, sample rows)."""
    cfg, acc = ctx.cfg, ctx.accelerator
    G = cfg.rollout.group_size
    examples = ctx.local_share(batch)
    prompts = repeat_prompts([ex.prompt for ex in examples], G)  # [N = B x G]
    temperature = sampling_temperature(ctx, step)
    t0 = time.perf_counter()

    # 1. sample
    gen = cfg.generation
    rollout = ctx.engine.generate(ctx.sampler_model, prompts, SamplingParams(
        max_new_tokens=ctx.max_new_tokens, temperature=temperature, top_p=gen.top_p, top_k=gen.top_k))
    t_gen = time.perf_counter() - t0

    # 2. reward, 3. advantages (groups are whole on every process: prompts are split, not completions)
    scores = score(ctx, examples, prompts, rollout, G)
    a = cfg.algorithm
    advantages = compute_advantages(scores.total, G, estimator=a.adv_estimator, scale_rewards=a.scale_rewards, eps=a.adv_eps)

    # 4. reference log-probs: skipped entirely when no KL term needs them
    ref_logp = None
    use_kl = a.use_kl_loss and a.kl_beta > 0
    t_ref = time.perf_counter()
    if use_kl:
        with torch.no_grad(), ctx.reference() as reference:
            ref_logp = sequence_logprobs(reference, rollout, temperature)  # [N, C]
    t_ref = time.perf_counter() - t_ref

    # 5. loss over micro-batches (gradient accumulation), then one optimizer step
    t_train = time.perf_counter()
    ctx.policy.train()
    stats_sum: dict[str, float] = {}
    parts = chunks(len(prompts), cfg.trainer.gradient_accumulation_steps)
    grad_norm, stepped, finite = 0.0, False, True
    for rows in parts:
        with acc.accumulate(ctx.policy):
            part = take(rollout, rows)
            logp = sequence_logprobs(ctx.policy, part, temperature)  # [n, C]
            loss, stats = policy_loss(
                logp, logp.detach(), advantages[rows], part.completion_mask,
                clip_low=a.clip_range, clip_high=a.clip_range_high, loss_agg=a.loss_agg,
                max_completion_length=ctx.max_new_tokens,
                ref_logp=None if ref_logp is None else ref_logp[rows], kl_beta=a.kl_beta if use_kl else 0.0,
                kl_estimator=a.kl_estimator)
            finite = finite and math.isfinite(float(loss))
            grad_norm, stepped = update(ctx, loss, optimizer, scheduler, finite)
        for k, v in stats.items():
            stats_sum[k] = stats_sum.get(k, 0.0) + float(v) / len(parts)
    t_train = time.perf_counter() - t_train
    elapsed = time.perf_counter() - t0

    # Metrics describe the global batch: gather every process's share (groups stay whole).
    def gathered(t: torch.Tensor) -> torch.Tensor:
        return acc.gather(t.to(acc.device)).cpu()

    rewards = gathered(scores.total)
    lengths = gathered(rollout.lengths.float())
    truncated = gathered(rollout.truncated.float())
    groups = group_stats(rewards, G)
    metrics = {
        "train/num_samples": float(rewards.numel()),
        "train/reward": rewards.mean().item(),
        "train/reward_std": rewards.std().item() if rewards.numel() > 1 else 0.0,
        **{f"train/reward/{k}": gathered(v).mean().item() for k, v in scores.components.items()},
        "train/reward_errors": gathered(torch.tensor([float(scores.errors)])).sum().item(),
        "train/frac_zero_std_groups": groups["frac_zero_std_groups"].item(),
        "train/advantage/mean": advantages.mean().item(),
        "train/advantage/std": advantages.std().item() if len(prompts) > 1 else 0.0,
        "train/advantage/min": advantages.min().item(),
        "train/advantage/max": advantages.max().item(),
        "train/completion_len/mean": lengths.mean().item(),
        "train/completion_len/min": lengths.min().item(),
        "train/completion_len/max": lengths.max().item(),
        "train/frac_truncated": truncated.mean().item(),
        "train/grad_norm": grad_norm,
        "train/skipped": float(not stepped),
        "train/lr": scheduler.get_last_lr()[0],
        "train/temperature": temperature,
        "train/tokens_per_s": rollout.lengths.sum().item() * acc.num_processes / max(t_gen, 1e-9),
        "train/step_time": elapsed,
        "time/generate": t_gen,
        "time/reference": t_ref,
        "time/train": t_train,
        **{f"train/{k}": v for k, v in stats_sum.items()},
    }
    samples = [{"prompt": p, "completion": c, "reward": float(r)} for p, c, r in zip(prompts, rollout.texts, scores.total.tolist())]
    return metrics, samples
