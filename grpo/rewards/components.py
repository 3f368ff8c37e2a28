"""Reward components. Each follows TRL's reward contract:

    fn(prompts: list[str], completions: list[str], **columns) -> list[float]

where `columns` are aligned lists: answer, domain, truncated (no EOS before the length
limit), answer_pattern (regex of a well-formed answer), completion_logp_mean (mean token
log-prob under the policy) and the reward config's options (numeric_tolerance, ...).
"""

from __future__ import annotations

import ast
import math
import re
from typing import Callable, Optional

RewardFn = Callable[..., list[float]]


def parse_answer(completion: str, pattern: str) -> Optional[str]:
    """The first well-formed answer in the completion, or None."""
    match = re.search(pattern, completion)
    return match.group(0) if match else None


def _matches(pred: Optional[str], gold: str, tolerance: float) -> bool:
    if pred is None:
        return False
    if pred.strip() == gold.strip():
        return True
    try:
        return math.isfinite(float(pred)) and abs(float(pred) - float(gold)) <= tolerance
    except ValueError:
        return False


def correctness(prompts, completions, *, answer, answer_pattern, numeric_tolerance: float = 0.0, **_) -> list[float]:
    """1 when the first answer in the completion equals the gold answer (numbers: within tolerance)."""
    return [float(_matches(parse_answer(c, p), a, numeric_tolerance)) for c, a, p in zip(completions, answer, answer_pattern)]


def format_reward(prompts, completions, *, answer_pattern, truncated, **_) -> list[float]:
    """1 when the whole completion is one well-formed answer and it ended (EOS) on its own."""
    return [float(not t and re.fullmatch(p, c.strip()) is not None) for c, p, t in zip(completions, answer_pattern, truncated)]


def efficiency(prompts, completions, *, completion_length, max_new_tokens, **_) -> list[float]:
    """Shorter is cheaper: 1 - tokens used / token budget (AFlow rewarded cheap workflows)."""
    return [max(0.0, 1.0 - n / max(m, 1)) for n, m in zip(completion_length, max_new_tokens)]


def code_quality(prompts, completions, **_) -> list[float]:
    """1 when the completion is a syntactically valid Python expression."""
    out = []
    for c in completions:
        try:
            ast.parse(c.strip(), mode="eval")
            out.append(float(bool(c.strip())))
        except (SyntaxError, ValueError):
            out.append(0.0)
    return out


def quality(prompts, completions, *, completion_logp_mean, **_) -> list[float]:
    """Lever's beam score: the policy's confidence, exp(mean token log-prob), in [0, 1]."""
    return [math.exp(lp) for lp in completion_logp_mean]


COMPONENTS: dict[str, RewardFn] = {
    "correctness": correctness,
    "format": format_reward,
    "efficiency": efficiency,
    "code_quality": code_quality,
    "quality": quality,
}
