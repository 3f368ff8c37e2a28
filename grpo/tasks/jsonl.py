"""Datasets from JSONL files: one record per line, read as a stream with line numbers.

A record:

    {"prompt": "What is 7*8?", "answer": "56", "domain": "math"}
    {"prompt": "f(x): double x", "answer": "def f(x): return 2*x", "domain": "code",
     "tests": ["assert f(2) == 4"], "meta": {"source": "handwritten"}}

- prompt: required, a non-empty string.
- answer: a string (numbers are turned into strings); may be left out when `tests` are given,
  or when the record has offline `candidates` (then: the best-scored correct candidate).
- domain: the mixing key of `task.domain_ratios`; "default" when left out.
- tests: optional list of Python statements (assertions) the completion's program must pass.
- meta: optional object, kept with the example. `meta.answer_pattern` overrides the regex that
  reads the answer out of a completion; by default it follows the domain (DOMAIN_PATTERNS).
- candidates / score_list / correct_list: offline candidates (grpo/tasks/candidates.py), ignored here.
- any other key is kept in meta.

Splits: train from task.train_path; validation from task.val_path, or else a seeded
task.val_fraction of the train file, drawn per domain; test from task.test_path.
task.train_size caps the train split (a seeded subset, e.g. seed 004's 100 / 200 / 400) and must
not exceed it, since epochs are counted from it; task.val_size caps the validation split.

Errors name the file and line, in one line (`DataError`); relative paths are looked up in the
current directory, then in the project root (grpo/tasks/files.py).
"""

from __future__ import annotations

import functools
import os
import random
import re
from typing import Any

from grpo.config.errors import ConfigError
from grpo.config.schema import TaskConfig
from grpo.tasks.base import Example, Task
from grpo.tasks.candidates import parse_candidates
from grpo.tasks.files import DataError, iter_jsonl, resolve_path

NUMBER_PATTERN = r"-?\d+(?:\.\d+)?"
LINE_PATTERN = r"\S[^\n]*"  # the first non-blank line
# Regex of the answer in a completion, per domain; other domains use LINE_PATTERN.
DOMAIN_PATTERNS = {"math": NUMBER_PATTERN, "code": r"[\s\S]+"}
RECORD_KEYS = ("prompt", "answer", "domain", "tests", "meta")
CANDIDATE_KEYS = ("candidates", "score_list", "correct_list")


