"""Rows of a rollout: micro-batch slices, row selection and stacking rollouts of different widths."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from grpo.rollout.engine import Rollout


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
        rollout.logprobs[rows] if rollout.logprobs is not None else None,
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
        torch.cat([right(r.logprobs, C, 0.0) for r in parts]) if all(r.logprobs is not None for r in parts) else None,
    )
