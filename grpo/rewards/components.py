"""Reward components. Each follows TRL's reward contract:

    fn(prompts: list[str], completions: list[str], **columns) -> list[float]

where `columns` are aligned lists: answer, domain, truncated (no EOS before the length
limit), answer_pattern (regex of a well-formed answer), completion_logp_mean (mean token
log-prob under the policy) and the reward config's options (numeric_tolerance, ...).
A component that calls the executor LLM says so with `fn.needs_executor = True`; the scorer
then passes its `ExecutorClient` (grpo/rewards/executor.py) as `executor=`.
Rows scored against an offline candidates file also carry candidate_score and
candidate_correct (None where the completion is not one of the file's candidates).
"""

from __future__ import annotations

import ast
import importlib
import math
import re
from collections.abc import Callable

from grpo.rewards.aflow.components import AFLOW_COMPONENTS
from grpo.rewards.answers import is_correct, predicted_answer
from grpo.rewards.code_exec import code_exec, execute
from grpo.rewards.llm_judge import llm_judge
from grpo.rewards.tiered import tiered

RewardFn = Callable[..., list[float]]


def correctness(
    prompts, completions, *, answer, answer_pattern, numeric_tolerance: float = 0.0, candidate_correct=None, **_
) -> list[float]:
    """1 when the completion's answer equals the gold answer: exact text, numbers within tolerance, or the
    same choice letter (A-E) when the gold answer is one. A completion that is one of an offline
    candidates file's candidates takes the file's verdict (seed 004: correctness is a label of the beam)."""
    labels = candidate_correct if candidate_correct is not None else [None] * len(completions)
    return [
        float(label) if label is not None else float(is_correct(predicted_answer(c, a, p), a, numeric_tolerance))
        for c, a, p, label in zip(completions, answer, answer_pattern, labels)
    ]


def solved(
    prompts,
    completions,
    *,
    tests=None,
    execution_timeout: float = 10.0,
    execution_memory_mb: int = 512,
    execution_workers: int = 2,
    **columns,
) -> list[float]:
    """Accuracy of any item: 1 when every test passes for items with tests, else `correctness`."""
    tests = tests if tests is not None else [None] * len(completions)
    results = execute(
        completions,
        tests,
        execution_timeout=execution_timeout,
        execution_memory_mb=execution_memory_mb,
        execution_workers=execution_workers,
    )
    answers = correctness(prompts, completions, **columns)
    return [float(r.pass_fraction == 1.0) if r is not None else a for r, a in zip(results, answers)]


def format_reward(prompts, completions, *, answer_pattern, truncated, **_) -> list[float]:
    """1 when the whole completion is one well-formed answer and it ended (EOS) on its own."""
    return [
        float(not t and re.fullmatch(p, c.strip()) is not None)
        for c, p, t in zip(completions, answer_pattern, truncated)
    ]


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


LENGTH_BUFFER = 0.25  # length_penalty: the last quarter of the token budget is the soft-penalty zone


def length_penalty(prompts, completions, *, completion_length, max_new_tokens, truncated, **_) -> list[float]:
    """DAPO's soft overlong punishment, in [-1, 0]: 0 up to (1 - LENGTH_BUFFER) of the token budget,
    then linearly down to -1 at the budget; -1 for a completion cut off without EOS. Give it a
    positive weight (weights.length_penalty: 0.1) to subtract it."""
    out = []
    for n, budget, cut in zip(completion_length, max_new_tokens, truncated):
        buffer = max(1, int(budget * LENGTH_BUFFER))
        free = budget - buffer
        out.append(-1.0 if cut else max(-1.0, min(0.0, (free - n) / buffer)))
    return out


def quality(prompts, completions, *, completion_logp_mean, **_) -> list[float]:
    """Lever's beam score: the policy's confidence, exp(mean token log-prob), in [0, 1]."""
    return [math.exp(lp) for lp in completion_logp_mean]


def beam_score(prompts, completions, *, candidate_score, **_) -> list[float]:
    """Lever's quality from the data (reward.quality_source=file): the candidate's score in the
    offline candidates file; 0 for a completion that is not one of the prompt's candidates."""
    return [float(s) if s is not None else 0.0 for s in candidate_score]


COMPONENTS: dict[str, RewardFn] = {
    "correctness": correctness,
    "format": format_reward,
    "efficiency": efficiency,
    "code_quality": code_quality,
    "quality": quality,
    "length_penalty": length_penalty,
    "beam_score": beam_score,
    "code_exec": code_exec,  # grpo/rewards/code_exec.py: pass fraction of the item's tests, sandboxed
    "solved": solved,
    "tiered": tiered,  # grpo/rewards/tiered.py: seed 003's 5 tiers
    # grpo/rewards/aflow/components.py: the completion is a workflow, run with the executor (task=aflow)
    **AFLOW_COMPONENTS,
    "llm_judge": llm_judge,  # grpo/rewards/llm_judge.py: the executor LLM grades it (reward.judge)
}


def resolve(name: str, custom: dict[str, str]) -> RewardFn:
    """A built-in component, or a user function named in `reward.custom` ("module:function")."""
    if name in custom:
        module, _, attr = custom[name].replace(":", ".").rpartition(".")
        return getattr(importlib.import_module(module), attr)
    return COMPONENTS[name]
