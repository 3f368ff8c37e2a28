"""One GRPO step: sample G completions per prompt, score, normalise in groups, update.

The math is in grpo.algorithms (pure functions); this module only orders the calls:
1. sample (and, with dynamic sampling, refill until enough groups carry a signal)
2. reward (minus the KL penalty when KL lives in the reward)
3. advantages
4. old and reference log-probs, only when something needs them
5. num_iterations x (loss over micro-batches, one optimizer update)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import torch

from grpo.algorithms.advantages import compute_advantages, group_stats
from grpo.algorithms.kl import kl_divergence
from grpo.algorithms.losses import policy_loss
from grpo.algorithms.sampling import dynamic_sampling_keep, top_entropy_token_mask
from grpo.config.schema import AlgorithmConfig
from grpo.rewards.scorer import Scores
from grpo.rollout.engine import Rollout, SamplingParams, repeat_prompts
from grpo.schedules import linear_schedule
from grpo.stages.common import (
    RunContext,
    chunks,
    concat_rollouts,
    logprobs_and_entropy,
    score,
    sequence_logprobs,
    take,
    update,
)
from grpo.tasks.base import Example


def sampling_temperature(ctx: RunContext, step: int) -> float:
    sched = ctx.cfg.schedule.temperature
    if sched.enabled:
        return linear_schedule(step, initial=sched.initial, final=sched.final, decay_steps=sched.decay_steps)
    return ctx.cfg.generation.temperature


def _sample(ctx: RunContext, examples: Sequence[Example], temperature: float) -> tuple[list[str], Rollout, Scores]:
    G, gen = ctx.cfg.rollout.group_size, ctx.cfg.generation
    prompts = repeat_prompts([ex.prompt for ex in examples], G)  # [N = B x G]
    rollout = ctx.engine.generate(
        ctx.sampler_model,
        prompts,
        SamplingParams(max_new_tokens=ctx.max_new_tokens, temperature=temperature, top_p=gen.top_p, top_k=gen.top_k),
    )
    return prompts, rollout, score(ctx, examples, prompts, rollout, G)


def _rows_of_groups(keep: torch.Tensor, G: int) -> torch.Tensor:
    return keep.repeat_interleave(G)  # [B] -> [N]


def sample_with_filter(
    ctx: RunContext, examples: list[Example], temperature: float, refill: Callable[[], Sequence[Example]] | None
) -> tuple[list[str], Rollout, Scores, dict]:
    """Sample; with dynamic sampling, drop flat (and out-of-band) groups and refill from new prompts."""
    a, G = ctx.cfg.algorithm, ctx.cfg.rollout.group_size
    prompts, rollout, scores = _sample(ctx, examples, temperature)
    if not a.dynamic_sampling:
        return prompts, rollout, scores, {}
    want = len(examples)
    kept: list[tuple[list[str], Rollout, Scores]] = []
    have, tries, seen, dropped = 0, 1, len(examples), 0
    while True:
        keep = dynamic_sampling_keep(scores.total, G, filter_low=a.filter_low, filter_high=a.filter_high)  # [B]
        dropped += int((~keep).sum())
        rows = _rows_of_groups(keep, G)
        if rows.any():
            idx = rows.nonzero().squeeze(1)
            kept.append(([prompts[i] for i in idx.tolist()], take(rollout, idx), scores.select(idx)))
            have += int(keep.sum())
        if have >= want or tries >= a.max_try_make_batch or refill is None:
            break
        more = ctx.local_share(refill())
        prompts, rollout, scores = _sample(ctx, more, temperature)
        tries, seen = tries + 1, seen + len(more)
    info = {
        "train/dynamic_sampling/tries": float(tries),
        "train/dynamic_sampling/kept_frac": (seen - dropped) / max(seen, 1),
    }
    if not kept:  # nothing carried a signal: train on the last batch (its advantages are all zero)
        return prompts, rollout, scores, info
    prompts = [p for part in kept for p in part[0]][: want * G]
    rollout = take(concat_rollouts([part[1] for part in kept], ctx.tokenizer.pad_token_id), slice(0, want * G))
    scores = Scores.concat([part[2] for part in kept]).select(torch.arange(len(prompts)))
    return prompts, rollout, scores, info


def uses_batch_statistics(a: AlgorithmConfig) -> bool:
    """Whether the advantage estimator reads statistics of the whole batch, not only of each group."""
    return a.adv_estimator in ("reinforce_pp", "reinforce_pp_baseline") or (
        a.adv_estimator == "grpo" and a.scale_rewards == "batch"
    )


def batch_advantages(accelerator, rewards: torch.Tensor, group_size: int, a: AlgorithmConfig) -> torch.Tensor:
    """This process's advantages [N_local]; batch-level statistics (scale_rewards=batch, reinforce++)
    are taken over the global batch, all processes' rewards, as a single process would take them."""

    def advantages(r: torch.Tensor) -> torch.Tensor:
        return compute_advantages(
            r, group_size, estimator=a.adv_estimator, scale_rewards=a.scale_rewards, eps=a.adv_eps
        )

    if accelerator.num_processes == 1 or not uses_batch_statistics(a):
        return advantages(rewards)  # groups are whole on each process: nothing to gather
    from accelerate.utils import gather_object

    parts = gather_object([rewards.tolist()])  # one list per process, in rank order (sizes may differ)
    start = sum(len(part) for part in parts[: accelerator.process_index])
    everything = torch.tensor([r for part in parts for r in part], dtype=rewards.dtype, device=rewards.device)
    return advantages(everything)[start : start + rewards.numel()]