def _text(value: Any, where: str, key: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DataError(f"{where}: '{key}' must be a string, got {type(value).__name__}")
    return value if isinstance(value, str) else str(value)


def best_correct_candidate(obj: dict) -> str | None:
    """The text of the highest-scored correct candidate of a candidates record, if any."""
    try:
        found = [c for c in parse_candidates(obj, "") if c.correct > 0]
    except DataError:
        return None
    return max(found, key=lambda c: c.score).text if found else None


def parse_example(obj: dict, path: str, line_no: int) -> Example:
    where = f"{path}:{line_no}"
    if "prompt" not in obj:
        raise DataError(f"{where}: missing 'prompt' (a record has: {', '.join(RECORD_KEYS)})")
    prompt = _text(obj["prompt"], where, "prompt")
    if not prompt.strip():
        raise DataError(f"{where}: 'prompt' is empty")
    tests = obj.get("tests")
    if tests is not None:
        if isinstance(tests, str):
            tests = [tests]
        if not isinstance(tests, list) or not all(isinstance(t, str) for t in tests):
            raise DataError(f"{where}: 'tests' must be a list of strings (Python statements)")
        tests = tuple(tests) or None
    if "answer" in obj and obj["answer"] is not None:
        answer = _text(obj["answer"], where, "answer")
    elif tests or "candidates" in obj:
        answer = (best_correct_candidate(obj) or "") if "candidates" in obj else ""
    else:
        raise DataError(f"{where}: missing 'answer' (only records with 'tests' or 'candidates' may leave it out)")
    domain = _text(obj.get("domain", "default"), where, "domain")
    meta = obj.get("meta") or {}
    if not isinstance(meta, dict):
        raise DataError(f"{where}: 'meta' must be an object")
    meta = {**{k: v for k, v in obj.items() if k not in RECORD_KEYS and k not in CANDIDATE_KEYS}, **meta}
    pattern = meta.get("answer_pattern", DOMAIN_PATTERNS.get(domain, LINE_PATTERN))
    try:
        re.compile(pattern)
    except (re.error, TypeError) as exc:
        raise DataError(f"{where}: meta.answer_pattern {pattern!r} is not a valid regex ({exc})") from None
    meta["answer_pattern"] = pattern
    meta.setdefault("origin", f"{os.path.basename(path)}:{line_no}")  # where the record came from
    return Example(prompt=prompt, answer=answer, domain=domain, tests=tests, meta=meta)


@functools.lru_cache(maxsize=32)
def _read(path: str, mtime_ns: int, size: int) -> tuple[Example, ...]:
    examples = tuple(parse_example(obj, path, line_no) for line_no, obj in iter_jsonl(path))
    if not examples:
        raise DataError(f"{path}: no records")
    return examples


def read_examples(key: str, path: str) -> tuple[Example, ...]:
    """Every record of the file `path` (config key `key`), parsed; cached while the file is unchanged."""
    full = resolve_path(key, path)
    st = os.stat(full)
    return _read(full, st.st_mtime_ns, st.st_size)


def split_fraction(examples: tuple[Example, ...], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """(train, val): a seeded `fraction` of each domain's records held out, file order kept."""
    rng = random.Random(seed)
    held: set[int] = set()
    by_domain: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        by_domain.setdefault(ex.domain, []).append(i)
    for domain in sorted(by_domain):
        rows = by_domain[domain]
        n_val = min(len(rows) - 1, round(fraction * len(rows))) if len(rows) > 1 else 0
        held.update(rng.sample(rows, n_val))
    return ([ex for i, ex in enumerate(examples) if i not in held], [ex for i, ex in enumerate(examples) if i in held])


def _subset(examples: list[Example], size: int, seed: int) -> list[Example]:
    if size >= len(examples):
        return list(examples)
    keep = set(random.Random(seed).sample(range(len(examples)), size))
    return [ex for i, ex in enumerate(examples) if i in keep]


def splits(cfg: TaskConfig) -> tuple[list[Example], list[Example]]:
    """(train, val) of a jsonl task, before the size caps."""
    if not cfg.train_path:
        raise ConfigError("task.train_path", cfg.train_path, "the jsonl task needs a train file")
    records = read_examples("task.train_path", cfg.train_path)
    if cfg.val_path:
        return list(records), list(read_examples("task.val_path", cfg.val_path))
    return split_fraction(records, cfg.val_fraction, cfg.seed)


def validate(cfg: TaskConfig) -> tuple[str, ...]:
    """Read and check every file of a jsonl task (raises ConfigError / DataError); its train domains."""
    if not 0 <= cfg.val_fraction < 1:
        raise ConfigError("task.val_fraction", cfg.val_fraction, "must be in [0, 1)")
    train, val = splits(cfg)
    if not val:
        raise ConfigError(
            "task.val_fraction",
            cfg.val_fraction,
            "leaves no validation records (set task.val_path, or a larger fraction of a larger file)",
        )
    if cfg.train_size > len(train):
        raise ConfigError(
            "task.train_size",
            cfg.train_size,
            f"the train split has {len(train)} records; set task.train_size={len(train)} or less "
            "(it caps the split, and epochs are counted from it)",
        )
    if cfg.test_path:
        read_examples("task.test_path", cfg.test_path)
    return tuple(sorted({ex.domain for ex in train}))


def load_split(cfg: TaskConfig, split: str) -> list[Example]:
    """The examples of one split ("train", "val" or "test") as the task uses them."""
    if split == "test":
        if not cfg.test_path:
            raise ConfigError("task.test_path", None, "no test split: set task.test_path=FILE, or evaluate --split val")
        return list(read_examples("task.test_path", cfg.test_path))
    train, val = splits(cfg)
    if split == "train":
        return _subset(train, cfg.train_size, cfg.seed + 2)
    if split == "val":
        random.Random(cfg.seed + 1).shuffle(val)  # interleave domains so a prefix of val covers all
        return val[: cfg.val_size]
    raise ValueError(f"unknown split {split!r}; choose train, val or test")


def build_jsonl_task(cfg: TaskConfig) -> Task:
    validate(cfg)
    return Task(
        name="jsonl",
        train=tuple(load_split(cfg, "train")),
        val=tuple(load_split(cfg, "val")),
        answer_pattern=LINE_PATTERN,
        answer_space=None,
    )


def domains(cfg: TaskConfig) -> tuple[str, ...] | None:
    """The domains of the train split, or None (any domain) while no train file is given."""
    return validate(cfg) if cfg.train_path else None
