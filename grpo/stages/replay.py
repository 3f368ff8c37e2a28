"""The experience buffer in the GRPO step (grpo/rollout/experience.py holds the buffer itself).

After sampling, scoring and dynamic sampling's filters, each group whose rewards are all equal and
whose prompt has a buffered success that scored higher than the group gets that success in place
of its last member. The completion is re-tokenized into the rollout; the whole group is scored
again (not given the buffered reward: a reward can change between steps, Lever's policy quality
with the policy, a group-normalised one with the group). The row is off-policy: the step
recomputes old and reference log-probs as for every row, and its engine log-probs are marked so
the mismatch metric and the importance correction skip it. Then the step's rows are offered to
the buffer, gathered from every process first so that every rank holds the same buffer. Rows are
stored and looked up under the example's own prompt (`ex.prompt`), never the prompt the policy was
shown: that one (ctx.prompts.for_sampling: AFlow's carries the best workflows so far) may change
from step to step while the problem stays.

Metrics (over all processes): `train/replayed` rows replaced this step,
`train/frac_zero_std_groups_sampled` zero-spread groups before replay (the step's
`train/frac_zero_std_groups` is after it) and `train/experience_rows` the buffer's size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from grpo.context import RunContext
from grpo.rewards.scorer import Scores
from grpo.rollout.batch import take
from grpo.rollout.engine import Rollout
from grpo.rollout.experience import completion_tokens, groups_to_replay, replace_completions
from grpo.stages.scoring import score
from grpo.tasks.base import Example


def _summed(ctx: RunContext, values: list[float]) -> list[float]:
    """`values` summed over every process."""
    acc = ctx.accelerator
    return acc.gather(torch.tensor([values], dtype=torch.float64, device=acc.device)).sum(0).tolist()


def _rescored(ctx: RunContext, examples, prompts, rollout: Rollout, scores: Scores, groups: list[int]) -> Scores:
    """`scores` with the rows of `groups` scored again, each group whole."""
    G = ctx.cfg.rollout.group_size
    idx = torch.tensor([g * G + j for g in groups for j in range(G)])
    new = score(ctx, [examples[g] for g in groups], [prompts[i] for i in idx.tolist()], take(rollout, idx), G)
    total = scores.total.clone()
    total[idx] = new.total.to(total.dtype)
    components = {k: v.clone() for k, v in scores.components.items()}
    for k, v in new.components.items():
        components[k][idx] = v.to(components[k].dtype)
    return Scores(total, components, scores.errors + new.errors)


def replay(
    ctx: RunContext, examples: Sequence[Example], prompts: list[str], rollout: Rollout, scores: Scores
) -> tuple[Rollout, Scores, torch.Tensor | None, dict[str, float]]:
    """Replace one member of each flat group that the buffer can lift, then remember the step's rows.

    Returns the rollout and scores to train on, a [N] bool mask of replaced rows (None: buffer off)
    and the metrics above. `examples` are the groups' examples, one per G rows of `prompts`."""
    buffer = ctx.experience
    if buffer is None:
        return rollout, scores, None, {}
    G, tok = ctx.cfg.rollout.group_size, ctx.tokenizer
    best = [buffer.best_for(ex.prompt) for ex in examples]
    chosen = groups_to_replay(scores.total, G, [b.reward if b is not None else None for b in best])
    flat_before = float((scores.total.view(-1, G).amax(1) == scores.total.view(-1, G).amin(1)).sum())
    groups = chosen.nonzero().flatten().tolist()
    replayed = torch.zeros(len(prompts), dtype=torch.bool, device=rollout.completion_ids.device)
    if groups:
        rows = [g * G + G - 1 for g in groups]  # the last member of each group
        texts = [best[g].completion for g in groups]
        made = [completion_tokens(x, tok.eos_token_id, ctx.max_new_tokens) for x in ctx.token_ids(texts)]
        rollout = replace_completions(
            rollout, rows, [ids for ids, _ in made], [cut for _, cut in made], texts, tok.pad_token_id
        )
        scores = _rescored(ctx, examples, prompts, rollout, scores, groups)
        replayed[rows] = True
    # keyed by the example's own prompt, as looked up above: the built prompt may change between steps
    remember(ctx, [ex.prompt for ex in examples for _ in range(G)], rollout.texts, scores.total.tolist())
    n_replayed, n_flat, n_groups = _summed(ctx, [float(len(groups)), flat_before, float(len(examples))])
    return (
        rollout,
        scores,
        replayed,
        {
            "train/replayed": n_replayed,
            "train/frac_zero_std_groups_sampled": n_flat / max(n_groups, 1.0),
            "train/experience_rows": float(len(buffer)),
        },
    )


def remember(ctx: RunContext, prompts: list[str], texts: list[str], rewards: list[float]) -> None:
    """Offer this step's rows to the buffer: every process's rows, in rank order, on every process.
    `prompts` are the rows' keys: their examples' own prompts."""
    floor = ctx.experience.min_reward
    rows = [(p, c, r) for p, c, r in zip(prompts, texts, rewards) if r > floor]  # only these can enter
    parts = [rows]
    if ctx.accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        parts = gather_object([rows])  # one list per process, in rank order
    for part in parts:
        if part:
            ctx.experience.add(*zip(*part))
