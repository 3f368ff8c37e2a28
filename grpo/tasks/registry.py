"""Task name -> Task, built from the typed `task` config."""

from __future__ import annotations

import random

from grpo.config.errors import ConfigError
from grpo.config.schema import TaskConfig
from grpo.tasks import aflow, jsonl
from grpo.tasks.base import Task
from grpo.tasks.builtin import INTEGER_PATTERN, generate

# task name -> (domains, answer pattern, finite answer space or None)
BUILTIN: dict[str, tuple[tuple[str, ...], str, tuple[str, ...] | None]] = {
    "numgame": (("qa",), "[012]", ("0", "1", "2")),
    "arithmetic": (("math",), INTEGER_PATTERN, None),
    "mixed": (("code", "math", "qa"), INTEGER_PATTERN, None),
}


def domains_of(name: str, cfg: TaskConfig | None = None) -> tuple[str, ...] | None:
    """The task's domains. jsonl: those of its train file (read and checked), or None (any
    domain) when no config or no train file is given."""
    if name in ("jsonl", "aflow"):  # aflow: jsonl records answered by workflows (grpo/tasks/aflow.py)
        return jsonl.domains(cfg) if cfg is not None else None
    if name not in BUILTIN:
        raise ConfigError("task.name", name, f"must be one of {', '.join([*BUILTIN, 'jsonl', 'aflow'])}")
    return BUILTIN[name][0]


def build_task(cfg: TaskConfig) -> Task:
    if cfg.name == "jsonl":  # records from files (grpo/tasks/jsonl.py)
        return jsonl.build_jsonl_task(cfg)
    if cfg.name == "aflow":
        return aflow.build_aflow_task(cfg)
    domains, pattern, answer_space = BUILTIN[cfg.name] if cfg.name in BUILTIN else (domains_of(cfg.name), "", None)
    rng = random.Random(cfg.seed)
    train, val = [], []
    for i, domain in enumerate(domains):
        # Split sizes per domain: the held-out prompts never appear in training.
        n_train = cfg.train_size // len(domains) + (1 if i < cfg.train_size % len(domains) else 0)
        n_val = cfg.val_size // len(domains) + (1 if i < cfg.val_size % len(domains) else 0)
        dom_val = generate(domain, n_val, rng, cfg.max_number)
        dom_train = generate(domain, n_train, rng, cfg.max_number, exclude=frozenset(e.prompt for e in dom_val))
        train += dom_train
        val += dom_val
    random.Random(cfg.seed + 1).shuffle(val)  # interleave domains so a prefix of val covers all
    return Task(name=cfg.name, train=tuple(train), val=tuple(val), answer_pattern=pattern, answer_space=answer_space)
