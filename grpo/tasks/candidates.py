"""Offline candidates (seed 004's beam data): scored completions per prompt, read from JSONL.

A record, one per prompt:

    {"prompt": "7+5=", "answer": "12", "domain": "math",
     "candidates": [{"text": "12", "score": 0.61, "correct": 1},
                    {"text": "13", "score": 0.22, "correct": 0}]}

or, in the beam files' own layout, parallel lists:

    {"prompt": "7+5=", "candidates": ["12", "13"], "score_list": [0.61, 0.22], "correct_list": [1, 0]}

- score: the beam score, Lever's quality (reward.quality_source=file reads it).
- correct: 0/1 (or true/false), the label of the candidate; seed 004 cannot recompute it.
- answer, domain, tests, meta: as in a dataset record (grpo/tasks/jsonl.py), so one file can be
  both the train split (task.train_path) and the candidates (task.candidates_path).

Groups may differ in size. The RCE stage (algorithm.rce.candidates=file) takes each prompt's
top `algorithm.rce.num_candidates` by score (Lever's top-k) and pads a step's groups to the
largest one with masked rows that carry no weight (grpo/stages/rce.py).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from grpo.tasks.files import DataError, iter_jsonl, resolve_path


@dataclass(frozen=True)
class Candidate:
    text: str
    score: float
    correct: float  # 0 or 1


@dataclass(frozen=True)
class CandidateFile:
    path: str
    groups: dict[str, tuple[Candidate, ...]]  # prompt -> candidates, best score first

    def top(self, prompt: str, k: int | None = None) -> tuple[Candidate, ...]:
        """The prompt's `k` best-scored candidates (all when k is None)."""
        if prompt not in self.groups:
            raise DataError(
                f"{self.path}: no candidates for the prompt {prompt!r} (task.candidates_path must cover "
                "every train prompt)",
                key="task.candidates_path",
                value=self.path,
            )
        group = self.groups[prompt]
        return group if k is None else group[:k]

    def lookup(self, prompt: str, text: str) -> Candidate | None:
        """The candidate of `prompt` whose text is `text` (surrounding blanks ignored), if any."""
        for cand in self.groups.get(prompt, ()):
            if cand.text.strip() == text.strip():
                return cand
        return None

    def columns(self, prompts: Sequence[str], texts: Sequence[str]) -> dict[str, list]:
        """Reward columns for completions: the file's score and label where a completion is a candidate."""
        found = [self.lookup(p, t) for p, t in zip(prompts, texts)]
        return {
            "candidate_score": [c.score if c else None for c in found],
            "candidate_correct": [c.correct if c else None for c in found],
        }


def _number(value: Any, where: str, what: str) -> float:
    if isinstance(value, bool):
        return float(value)
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(f"{where}: {what} must be a finite number, got {value!r}")
    return float(value)


def parse_candidates(obj: dict, where: str) -> list[Candidate]:
    """The candidates of one record, in either layout."""
    raw = obj.get("candidates")
    if not isinstance(raw, list) or not raw:
        raise DataError(f"{where}: 'candidates' must be a non-empty list")
    if all(isinstance(c, str) for c in raw):  # parallel lists: candidates, score_list, correct_list
        scores, labels = obj.get("score_list"), obj.get("correct_list")
        if not isinstance(scores, list) or len(scores) != len(raw):
            raise DataError(f"{where}: 'score_list' must be a list as long as 'candidates' ({len(raw)})")
        if not isinstance(labels, list) or len(labels) != len(raw):
            raise DataError(f"{where}: 'correct_list' must be a list as long as 'candidates' ({len(raw)})")
        raw = [{"text": t, "score": s, "correct": c} for t, s, c in zip(raw, scores, labels)]
    out = []
    for j, cand in enumerate(raw):
        at = f"{where}: candidates[{j}]"
        if not isinstance(cand, dict) or not isinstance(cand.get("text"), str):
            raise DataError(f"{at} must be an object with a string 'text'")
        for key in ("score", "correct"):
            if key not in cand:
                raise DataError(f"{at}: missing '{key}' (a candidate has: text, score, correct)")
        correct = _number(cand["correct"], at, "'correct'")
        if correct not in (0.0, 1.0):
            raise DataError(f"{at}: 'correct' must be 0 or 1, got {cand['correct']!r}")
        out.append(Candidate(cand["text"], _number(cand["score"], at, "'score'"), correct))
    return out


@functools.lru_cache(maxsize=8)
def _read(path: str, mtime_ns: int, size: int) -> CandidateFile:
    groups: dict[str, tuple[Candidate, ...]] = {}
    first_line: dict[str, int] = {}
    for line_no, obj in iter_jsonl(path):
        where = f"{path}:{line_no}"
        prompt = obj.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise DataError(f"{where}: missing 'prompt' (a candidates record has: prompt, answer?, candidates)")
        if prompt in groups:
            raise DataError(f"{where}: the prompt {prompt!r} was already given at line {first_line[prompt]}")
        first_line[prompt] = line_no
        groups[prompt] = tuple(sorted(parse_candidates(obj, where), key=lambda c: -c.score))
    if not groups:
        raise DataError(f"{path}: no records")
    return CandidateFile(path, groups)


def load_candidates(path: str, key: str = "task.candidates_path") -> CandidateFile:
    """The candidates file (config key `key`), parsed; cached while the file is unchanged."""
    full = resolve_path(key, path)
    st = os.stat(full)
    return _read(full, st.st_mtime_ns, st.st_size)
