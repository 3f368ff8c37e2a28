"""Range rules: a bad value stops the run before anything starts, with one line naming it.

Types and unknown keys are enforced by the schema at compose time; these are the rules a type
cannot express. `check` raises the first violation as a `ConfigError`. One function per config
group; groups.py holds the original groups' rules, newer parts add a module of their own here.
"""

from __future__ import annotations

from collections.abc import Callable

from grpo.checks.aflow import check_aflow
from grpo.checks.executor import check_executor
from grpo.checks.experience import check_experience
from grpo.checks.groups import (
    ARCHITECTURES,
    check_algorithm,
    check_eval,
    check_generation,
    check_logger,
    check_lora,
    check_reward,
    check_reward_needs,
    check_rollout,
    check_schedule,
    check_task,
    check_trainer,
)
from grpo.checks.parallel import check_parallel
from grpo.checks.rules import one_of
from grpo.config.schema import RunConfig


def check(
    cfg: RunConfig, *, grpo_steps: int, warmup_steps: int, domains_of: Callable[[str], tuple[str, ...]] | None = None
) -> None:
    """Raise `ConfigError` for the first rule `cfg` breaks."""
    check_generation(cfg)
    check_rollout(cfg, grpo_steps)
    check_experience(cfg)
    check_lora(cfg)
    check_schedule(cfg, grpo_steps, warmup_steps)
    check_algorithm(cfg)
    check_reward(cfg)
    check_reward_needs(cfg)
    check_executor(cfg)
    check_task(cfg, domains_of)
    check_aflow(cfg)
    check_trainer(cfg)
    check_parallel(cfg)
    check_eval(cfg)
    check_logger(cfg)
    one_of("model.tiny.architecture", cfg.model.tiny.architecture, ARCHITECTURES)
