"""What the stages share: the built components of a run, and helpers over a rollout."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from accelerate import Accelerator
from transformers import PreTrainedTokenizerBase

from grpo.algorithms.losses import entropy_from_logits, token_log_probs
from grpo.config.derived import Derived
from grpo.config.schema import RunConfig
from grpo.rewards.scorer import RewardScorer, Scores
from grpo.rollout.engine import Rollout, RolloutEngine
from grpo.rollout.logprobs import completion_logits
from grpo.rollout.tokens import TokenIds
from grpo.tasks.base import Example, Task


@dataclass
class RunContext:
    cfg: RunConfig
    derived: Derived
    accelerator: Accelerator
    policy: torch.nn.Module  # prepared (possibly DDP-wrapped) for training
    tokenizer: PreTrainedTokenizerBase
    engine: RolloutEngine
    scorer: RewardScorer
    task: Task
    reference: Callable[[], AbstractContextManager[torch.nn.Module]]
    max_new_tokens: int  # generation.max_new_tokens bounded by the model's context
    kl_ctrl: Any | None = None  # AdaptiveKLController when algorithm.kl_ctrl=adaptive
    token_ids: TokenIds | None = None  # the tokenizer's ids, each string tokenized once (built from `tokenizer`)

    def __post_init__(self) -> None:
        if self.token_ids is None:
            self.token_ids = TokenIds(self.tokenizer)

    @property
    def sampler_model(self) -> torch.nn.Module:
        """The bare model for generate(): DDP wrappers have no generate()."""
        return self.accelerator.unwrap_model(self.policy)

    def local_share(self, items: Sequence) -> list:
        """This process's share of a global batch (prompts per step are global)."""
        return list(items[self.accelerator.process_index :: self.accelerator.num_processes])


def sequence_logprobs(model: torch.nn.Module, rollout: Rollout, temperature: float) -> torch.Tensor:
    """[N, C] log-probs of the rollout's completion tokens under `model`."""
    logits = completion_logits(
        model, rollout.prompt_ids, rollout.prompt_mask, rollout.completion_ids, rollout.completion_mask
    )
    return token_log_probs(logits, rollout.completion_ids, temperature)


def score(
    ctx: RunContext,
    examples: Sequence[Example],
    prompts: list[str],
    rollout: Rollout,
    repeats: int,
    logp: torch.Tensor | None = None,
) -> Scores:
    """Rewards of a rollout whose rows are each example repeated `repeats` times."""
    return ctx.scorer(
        prompts, rollout.texts, group_size=repeats, **reward_columns(ctx, examples, prompts, rollout, repeats, logp)
    )


def reward_columns(
    ctx: RunContext,
    examples: Sequence[Example],
    prompts: list[str],
    rollout: Rollout,
    repeats: int,
    logp: torch.Tensor | None = None,
) -> dict[str, list]:
    """The columns every reward component may read (grpo/rewards/components.py), one entry per row."""
    rows = [ex for ex in examples for _ in range(repeats)]
    columns = dict(
        answer=[ex.answer for ex in rows],
        domain=[ex.domain for ex in rows],
        tests=[ex.tests for ex in rows],
        # JSONL records carry their own pattern (per domain, or the record's meta.answer_pattern)
        answer_pattern=[ex.meta.get("answer_pattern", ctx.task.answer_pattern) for ex in rows],
        truncated=rollout.truncated.tolist(),
        completion_length=rollout.lengths.tolist(),
        max_new_tokens=[ctx.max_new_tokens] * len(rows),
    )
    if ctx.cfg.task.candidates_path:  # offline candidates: the file's score and label where a completion is one
        from grpo.tasks.candidates import load_candidates

        columns.update(load_candidates(ctx.cfg.task.candidates_path).columns(prompts, rollout.texts))
    if ctx.scorer.needs_logp:
        if logp is None:
            with torch.no_grad():
                logp = sequence_logprobs(ctx.sampler_model, rollout, 1.0)
        m = rollout.completion_mask.to(logp.dtype)
        columns["completion_logp_mean"] = ((logp * m).sum(1) / m.sum(1).clamp(min=1)).tolist()
    return columns


def chunks(n: int, parts: int) -> list[slice]:
    """`parts` contiguous slices covering range(n) (micro-batches for gradient accumulation)."""
    bounds = [round(i * n / parts) for i in range(parts + 1)]
    return [slice(bounds[i], bounds[i + 1]) for i in range(parts)]


def take(rollout: Rollout, rows: slice | torch.Tensor) -> Rollout:
    """Rows of a rollout, by slice or by an index tensor."""
    texts = rollout.texts[rows] if isinstance(rows, slice) else [rollout.texts[i] for i in rows.tolist()]
    return Rollout(
        rollout.prompt_ids[rows],
        rollout.prompt_mask[rows],
        rollout.completion_ids[rows],
        rollout.completion_mask[rows],
        rollout.truncated[rows],
        texts,
    )


def concat_rollouts(parts: Sequence[Rollout], pad_id: int) -> Rollout:
    """Stack rollouts of different widths: prompts padded on the left, completions on the right."""
    P = max(r.prompt_ids.size(1) for r in parts)
    C = max(r.completion_ids.size(1) for r in parts)

    def left(t, width, value):
        return torch.nn.functional.pad(t, (width - t.size(1), 0), value=value)

    def right(t, width, value):
        return torch.nn.functional.pad(t, (0, width - t.size(1)), value=value)

    return Rollout(
        torch.cat([left(r.prompt_ids, P, pad_id) for r in parts]),
        torch.cat([left(r.prompt_mask, P, 0) for r in parts]),
        torch.cat([right(r.completion_ids, C, pad_id) for r in parts]),
        torch.cat([right(r.completion_mask, C, 0) for r in parts]),
        torch.cat([r.truncated for r in parts]),
        [t for r in parts for t in r.texts],
    )


def logprobs_and_entropy(
    model: torch.nn.Module, rollout: Rollout, temperature: float, with_grad_entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, C] log-probs of the completion tokens and the policy's entropy at each position.

    The entropy carries a gradient only when an entropy bonus trains on it; otherwise it is
    computed without one, for the logs and the top-entropy token mask.
    """
    logits = completion_logits(
        model, rollout.prompt_ids, rollout.prompt_mask, rollout.completion_ids, rollout.completion_mask
    )
    logp = token_log_probs(logits, rollout.completion_ids, temperature)
    if with_grad_entropy:
        return logp, entropy_from_logits(logits, temperature=temperature)
    with torch.no_grad():
        return logp, entropy_from_logits(logits.detach(), temperature=temperature)


def update(ctx: RunContext, loss: torch.Tensor, optimizer, scheduler, losses_finite: bool) -> tuple[float, bool]:
    """Backward one micro-batch; on the last one, clip and step unless anything is non-finite.

    `losses_finite` says whether every micro-batch loss of this update was finite. Returns
    (grad norm, whether the optimizer stepped). A non-finite loss or gradient skips the whole
    update (and the LR schedule with it); the recipe counts skips and stops after too many.
    """
    acc = ctx.accelerator
    acc.backward(loss)
    if not acc.sync_gradients:
        return 0.0, False
    grad_norm = float(acc.clip_grad_norm_(ctx.policy.parameters(), ctx.cfg.trainer.max_grad_norm))
    stepped = losses_finite and math.isfinite(grad_norm)
    if stepped:
        optimizer.step()
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm, stepped
