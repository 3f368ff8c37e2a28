"""Reading the answer out of a completion and judging it against the gold answer.

Shared by the reward components (grpo/rewards/components.py), the tiered reward
(grpo/rewards/tiered.py) and in-run validation, so all of them agree on what "correct" means.
"""

from __future__ import annotations

import math
import re


def parse_answer(completion: str, pattern: str) -> str | None:
    """The first well-formed answer in the completion, or None."""
    match = re.search(pattern, completion)
    return match.group(0) if match else None


def _matches(pred: str | None, gold: str, tolerance: float) -> bool:
    if pred is None:
        return False
    if pred.strip() == gold.strip():
        return True
    try:
        return math.isfinite(float(pred)) and abs(float(pred) - float(gold)) <= tolerance
    except ValueError:
        return False


_CHOICE_GOLD = re.compile(r"\(?([A-E])\)?\.?")
# Where a choice letter is read from, most explicit first: "answer is (B)", "option B", "(B)", a leading "B."/"B)".
_CHOICE_PATTERNS = (
    re.compile(r"answer\s*(?:is|:)?\s*\(?([A-E])\b", re.IGNORECASE),
    re.compile(r"\b(?:option|choice)\s*\(?([A-E])\b", re.IGNORECASE),
    re.compile(r"\(([A-E])\)", re.IGNORECASE),
    re.compile(r"^\s*([A-E])(?:[.):]|\s*$)", re.IGNORECASE),
)


def choice_letter(completion: str) -> str | None:
    """The multiple-choice letter (A-E) a completion picks, or None."""
    for pattern in _CHOICE_PATTERNS:
        match = pattern.search(completion)
        if match:
            return match.group(1).upper()
    return None


def gold_choice(gold: str) -> str | None:
    """The letter when the gold answer is a choice letter ("B", "(B)", "B."), else None."""
    match = _CHOICE_GOLD.fullmatch(gold.strip())
    return match.group(1) if match else None


def predicted_answer(completion: str, gold: str, pattern: str) -> str | None:
    """The answer a completion gives: a choice letter for choice items, else the first match of `pattern`."""
    return choice_letter(completion) if gold_choice(gold) else parse_answer(completion, pattern)


def is_correct(pred: str | None, gold: str, tolerance: float) -> bool:
    letter = gold_choice(gold)
    return pred == letter if letter else _matches(pred, gold, tolerance)
