"""Seed 003's 5-tier reward (RewardComputerV2): one of five values per completion.

    tier 5  tiers[0] = 1.0  perfect          rule tier_rules[0]  (default: exact)
    tier 4  tiers[1] = 0.7  near-correct     rule tier_rules[1]  (default: near)
    tier 3  tiers[2] = 0.4  partial          rule tier_rules[2]  (default: partial)
    tier 2  tiers[3] = 0.2  has an attempt   rule tier_rules[3]  (default: attempt)
    tier 1  tiers[4] = 0.0  wrong            (everything else)

A completion gets the value of the highest tier whose rule it meets. The seed does not say how
a completion is placed in a tier; the rules below are ours, each a named test in `RULES`, with
one meaning for answer items and one for code items (items with tests, run in the sandbox):

    rule        answer items                                          code items
    exact       the parsed answer equals the gold one (numbers:      every test passes
                within reward.numeric_tolerance; choice letters)
    normalized  equal after lower-casing, dropping punctuation,      every test passes
                articles and extra spaces
    near        exact or normalized, or a number within relative     at least code_near_fraction
                error reward.near_tolerance (|p - g| / max(|g|, 1))   of the tests pass
    contains    the gold answer appears in the completion            at least one test passes
    partial     contains, or token F1 with the gold answer           at least one test passes
                >= partial_overlap
    attempt     a well-formed answer (answer_pattern) somewhere      the program runs without
                                                                     raising, within its limits
    nonempty    any non-blank output                                 any non-blank output

Timeouts, crashes, limit kills and huge outputs never meet a code rule: they score tiers[4].
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from grpo.rewards.answers import is_correct, predicted_answer
from grpo.rewards.code_exec import execute
from grpo.rewards.sandbox import ExecResult

DEFAULT_TIERS = (1.0, 0.7, 0.4, 0.2, 0.0)
DEFAULT_RULES = ("exact", "near", "partial", "attempt")
DEFAULT_PARTIAL_OVERLAP = 0.5
DEFAULT_CODE_NEAR_FRACTION = 0.5

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    return " ".join(_ARTICLES.sub(" ", text).split())


def token_f1(prediction: str, gold: str) -> float:
    pred, ref = normalize(prediction).split(), normalize(gold).split()
    common = sum((Counter(pred) & Counter(ref)).values())
    if not pred or not ref or common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


@dataclass(frozen=True)
class Evidence:
    """What the rules look at, measured once per completion."""

    nonempty: bool
    code: bool = False
    # answer items
    correct: bool = False  # exact (see answers.is_correct)
    normalized: bool = False
    rel_error: float | None = None  # of the parsed number, when both it and the gold answer are numbers
    contains: bool = False
    overlap: float = 0.0  # token F1 of the completion with the gold answer
    well_formed: bool = False
    # code items
    pass_fraction: float = 0.0
    ran: bool = False


@dataclass(frozen=True)
class TierRules:
    tiers: tuple[float, ...] = DEFAULT_TIERS
    rules: tuple[str, ...] = DEFAULT_RULES  # for tiers 5..2; tier 1 takes the rest
    near_tolerance: float = 0.1
    partial_overlap: float = DEFAULT_PARTIAL_OVERLAP
    code_near_fraction: float = DEFAULT_CODE_NEAR_FRACTION

    def reward(self, ev: Evidence) -> float:
        for value, name in zip(self.tiers, self.rules):
            if RULES[name](ev, self):
                return float(value)
        return float(self.tiers[-1])


def _rule(text: Callable[[Evidence, TierRules], bool], code: Callable[[Evidence, TierRules], bool]):
    return lambda ev, r: code(ev, r) if ev.code else text(ev, r)


RULES: dict[str, Callable[[Evidence, TierRules], bool]] = {
    "exact": _rule(lambda e, r: e.correct, lambda e, r: e.pass_fraction == 1.0),
    "normalized": _rule(lambda e, r: e.correct or e.normalized, lambda e, r: e.pass_fraction == 1.0),
    "near": _rule(
        lambda e, r: e.correct or e.normalized or (e.rel_error is not None and e.rel_error <= r.near_tolerance),
        lambda e, r: e.pass_fraction >= r.code_near_fraction,
    ),
    "contains": _rule(lambda e, r: e.correct or e.contains, lambda e, r: e.pass_fraction > 0),
    "partial": _rule(
        lambda e, r: e.correct or e.contains or e.overlap >= r.partial_overlap, lambda e, r: e.pass_fraction > 0
    ),
    "attempt": _rule(lambda e, r: e.well_formed, lambda e, r: e.ran),
    "nonempty": _rule(lambda e, r: e.nonempty, lambda e, r: e.nonempty),
}


def answer_evidence(completion: str, gold: str, pattern: str, numeric_tolerance: float) -> Evidence:
    pred = predicted_answer(completion, gold, pattern)
    gold_n, pred_n = _number(gold.strip()), _number(pred)
    rel_error = abs(pred_n - gold_n) / max(abs(gold_n), 1.0) if gold_n is not None and pred_n is not None else None
    norm_gold, norm_text = normalize(gold), normalize(completion)
    if gold_n is not None:  # numbers: the gold value among the completion's numbers
        contains = any(abs(float(x) - gold_n) <= numeric_tolerance for x in _NUMBER.findall(completion))
    else:
        contains = bool(norm_gold) and f" {norm_gold} " in f" {norm_text} "
    return Evidence(
        nonempty=bool(completion.strip()),
        correct=is_correct(pred, gold, numeric_tolerance),
        normalized=bool(norm_gold) and (normalize(pred or "") == norm_gold or norm_text == norm_gold),
        rel_error=rel_error,
        contains=contains,
        overlap=token_f1(completion, gold),
        well_formed=re.search(pattern, completion) is not None,
    )


def code_evidence(completion: str, result: ExecResult) -> Evidence:
    return Evidence(
        nonempty=bool(completion.strip()),
        code=True,
        pass_fraction=result.pass_fraction,
        ran=result.ran and result.status == "ok",
    )


def tiered(
    prompts,
    completions,
    *,
    answer,
    answer_pattern,
    tests=None,
    tiers: Sequence[float] = DEFAULT_TIERS,
    tier_rules: Sequence[str] = DEFAULT_RULES,
    near_tolerance: float = 0.1,
    numeric_tolerance: float = 0.0,
    partial_overlap: float = DEFAULT_PARTIAL_OVERLAP,
    code_near_fraction: float = DEFAULT_CODE_NEAR_FRACTION,
    execution_timeout: float = 10.0,
    execution_memory_mb: int = 512,
    execution_workers: int = 2,
    **_,
) -> list[float]:
    """One of `tiers` per completion (see the module docstring for the rules)."""
    rules = TierRules(tuple(tiers), tuple(tier_rules), near_tolerance, partial_overlap, code_near_fraction)
    tests = tests if tests is not None else [None] * len(completions)
    results = execute(
        completions,
        tests,
        execution_timeout=execution_timeout,
        execution_memory_mb=execution_memory_mb,
        execution_workers=execution_workers,
    )
    out = []
    for completion, gold, pattern, result in zip(completions, answer, answer_pattern, results):
        ev = (
            code_evidence(completion, result)
            if result is not None
            else answer_evidence(completion, gold, pattern, numeric_tolerance)
        )
        out.append(rules.reward(ev))
    return out
