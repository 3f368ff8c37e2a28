"""What a task is: examples with a verifiable answer, split into train and validation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Example:
    prompt: str
    answer: str
    domain: str
    tests: Sequence[str] | None = None  # code domain: assertions a program must pass
    meta: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Task:
    name: str
    train: Sequence[Example]
    val: Sequence[Example]
    answer_pattern: str  # regex of a well-formed answer (format reward, answer parsing)
    # The finite answer space, when there is one (numgame: 0/1/2): RCE can score every candidate.
    answer_space: Sequence[str] | None = None

    @property
    def domains(self) -> tuple[str, ...]:
        return tuple(sorted({ex.domain for ex in self.train}))