def grpo_step(
    ctx: RunContext,
    batch: Sequence[Example],
    step: int,
    optimizer,
    scheduler,
    refill: Callable[[], Sequence[Example]] | None = None,
) -> tuple[dict[str, float], list[dict]]:
    """One GRPO step on this process's share of `batch` (num_iterations optimizer updates).

    `refill` draws another global batch of prompts (dynamic sampling). Returns (metrics, sample rows).
    """
    cfg, acc, a = ctx.cfg, ctx.accelerator, ctx.cfg.algorithm
    G = cfg.rollout.group_size
    temperature = sampling_temperature(ctx, step)
    kl_beta = ctx.kl_ctrl.value if ctx.kl_ctrl is not None else a.kl_beta
    t0 = time.perf_counter()

    # 1. sample (and filter)
    prompts, rollout, scores, info = sample_with_filter(ctx, ctx.local_share(batch), temperature, refill)
    t_gen = time.perf_counter() - t0
    mask = rollout.completion_mask.float()  # [N, C]
    if a.mask_truncated:
        mask = mask * (~rollout.truncated).float().unsqueeze(1)

    # 4a. old and reference log-probs, computed only when something reads them
    t_ref = time.perf_counter()
    need_ref = kl_beta > 0
    need_old = a.num_iterations > 1 or (need_ref and not a.use_kl_loss)
    with torch.no_grad():
        old_logp = sequence_logprobs(ctx.sampler_model, rollout, temperature) if need_old else None  # [N, C]
        ref_logp = None
        if need_ref:
            with ctx.reference() as reference:
                ref_logp = sequence_logprobs(reference, rollout, temperature)  # [N, C]
    t_ref = time.perf_counter() - t_ref

    # 2. reward, with the KL penalty when KL is not a loss term; 3. advantages (groups are whole per process)
    rewards = scores.total
    kl_penalty = None
    if need_ref and not a.use_kl_loss:
        kl_tok = kl_divergence(old_logp, ref_logp, a.kl_estimator) * mask  # [N, C]
        kl_penalty = kl_tok.sum(1)  # [N] sequence KL
        rewards = rewards - kl_beta * kl_penalty
    advantages = batch_advantages(acc, rewards, G, a)

    # 5. num_iterations x (micro-batches, one update)
    t_train = time.perf_counter()
    ctx.policy.train()
    stats_sum: dict[str, float] = {}
    parts = chunks(len(prompts), cfg.trainer.gradient_accumulation_steps)
    grad_norm, stepped, all_stepped = 0.0, False, True
    for _ in range(a.num_iterations):
        finite = True
        for rows in parts:
            with acc.accumulate(ctx.policy):
                part = take(rollout, rows)
                logp, entropy = logprobs_and_entropy(
                    ctx.policy, part, temperature, with_grad_entropy=a.entropy_coef > 0
                )
                token_weights = None
                if a.top_entropy_quantile < 1:
                    token_weights = top_entropy_token_mask(entropy.detach(), mask[rows], a.top_entropy_quantile).float()
                loss, stats = policy_loss(
                    logp,
                    old_logp[rows] if old_logp is not None else logp.detach(),
                    advantages[rows],
                    mask[rows],
                    clip_low=a.clip_range,
                    clip_high=a.clip_range_high,
                    dual_clip=a.dual_clip,
                    ratio_level=a.ratio_level,
                    loss_agg=a.loss_agg,
                    max_completion_length=ctx.max_new_tokens,
                    ref_logp=ref_logp[rows] if (ref_logp is not None and a.use_kl_loss) else None,
                    kl_beta=kl_beta if a.use_kl_loss else 0.0,
                    kl_estimator=a.kl_estimator,
                    kl_bias_correction=a.kl_bias_correction,
                    entropy=entropy,
                    entropy_coef=a.entropy_coef,
                    token_weights=token_weights,
                )
                finite = finite and math.isfinite(loss.item())
                grad_norm, stepped = update(ctx, loss, optimizer, scheduler, finite)
            for k, v in stats.items():
                stats_sum[k] = stats_sum.get(k, 0.0) + float(v) / (len(parts) * a.num_iterations)
        all_stepped = all_stepped and stepped
    t_train = time.perf_counter() - t_train

    # the adaptive controller moves beta towards the target KL (PPO's proportional rule)
    measured_kl = stats_sum.get("kl", float(kl_penalty.mean()) if kl_penalty is not None else None)
    if ctx.kl_ctrl is not None and measured_kl is not None:
        ctx.kl_ctrl.update(measured_kl, 1)

    # Metrics describe the global batch: gather every process's share (groups stay whole).
    def gathered(t: torch.Tensor) -> torch.Tensor:
        return acc.gather(t.to(acc.device)).cpu()

    total = gathered(scores.total)
    lengths = gathered(rollout.lengths.float())
    truncated = gathered(rollout.truncated.float())
    adv = gathered(advantages)
    metrics = {
        "train/num_samples": float(total.numel()),
        "train/reward": total.mean().item(),
        "train/reward_std": total.std().item() if total.numel() > 1 else 0.0,
        **{f"train/reward/{k}": gathered(v).mean().item() for k, v in scores.components.items()},
        "train/reward_errors": gathered(torch.tensor([float(scores.errors)])).sum().item(),
        "train/frac_zero_std_groups": group_stats(total, G)["frac_zero_std_groups"].item(),
        "train/advantage/mean": adv.mean().item(),
        "train/advantage/std": adv.std().item() if adv.numel() > 1 else 0.0,
        "train/advantage/min": adv.min().item(),
        "train/advantage/max": adv.max().item(),
        "train/completion_len/mean": lengths.mean().item(),
        "train/completion_len/min": lengths.min().item(),
        "train/completion_len/max": lengths.max().item(),
        "train/frac_truncated": truncated.mean().item(),
        "train/grad_norm": grad_norm,
        "train/skipped": float(not all_stepped),
        "train/lr": scheduler.get_last_lr()[0],
        "train/temperature": temperature,
        "train/kl_beta": kl_beta,
        "train/tokens_per_s": rollout.lengths.sum().item() * acc.num_processes / max(t_gen, 1e-9),
        "train/step_time": time.perf_counter() - t0,
        "time/generate": t_gen,
        "time/reference": t_ref,
        "time/train": t_train,
        **info,
        **{f"train/{k}": v for k, v in stats_sum.items()},
    }
    if kl_penalty is not None:
        metrics["train/kl"] = gathered(kl_penalty).mean().item()
    samples = [
        {"prompt": p, "completion": c, "reward": float(r)}
        for p, c, r in zip(prompts, rollout.texts, scores.total.tolist())
    ]
    return metrics, samples
