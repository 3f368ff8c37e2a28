"""Where a run resumes from, whether it may, and each process's random stream across a restart.

grpo/checkpoint.py is the format on disk; this module is what the recipe decides with it. Under
`accelerate launch` rank 0 owns the output directory, so it finds the checkpoint and every process
resumes from that one; a bad path fails on every process with the same line.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from grpo import checkpoint as ckpt
from grpo.config.errors import ConfigError

log = logging.getLogger("grpo")


def find_resume(mode: str, checkpoint_root: str) -> str | None:
    """`trainer.resume`: never, auto (the latest complete checkpoint, if any) or a checkpoint path."""
    if mode == "never":
        return None
    if mode == "auto":
        return ckpt.latest_checkpoint(checkpoint_root)
    if not os.path.isdir(mode):
        raise ConfigError("trainer.resume", mode, "no such checkpoint directory (use auto, never or a step_N path)")
    return mode


def shared_resume_path(accelerator, mode: str, checkpoint_root: str) -> str | None:
    """Rank 0's `find_resume`, broadcast to every process (a failure raised on all of them)."""
    found, problem = None, None
    if accelerator.is_main_process:
        try:
            found = find_resume(mode, checkpoint_root)
        except ConfigError as exc:
            problem = (exc.key, exc.value, exc.rule)
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        found, problem = broadcast_object_list([found, problem])
    if problem:
        raise ConfigError(*problem)
    return found


def write_shards(accelerator, ctx, optimizer, root: str, step: int) -> str:
    """Every process: checkpoint `step`'s staging directory, emptied by rank 0, with what the parallel
    strategy keeps in shards written into it by each process (FSDP); rank 0 writes the rest."""
    staging = ckpt.staging_dir(root, step)
    if accelerator.is_main_process:
        ckpt.reset_dir(staging)
    accelerator.wait_for_everyone()
    ctx.parallel.save_shards(staging, ctx.policy, optimizer)
    return staging


def restore_training(accelerator, ctx, sampler, training: dict, seed: int, step: int) -> None:
    """A checkpoint's data order, random streams, KL controller, experience buffer, prompt memory and
    executor totals."""
    sampler.load_state_dict(training["sampler"])
    restore_rng(accelerator, training.get("rng_per_rank") or [training["rng"]], seed, step)
    if training.get("kl_ctrl"):
        ctx.kl_ctrl.load_state_dict(training["kl_ctrl"])
    if training.get("experience") is not None and ctx.experience is not None:
        ctx.experience.load_state_dict(training["experience"])
    if training.get("prompts"):  # absent from checkpoints written before the prompts had a memory
        ctx.prompts.load_state_dict(training["prompts"])
    ctx.executor_totals.update(training.get("executor_totals") or {})


def rank0_value(accelerator, value):
    """Rank 0's `value` on every process (e.g. its checkpoint directory: the others run in scratch ones)."""
    if accelerator.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value])[0]


def check_compatible(path: str, state: dict[str, Any], current: dict[str, Any]) -> None:
    """Refuse a checkpoint trained with another config (budgets, cadences and outputs may change)."""
    saved = state.get("config", {})
    differ = ckpt.incompatible_keys(saved, current)
    if differ:
        shown = ", ".join(f"{k} ({saved.get(k)!r} -> {current.get(k)!r})" for k in differ[:4])
        raise ConfigError(
            "trainer.resume",
            path,
            f"checkpoint was trained with another config: {shown}"
            f"{' ...' if len(differ) > 4 else ''}; use trainer.resume=never or another trainer.output_dir",
        )


def gather_rng_states(accelerator) -> list[dict]:
    """Each process's RNG state, in rank order: ranks sample differently, and a resumed
    data-parallel run must go on with each rank's own stream. A collective under DDP."""
    state = ckpt.rng_state()
    if accelerator.num_processes == 1:
        return [state]
    from accelerate.utils import gather_object

    return gather_object([state])


def restore_rng(accelerator, per_rank: list[dict], seed: int, step: int) -> None:
    """This process's saved stream; with another process count, rank 0 continues its stream and
    the others start fresh (deterministically, and apart from each other) rather than repeat it."""
    if len(per_rank) == accelerator.num_processes:
        ckpt.set_rng_state(per_rank[accelerator.process_index])
        return
    from accelerate.utils import set_seed

    ckpt.set_rng_state(per_rank[0])
    if accelerator.process_index > 0:
        set_seed(seed + accelerator.process_index + 100_003 * step)
    if accelerator.is_main_process:
        log.warning(
            "checkpoint saved by %d process(es), resumed by %d: only rank 0 continues its random stream; "
            "the run is reproducible but differs from an uninterrupted one",
            len(per_rank),
            accelerator.num_processes,
        )
