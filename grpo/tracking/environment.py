"""The software a run ran on: Python and the versions of the libraries that change its numbers.

Logged as `env.*` params with every run; `grpo.rerun` names the ones that differ now.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from importlib import metadata

PREFIX = "env."
PACKAGES = ("torch", "transformers", "peft", "accelerate", "vllm")  # vllm only when installed


def environment() -> dict[str, str]:
    """`env.python`, `env.torch`, ... for the packages installed here."""
    out = {f"{PREFIX}python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[f"{PREFIX}{name}"] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def environment_changes(recorded: Mapping[str, str], now: Mapping[str, str] | None = None) -> list[str]:
    """`torch 2.5.1 -> 2.6.0` for each recorded version that differs now (`vllm 0.8 -> absent`)."""
    now = environment() if now is None else now
    keys = sorted(k for k in {*recorded, *now} if k.startswith(PREFIX))
    changes = []
    for key in keys:
        before, after = recorded.get(key), now.get(key)
        if key in recorded and before != after:
            changes.append(f"{key[len(PREFIX) :]} {before} -> {after or 'absent'}")
        elif key not in recorded and recorded and any(k.startswith(PREFIX) for k in recorded):
            changes.append(f"{key[len(PREFIX) :]} absent -> {after}")
    return changes
