"""One GRPO step: sample G completions per prompt, score, normalise in groups, update.

The math is in grpo.algorithms (pure functions); this module only orders the calls:
1. sample (and, with dynamic sampling, refill until enough groups carry a signal)
2. old and reference log-probs, only when something needs them
3. reward (minus the KL penalty when KL lives in the reward), then advantages
4. num_iterations x (loss over micro-batches, one optimizer update)
5. metrics of the global batch
Each phase runs inside `ctx.timer.phase(...)`: the step's `time/*` metrics and grpo.bench read it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from grpo.algorithms.advantages import compute_advantages, group_stats
from grpo.algorithms.is_correction import importance_weights, logprob_mismatch
from grpo.algorithms.kl import kl_divergence
from grpo.algorithms.losses import policy_loss
from grpo.algorithms.sampling import dynamic_sampling_keep, top_entropy_token_mask
from grpo.config.schema import AlgorithmConfig
from grpo.context import RunContext
from grpo.rewards.scorer import Scores
from grpo.rollout.batch import chunks, concat_rollouts, take
from grpo.rollout.engine import Rollout, SamplingParams, repeat_prompts
from grpo.rollout.logprobs import logprobs_and_entropy, sequence_logprobs
from grpo.schedules import linear_schedule
from grpo.stages.candidate_groups import file_groups, grpo_top_k
from grpo.stages.replay import replay
from grpo.stages.scoring import executor_metrics, score, share_observed
from grpo.stages.update import update
from grpo.tasks.base import Example


def sampling_temperature(ctx: RunContext, step: int) -> float:
    sched = ctx.cfg.schedule.temperature
    if sched.enabled:
        return linear_schedule(step, initial=sched.initial, final=sched.final, decay_steps=sched.decay_steps)
    return ctx.cfg.generation.temperature


def _sample(
    ctx: RunContext, examples: Sequence[Example], temperature: float, top_k: int | None = None
) -> tuple[list[str], Rollout, Scores]:
    G, gen = ctx.cfg.rollout.group_size, ctx.cfg.generation
    prompts = repeat_prompts(ctx.prompts.for_sampling(examples), G)  # [N = B x G]
    if ctx.cfg.rollout.candidates == "file":  # the offline file's top-k candidates (schedule.grpo_top_k)
        rollout = file_groups(ctx, examples, top_k, prompts)
    else:
        rollout = ctx.engine.generate(
            ctx.sampler_model,
            prompts,
            SamplingParams(
                max_new_tokens=ctx.max_new_tokens, temperature=temperature, top_p=gen.top_p, top_k=gen.top_k
            ),
        )
    return prompts, rollout, score(ctx, examples, prompts, rollout, G)


def _rows_of_groups(keep: torch.Tensor, G: int) -> torch.Tensor:
    return keep.repeat_interleave(G)  # [B] -> [N]


def sample_with_filter(
    ctx: RunContext,
    examples: list[Example],
    temperature: float,
    refill: Callable[[], Sequence[Example]] | None,
    top_k: int | None = None,
) -> tuple[list[Example], list[str], Rollout, Scores, dict]:
    """Sample; with dynamic sampling, drop flat (and out-of-band) groups and refill from new prompts.
    Returns the groups' examples (one per G rows), prompts, rollout, scores and metrics."""
    a, G = ctx.cfg.algorithm, ctx.cfg.rollout.group_size
    prompts, rollout, scores = _sample(ctx, examples, temperature, top_k)
    if not a.dynamic_sampling:
        return list(examples), prompts, rollout, scores, {}
    want = len(examples)
    kept: list[tuple[list[str], Rollout, Scores]] = []
    kept_examples: list[Example] = []
    have, tries, seen, dropped = 0, 1, len(examples), 0
    while True:
        keep = dynamic_sampling_keep(scores.total, G, filter_low=a.filter_low, filter_high=a.filter_high)  # [B]
        dropped += int((~keep).sum())
        rows = _rows_of_groups(keep, G)
        if rows.any():
            idx = rows.nonzero().squeeze(1)
            kept.append(([prompts[i] for i in idx.tolist()], take(rollout, idx), scores.select(idx)))
            kept_examples += [ex for ex, k in zip(examples, keep.tolist()) if k]
            have += int(keep.sum())
        if have >= want or tries >= a.max_try_make_batch or refill is None:
            break
        examples = ctx.local_share(refill())
        prompts, rollout, scores = _sample(ctx, examples, temperature, top_k)
        tries, seen = tries + 1, seen + len(examples)
    info = {
        "train/dynamic_sampling/tries": float(tries),
        "train/dynamic_sampling/kept_frac": (seen - dropped) / max(seen, 1),
    }
    if not kept:  # nothing carried a signal: train on the last batch (its advantages are all zero)
        return list(examples), prompts, rollout, scores, info
    prompts = [p for part in kept for p in part[0]][: want * G]
    rollout = take(concat_rollouts([part[1] for part in kept], ctx.tokenizer.pad_token_id), slice(0, want * G))
    scores = Scores.concat([part[2] for part in kept]).select(torch.arange(len(prompts)))
    return kept_examples[:want], prompts, rollout, scores, info


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


