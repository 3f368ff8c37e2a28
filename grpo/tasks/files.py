"""JSONL data files: where a configured path points, and a line-numbered stream of its records.

Shared by datasets (grpo/tasks/jsonl.py) and offline candidates (grpo/tasks/candidates.py).
Errors name the file and line, in one line (`DataError`, a ConfigError, so `grpo.run`'s
pre-flight prints it as `error: <line>` before anything starts). Relative paths are looked up
in the current directory, then in the project root (where experiments/ lives).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from grpo.config.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class DataError(ConfigError):
    """A data file breaks the format: one line that names the file and the line."""

    def __init__(self, message: str, key: str = "task", value: Any = None):
        ValueError.__init__(self, message)
        self.key, self.value, self.rule = key, value, message


def resolve_path(key: str, path: str) -> str:
    """An existing file for config key `key`: as given, or relative to the cwd, then the project root."""
    candidates = [Path(path)] if os.path.isabs(path) else [Path.cwd() / path, PROJECT_ROOT / path]
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate.resolve())
    where = " or ".join(str(c.parent) for c in candidates)
    raise ConfigError(key, path, f"no such file (looked in {where})")


def iter_jsonl(path: str) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-blank line; a malformed line raises DataError naming it."""
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}:{line_no}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{line_no}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{line_no}: expected a JSON object, got {type(obj).__name__}")
            yield line_no, obj
