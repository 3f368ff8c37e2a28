"""Range rules of the experience buffer, GRPO's candidate source and seed 004's grpo_top_k schedule."""

from __future__ import annotations

import math

from grpo.checks.rules import at_least, one_of, require
from grpo.config.schema import RunConfig

GRPO_CANDIDATES = ("policy", "file")


def check_experience(cfg: RunConfig) -> None:
    e, r, k = cfg.rollout.experience_buffer, cfg.rollout, cfg.schedule.grpo_top_k
    at_least("rollout.experience_buffer.buffer_size", e.buffer_size, 0, " (0: off)")
    at_least("rollout.experience_buffer.per_prompt", e.per_prompt, 1)
    require(math.isfinite(e.min_reward), "rollout.experience_buffer.min_reward", e.min_reward, "must be finite")
    one_of("rollout.candidates", r.candidates, GRPO_CANDIDATES)
    require(
        r.candidates != "file" or bool(cfg.task.candidates_path),
        "rollout.candidates",
        r.candidates,
        "file needs task.candidates_path (the offline candidates of every train prompt)",
    )
    if k.early is not None:
        at_least("schedule.grpo_top_k.early", k.early, 1)
        require(
            r.candidates == "file",
            "schedule.grpo_top_k.early",
            k.early,
            "counts offline candidates per GRPO group: needs rollout.candidates=file",
        )
    if k.late is not None:
        require(k.early is not None, "schedule.grpo_top_k.late", k.late, "needs schedule.grpo_top_k.early")
        at_least("schedule.grpo_top_k.late", k.late, 1)
    at_least("schedule.grpo_top_k.switch_epoch", k.switch_epoch, 0)