@dataclass
class Batch:
    """What one step trains on: the sampled rows and everything computed from them."""

    prompts: list[str]
    rollout: Rollout
    scores: Scores
    mask: torch.Tensor  # [N, C] tokens that count in the loss
    temperature: float
    kl_beta: float
    old_logp: torch.Tensor | None = None  # [N, C] under the sampling policy
    ref_logp: torch.Tensor | None = None  # [N, C] under the reference
    kl_penalty: torch.Tensor | None = None  # [N] sequence KL, when KL lives in the reward
    advantages: torch.Tensor | None = None  # [N]
    # per micro-batch (sum, count, max) of |trainer - sampler| log-probs, when the engine reports them
    mismatch: list[torch.Tensor] = field(default_factory=list)
    replayed: torch.Tensor | None = None  # [N] bool: rows from the experience buffer, not sampled by the engine


def old_and_reference_logprobs(ctx: RunContext, b: Batch) -> None:
    """Old log-probs (PPO epochs, KL in the reward) and reference log-probs, only when read."""
    a = ctx.cfg.algorithm
    need_ref = ctx.reference is not None
    need_old = a.num_iterations > 1 or (need_ref and not a.use_kl_loss)
    with torch.no_grad():
        if need_old:
            with ctx.timer.phase("old_policy_forward"):
                b.old_logp = sequence_logprobs(ctx.sampler_model, b.rollout, b.temperature)
        if need_ref:
            with ctx.timer.phase("reference_forward"), ctx.reference() as reference:
                b.ref_logp = sequence_logprobs(reference, b.rollout, b.temperature)


def rewards_and_advantages(ctx: RunContext, b: Batch) -> None:
    """Rewards, less the KL penalty when KL is not a loss term; advantages (groups are whole per process)."""
    a = ctx.cfg.algorithm
    rewards = b.scores.total
    if b.ref_logp is not None and not a.use_kl_loss:
        kl_tok = kl_divergence(b.old_logp, b.ref_logp, a.kl_estimator) * b.mask  # [N, C]
        b.kl_penalty = kl_tok.sum(1)  # [N] sequence KL
        rewards = rewards - b.kl_beta * b.kl_penalty
    b.advantages = batch_advantages(ctx.accelerator, rewards, ctx.cfg.rollout.group_size, a)


