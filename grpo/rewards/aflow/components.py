"""The AFlow reward components: each completion is a workflow, run once on its problem (runner.py).

TRL's contract as every component (grpo/rewards/components.py), plus the `problem` column (the
task's question, not the prompt the policy saw) and the scorer's `executor=` option. The three of
seed 001's weighted reward (correctness 0.7, efficiency 0.2, code quality 0.1) and seed 003's tiers:

    aflow_correctness   1 when the workflow's answer is right (grpo/rewards/answers.py; code items: every
                        test passes in the code sandbox), else 0. Invalid or failed workflows: 0.
    aflow_efficiency    0.5 / calls + 0.5 * (1 - min(1, tokens / reward.executor.max_tokens)) for a
                        workflow that answered (calls >= 1: the validator requires an operator); else 0.
                        Fewer executor calls and tokens score higher.
    aflow_code_quality  0 for a workflow the validator refuses; 0.5 for a valid one, + 0.3 when it ran to
                        the end (no exception, no timeout), + 0.2 when it returned a non-blank answer.
    aflow_tiered        seed 003's tiers on the workflow's answer (grpo/rewards/tiered.py's rules); a
                        workflow that fails validation or does not answer scores the lowest tier.

Every one of them is 0 (tiered: the lowest tier) when the validator refuses the workflow, which is
how "never calls an operator" and "does not parse" score below a working workflow.
"""

from __future__ import annotations

from collections.abc import Sequence

from grpo.rewards.aflow.runner import WorkflowResult, run_workflows
from grpo.rewards.answers import is_correct, predicted_answer
from grpo.rewards.code_exec import execute
from grpo.rewards.sandbox import Limits
from grpo.rewards.tiered import DEFAULT_RULES, DEFAULT_TIERS, TierRules, answer_evidence, code_evidence

DEFAULT_MAX_TOKENS = 4096  # the executor's reply budget when the scorer does not pass it


def results(
    completions: Sequence[str],
    *,
    problem: Sequence[str],
    domain: Sequence[str],
    executor=None,
    execution_timeout: float = 10.0,
    execution_memory_mb: int = 512,
    execution_workers: int = 2,
    patch_indentation: bool = False,
) -> list[WorkflowResult]:
    """Each workflow run on its problem (validated first; one run per executor, however many components read it)."""
    limits = Limits(timeout=float(execution_timeout), memory_mb=int(execution_memory_mb))
    return run_workflows(completions, problem, domain, executor, limits, execution_workers, patch_indentation)


def _run(completions, columns: dict) -> list[WorkflowResult]:
    keys = (
        "problem",
        "domain",
        "executor",
        "execution_timeout",
        "execution_memory_mb",
        "execution_workers",
        "patch_indentation",
    )
    return results(completions, **{k: columns[k] for k in keys if k in columns})


def _answers_tested(runs: list[WorkflowResult], tests, columns: dict):
    """The code sandbox's verdict on each answered code item's program (None for other rows)."""
    tests = tests if tests is not None else [None] * len(runs)
    return execute(
        [r.answer or "" for r in runs],
        [t if r.status == "ok" else None for r, t in zip(runs, tests)],
        execution_timeout=columns.get("execution_timeout", 10.0),
        execution_memory_mb=columns.get("execution_memory_mb", 512),
        execution_workers=columns.get("execution_workers", 2),
    )


def workflow_answers(completions, **columns) -> list[str]:
    """What each workflow returned when run ("" for one that was refused or failed): what validation judges."""
    return [(r.answer or "") if r.status == "ok" else "" for r in _run(completions, columns)]


def aflow_correctness(
    prompts, completions, *, answer, answer_pattern, tests=None, numeric_tolerance: float = 0.0, **columns
) -> list[float]:
    runs = _run(completions, columns)
    tested = _answers_tested(runs, tests, columns)
    out = []
    for run, gold, pattern, verdict in zip(runs, answer, answer_pattern, tested):
        if run.status != "ok":
            out.append(0.0)
        elif verdict is not None:
            out.append(float(verdict.pass_fraction == 1.0))
        else:
            out.append(float(is_correct(predicted_answer(run.answer or "", gold, pattern), gold, numeric_tolerance)))
    return out


def aflow_efficiency(prompts, completions, **columns) -> list[float]:
    config = getattr(columns.get("executor"), "cfg", None)  # the client's ExecutorConfig: its max_tokens
    budget = max(1, int(getattr(config, "max_tokens", None) or DEFAULT_MAX_TOKENS))
    out = []
    for run in _run(completions, columns):
        if run.status != "ok" or run.calls == 0:
            out.append(0.0)
        else:
            out.append(0.5 / run.calls + 0.5 * (1.0 - min(1.0, run.tokens / budget)))
    return out


def aflow_code_quality(prompts, completions, **columns) -> list[float]:
    out = []
    for run in _run(completions, columns):
        if not run.valid:
            out.append(0.0)
            continue
        ran = run.status == "ok"
        out.append(0.5 + 0.3 * ran + 0.2 * (ran and bool((run.answer or "").strip())))
    return out


def aflow_tiered(
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
    partial_overlap: float = 0.5,
    code_near_fraction: float = 0.5,
    **columns,
) -> list[float]:
    rules = TierRules(tuple(tiers), tuple(tier_rules), near_tolerance, partial_overlap, code_near_fraction)
    runs = _run(completions, columns)
    tested = _answers_tested(runs, tests, columns)
    out = []
    for run, gold, pattern, verdict in zip(runs, answer, answer_pattern, tested):
        if run.status != "ok":
            out.append(float(tiers[-1]))
            continue
        text = run.answer or ""
        if verdict is not None:
            ev = code_evidence(text, verdict)
        else:
            ev = answer_evidence(text, gold, pattern, numeric_tolerance)
        out.append(rules.reward(ev))
    return out


for _fn in (aflow_correctness, aflow_efficiency, aflow_code_quality, aflow_tiered):
    _fn.needs_executor = True  # the scorer builds the executor client for these and passes it as executor=

AFLOW_COMPONENTS = {
    "aflow_correctness": aflow_correctness,
    "aflow_efficiency": aflow_efficiency,
    "aflow_code_quality": aflow_code_quality,
    "aflow_tiered": aflow_tiered,
}
