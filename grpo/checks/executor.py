"""Rules of the executor LLM (reward.executor) and of the LLM judge (reward.judge)."""

from __future__ import annotations

import os
import re

from grpo.checks.rules import at_least, one_of, positive, require
from grpo.config.schema import RunConfig
from grpo.rewards.executor import CACHE_MODES

TEMPLATE_FIELDS = ("prompt", "completion", "answer", "scale")


def check_executor(cfg: RunConfig) -> None:
    """reward.executor's keys, then reward.judge's."""
    e = cfg.reward.executor
    require(bool(e.model), "reward.executor.model", e.model, "must name the model the server serves")
    one_of("reward.executor.cache", e.cache, CACHE_MODES)
    positive("reward.executor.timeout", e.timeout)
    positive("reward.executor.max_tokens", e.max_tokens)
    positive("reward.executor.max_concurrency", e.max_concurrency)
    at_least("reward.executor.max_retries", e.max_retries, 0)
    at_least("reward.executor.temperature", e.temperature, 0)
    at_least("reward.executor.price_per_million_input_tokens", e.price_per_million_input_tokens, 0)
    at_least("reward.executor.price_per_million_output_tokens", e.price_per_million_output_tokens, 0)
    require(
        bool(e.api_key_env) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", e.api_key_env) is not None,
        "reward.executor.api_key_env",
        e.api_key_env,
        "must be the name of an environment variable (the key itself is never written in the config)",
    )
    if e.cache == "read_only" and e.cache_path is not None:
        require(
            os.path.isfile(e.cache_path),
            "reward.executor.cache_path",
            e.cache_path,
            "cache=read_only replays an existing cache: no such file (a run with cache=read_write writes one)",
        )
    check_judge(cfg)


def check_judge(cfg: RunConfig) -> None:
    j = cfg.reward.judge
    positive("reward.judge.scale", j.scale)
    try:
        pattern = re.compile(j.pattern)
    except re.error as exc:
        require(False, "reward.judge.pattern", j.pattern, f"is not a regular expression ({exc})")
    require(pattern.groups >= 1, "reward.judge.pattern", j.pattern, "needs a group capturing the number: (\\d+)")
    shown = j.template if len(j.template) <= 40 else j.template[:40] + "..."
    try:
        j.template.format(**{name: "" for name in TEMPLATE_FIELDS})
    except (KeyError, IndexError, ValueError) as exc:
        require(
            False,
            "reward.judge.template",
            shown,
            f"may use only {{prompt}}, {{completion}}, {{answer}}, {{scale}} ({type(exc).__name__}: {exc})",
        )
    require("{completion}" in j.template, "reward.judge.template", shown, "must contain {completion}")