def sampler_correction(ctx: RunContext, b: Batch, rows: slice, logp: torch.Tensor, record: bool):
    """Importance weights [n, C] for a sampler that is not the trainer (None: no correction), and the
    mismatch of its log-probs with the trainer's: the old log-probs, else this forward's (on-policy)."""
    sampler_logp, r = b.rollout.logprobs, ctx.cfg.rollout
    if sampler_logp is None:
        return None
    trainer_logp = b.old_logp[rows] if b.old_logp is not None else logp.detach()
    sampled = b.rollout.completion_mask[rows]
    if b.replayed is not None:  # replayed rows have no sampler log-probs: no mismatch, weight 1
        sampled = sampled * (~b.replayed[rows]).unsqueeze(1)
    if record:  # once per rollout row (the first PPO epoch)
        b.mismatch.append(torch.stack(logprob_mismatch(trainer_logp, sampler_logp[rows], sampled)))
    if r.is_correction == "none":
        return None
    weights = importance_weights(trainer_logp, sampler_logp[rows], b.mask[rows], r.is_correction, r.is_cap)
    return weights if b.replayed is None else torch.where(b.replayed[rows].unsqueeze(1), b.mask[rows], weights)


def micro_batch_loss(ctx: RunContext, b: Batch, rows: slice, record: bool = True) -> tuple[torch.Tensor, dict]:
    """The policy loss of one micro-batch (forward with grad)."""
    a = ctx.cfg.algorithm
    part = take(b.rollout, rows)
    logp, entropy = logprobs_and_entropy(ctx.policy, part, b.temperature, with_grad_entropy=a.entropy_coef > 0)
    token_weights = None
    if a.top_entropy_quantile < 1:
        token_weights = top_entropy_token_mask(entropy.detach(), b.mask[rows], a.top_entropy_quantile).float()
    if (is_weights := sampler_correction(ctx, b, rows, logp, record)) is not None:
        token_weights = is_weights if token_weights is None else token_weights * is_weights
    return policy_loss(
        logp,
        b.old_logp[rows] if b.old_logp is not None else logp.detach(),
        b.advantages[rows],
        b.mask[rows],
        clip_low=a.clip_range,
        clip_high=a.clip_range_high,
        dual_clip=a.dual_clip,
        ratio_level=a.ratio_level,
        loss_agg=a.loss_agg,
        max_completion_length=ctx.max_new_tokens,
        ref_logp=b.ref_logp[rows] if (b.ref_logp is not None and a.use_kl_loss) else None,
        kl_beta=b.kl_beta if a.use_kl_loss else 0.0,
        kl_estimator=a.kl_estimator,
        kl_bias_correction=a.kl_bias_correction,
        entropy=entropy,
        entropy_coef=a.entropy_coef,
        token_weights=token_weights,
    )


def train_on(ctx: RunContext, b: Batch, optimizer, scheduler) -> tuple[dict[str, float], float, bool]:
    """num_iterations x (micro-batches, one update); returns (mean loss stats, grad norm, all stepped)."""
    a, acc = ctx.cfg.algorithm, ctx.accelerator
    ctx.policy.train()
    stats_sum: dict[str, float] = {}
    parts = chunks(len(b.prompts), ctx.cfg.trainer.gradient_accumulation_steps)
    grad_norm, stepped, all_stepped = 0.0, False, True
    for iteration in range(a.num_iterations):
        finite = True
        for rows in parts:
            with acc.accumulate(ctx.policy):
                with ctx.timer.phase("policy_forward"):
                    loss, stats = micro_batch_loss(ctx, b, rows, record=iteration == 0)
                    finite = finite and math.isfinite(loss.item())
                grad_norm, stepped = update(ctx, loss, optimizer, scheduler, finite)
            for k, v in stats.items():
                stats_sum[k] = stats_sum.get(k, 0.0) + float(v) / (len(parts) * a.num_iterations)
        all_stepped = all_stepped and stepped
    return stats_sum, grad_norm, all_stepped


