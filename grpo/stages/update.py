"""The optimizer update both stages share: backward a micro-batch, then clip and step once."""

from __future__ import annotations

import math

import torch

from grpo.context import RunContext


def update(ctx: RunContext, loss: torch.Tensor, optimizer, scheduler, losses_finite: bool) -> tuple[float, bool]:
    """Backward one micro-batch; on the last one, clip and step unless anything is non-finite.

    `losses_finite` says whether every micro-batch loss of this update was finite. Returns
    (grad norm, whether the optimizer stepped). A non-finite loss or gradient skips the whole
    update (and the LR schedule with it); the recipe counts skips and stops after too many.
    """
    acc = ctx.accelerator
    with ctx.timer.phase("backward"):
        acc.backward(loss)
    if not acc.sync_gradients:
        return 0.0, False
    with ctx.timer.phase("optimizer"):
        grad_norm = ctx.parallel.clip_grad_norm(ctx.policy, ctx.cfg.trainer.max_grad_norm)
        stepped = losses_finite and math.isfinite(grad_norm)
        if stepped:
            optimizer.step()
            stepped = not getattr(optimizer, "step_was_skipped", False)  # fp16: the loss scaler may skip it
        optimizer.zero_grad(set_to_none=True)
        if stepped:
            scheduler.step()  # once per update, whatever the process count
            ctx.parallel.after_update(ctx.policy)  # e.g. the sampler's whole copy of sharded weights
    return grad_norm, stepped
