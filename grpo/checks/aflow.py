"""Rules of task=aflow: its files, the prompt switches, and a reward that runs the workflows."""

from __future__ import annotations

from grpo.checks.rules import at_least, require
from grpo.config.schema import RunConfig
from grpo.rewards.aflow.components import AFLOW_COMPONENTS
from grpo.rewards.components import resolve
from grpo.tasks.aflow import load_descriptions

WORKFLOW_REWARDS = tuple(AFLOW_COMPONENTS.values())


def scored_components(cfg: RunConfig) -> dict[str, float]:
    """The components the scorer will weigh (grpo/rewards/scorer.py's choice by reward.type)."""
    r = cfg.reward
    if r.type == "lever":
        return {"beam_score" if r.quality_source == "file" else "quality": r.alpha, "correctness": r.beta}
    if r.type == "tiered":
        return {"tiered": 1.0}
    return dict(r.weights)


def check_aflow(cfg: RunConfig) -> None:
    """task=aflow (its records are checked as the jsonl task's): the operator descriptions load when the
    enhancer is on, and some weighted component runs the workflow (conf/task/aflow.yaml maps the plain
    names to the aflow_ ones)."""
    r = cfg.rollout
    at_least(
        "rollout.prompt_optimizer.num_examples", r.prompt_optimizer.num_examples, 1 if r.prompt_optimizer.enabled else 0
    )
    if cfg.task.name != "aflow":
        for key, on in (
            ("rollout.prompt_optimizer.enabled", r.prompt_optimizer.enabled),
            ("rollout.operator_prompt_enhancer.enabled", r.operator_prompt_enhancer.enabled),
        ):
            require(not on, key, on, f"shapes the prompt of task=aflow only (task.name is {cfg.task.name})")
        return
    if r.operator_prompt_enhancer.enabled:
        load_descriptions(cfg.reward.executor.operator_descriptions_path)
    custom = dict(cfg.reward.custom)
    runs = [n for n, w in scored_components(cfg).items() if w and resolve(n, custom) in WORKFLOW_REWARDS]
    require(
        bool(runs),
        "reward.weights",
        dict(cfg.reward.weights),
        "task=aflow scores a workflow by running it: weigh aflow_correctness, aflow_efficiency, aflow_code_quality "
        "or aflow_tiered (or their plain names, which conf/task/aflow.yaml maps to them)",
    )