def step_metrics(ctx: RunContext, b: Batch, stats: dict[str, float], grad_norm: float, stepped: bool, scheduler):
    """Metrics of the global batch: every process's share is gathered (groups stay whole)."""
    acc, timer = ctx.accelerator, ctx.timer

    def gathered(t: torch.Tensor) -> torch.Tensor:
        return acc.gather(t.to(acc.device)).cpu()

    total = gathered(b.scores.total)
    lengths = gathered(b.rollout.lengths.float())
    adv = gathered(b.advantages)
    t_gen = timer["generation"]
    metrics = {
        "train/num_samples": float(total.numel()),
        "train/reward": total.mean().item(),
        "train/reward_std": total.std().item() if total.numel() > 1 else 0.0,
        **{f"train/reward/{k}": gathered(v).mean().item() for k, v in b.scores.components.items()},
        "train/reward_errors": gathered(torch.tensor([float(b.scores.errors)])).sum().item(),
        "train/frac_zero_std_groups": group_stats(total, ctx.cfg.rollout.group_size)["frac_zero_std_groups"].item(),
        "train/advantage/mean": adv.mean().item(),
        "train/advantage/std": adv.std().item() if adv.numel() > 1 else 0.0,
        "train/advantage/min": adv.min().item(),
        "train/advantage/max": adv.max().item(),
        "train/completion_len/mean": lengths.mean().item(),
        "train/completion_len/min": lengths.min().item(),
        "train/completion_len/max": lengths.max().item(),
        "train/frac_truncated": gathered(b.rollout.truncated.float()).mean().item(),
        "train/grad_norm": grad_norm,
        "train/skipped": float(not stepped),
        "train/lr": scheduler.get_last_lr()[0],
        "train/temperature": b.temperature,
        "train/kl_beta": b.kl_beta,
        "train/tokens_per_s": b.rollout.lengths.sum().item() * acc.num_processes / max(t_gen, 1e-9),
        "time/generate": t_gen,
        "time/reference": timer["reference_forward"] + timer["old_policy_forward"],
        "time/train": timer["policy_forward"] + timer["backward"] + timer["optimizer"],
        **{f"train/{k}": v for k, v in stats.items()},
    }
    if b.kl_penalty is not None:
        metrics["train/kl"] = gathered(b.kl_penalty).mean().item()
    if b.mismatch:  # the sampling engine's log-probs against the trainer's, over every process's tokens
        parts = gathered(torch.stack(b.mismatch))  # [micro-batches x processes, 3]: sum, count, max
        metrics["rollout/logprob_diff_mean"] = (parts[:, 0].sum() / parts[:, 1].sum().clamp(min=1)).item()
        metrics["rollout/logprob_diff_max"] = parts[:, 2].max().item()
    return metrics


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
    a, timer = ctx.cfg.algorithm, ctx.timer
    timer.reset()
    with timer.phase("step"):
        temperature, top_k = sampling_temperature(ctx, step), grpo_top_k(ctx, step)
        with timer.phase("generation"):
            examples, prompts, rollout, scores, info = sample_with_filter(
                ctx, ctx.local_share(batch), temperature, refill, top_k
            )
        with timer.phase("replay"):  # the experience buffer, when on (grpo/stages/replay.py)
            rollout, scores, replayed, replay_info = replay(ctx, examples, prompts, rollout, scores)
        share_observed(ctx)  # the scored rows, to the prompts (AFlow's best workflows), on every rank
        info.update(replay_info)
        if top_k is not None:
            info["train/grpo_top_k"] = float(top_k)
        mask = rollout.completion_mask.float()  # [N, C]
        if a.mask_truncated:
            mask = mask * (~rollout.truncated).float().unsqueeze(1)
        b = Batch(prompts, rollout, scores, mask, temperature, kl_beta=ctx.kl_ctrl.value, replayed=replayed)
        old_and_reference_logprobs(ctx, b)
        rewards_and_advantages(ctx, b)
        stats, grad_norm, stepped = train_on(ctx, b, optimizer, scheduler)
        # the adaptive controller moves beta towards the target KL (PPO's proportional rule)
        measured_kl = stats.get("kl", float(b.kl_penalty.mean()) if b.kl_penalty is not None else None)
        if measured_kl is not None:
            ctx.kl_ctrl.update(measured_kl, 1)
        metrics = {**step_metrics(ctx, b, stats, grad_norm, stepped, scheduler), **info, **executor_metrics(ctx)}
    metrics["train/step_time"] = timer["step"]
    samples = [
        {"prompt": p, "completion": c, "reward": float(r)}
        for p, c, r in zip(prompts, rollout.texts, scores.total.tolist())
    ]
    return metrics, samples
