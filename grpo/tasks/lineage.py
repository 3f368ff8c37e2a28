"""What data a run read, as digests: each JSONL file, or the examples a built-in generator made.

A run logs one `DataSource` per file it reads (train, val, test, candidates) or, for a built-in
task, per generated split: its digest, where it came from, and the config values that chose it
(`task.train_path=...`, or the generator's name, seed and sizes). MLflow keeps them as dataset
inputs and as `data.<role>.digest` / `data.<role>.source` params; `grpo.rerun` compares them
with the data found now, and `grpo.compare` with each other.

A file's digest is over its bytes, so editing one line changes it; a generated split's is over
its examples (domain, prompt, answer), so a change in the generator's code changes it too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from grpo.config.schema import TaskConfig
from grpo.tasks.base import Example, Task
from grpo.tasks.files import resolve_path

DIGEST_CHARS = 16  # hex characters of sha256 kept (MLflow's dataset digest holds at most 36)
PARAM_PREFIX = "data."
FILE_ROLES = (
    ("train", "train_path"),
    ("val", "val_path"),
    ("test", "test_path"),
    ("candidates", "candidates_path"),
)
GENERATOR_KEYS = ("name", "seed", "train_size", "val_size", "max_number")


@dataclass(frozen=True)
class DataSource:
    role: str  # train | val | test | candidates
    name: str  # the file's name, or the generated split's (numgame-train)
    digest: str
    source: str  # the file's absolute path, or the generator and its parameters
    source_type: str  # "local" (a file) | "code" (a generator)
    records: int
    config: dict[str, Any] = field(default_factory=dict)  # the task.* values that chose this data

    def params(self) -> dict[str, str]:
        return {f"{PARAM_PREFIX}{self.role}.digest": self.digest, f"{PARAM_PREFIX}{self.role}.source": self.source}


def file_digest(path: str) -> tuple[str, int]:
    """(digest of the file's bytes, its non-blank lines)."""
    h, lines = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for line in f:
            h.update(line)
            lines += bool(line.strip())
    return h.hexdigest()[:DIGEST_CHARS], lines


def examples_digest(examples: Sequence[Example]) -> str:
    h = hashlib.sha256()
    for ex in examples:
        h.update(f"{ex.domain}\t{ex.prompt}\t{ex.answer}\t{list(ex.tests or ())}\n".encode())
    return h.hexdigest()[:DIGEST_CHARS]


def file_sources(cfg: TaskConfig) -> list[DataSource]:
    """One DataSource per configured JSONL file (train, val, test, candidates)."""
    out = []
    for role, key in FILE_ROLES:
        path = getattr(cfg, key)
        if not path:
            continue
        full = resolve_path(f"task.{key}", path)
        digest, lines = file_digest(full)
        name = full.rsplit("/", 1)[-1]
        out.append(DataSource(role, name, digest, full, "local", lines, {f"task.{key}": path}))
    return out


def generator_sources(cfg: TaskConfig, task: Task) -> list[DataSource]:
    """The built-in generator's train and val splits, with its parameters and seed."""
    params = {f"task.{k}": getattr(cfg, k) for k in GENERATOR_KEYS}
    text = " ".join(f"{k}={getattr(cfg, k)}" for k in GENERATOR_KEYS[1:])
    return [
        DataSource(
            role,
            f"{cfg.name}-{role}",
            examples_digest(examples),
            f"grpo.tasks.builtin:{cfg.name} {text}",
            "code",
            len(examples),
            params,
        )
        for role, examples in (("train", task.train), ("val", task.val))
    ]


def data_sources(cfg: TaskConfig, task: Task | None = None) -> list[DataSource]:
    """What a run with this task config reads; a built-in task is built when `task` is not given."""
    if cfg.name in ("jsonl", "aflow"):  # aflow reads jsonl files too
        return file_sources(cfg)
    if task is None:
        from grpo.tasks.registry import build_task

        task = build_task(cfg)
    return generator_sources(cfg, task)


def recorded_digests(params: Mapping[str, str]) -> dict[str, str]:
    """role -> digest, from a run's logged params."""
    suffix = ".digest"
    return {
        k[len(PARAM_PREFIX) : -len(suffix)]: v
        for k, v in params.items()
        if k.startswith(PARAM_PREFIX) and k.endswith(suffix)
    }


def fingerprint(params: Mapping[str, str], roles: Sequence[str] = ("train", "val", "candidates")) -> str | None:
    """One short digest of the data a run trained and validated on (None: the run logged none)."""
    digests = recorded_digests(params)
    chosen = [f"{r}={digests[r]}" for r in roles if r in digests]
    return hashlib.sha256(";".join(chosen).encode()).hexdigest()[:8] if chosen else None
