"""Evaluation metrics over n samples per prompt, per domain (pure functions, no model).

Rows come grouped: prompt p's samples are rows p*n .. p*n + n - 1. With n = 1 only accuracy
and reward are reported; with n > 1, as verl reports per data source:

    pass@k      unbiased estimator of "at least one of k samples is correct" (Chen et al. 2021),
                for k = 1, 2, 4, ... up to n (and n)
    mean@n      mean correctness of the n samples (= accuracy = pass@1)
    best@n      mean over prompts of the best reward among the n samples
    maj@n       correctness of the majority-voted answer (ties: the first answer to reach the count)
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence

ALL = "all"


def pass_at_k(n: int, c: int, k: int) -> float:
    """P(at least one correct among k of n samples, c of them correct) = 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))  # the stable product form


def majority_correct(answers: Sequence[str | None], correct: Sequence[float]) -> float:
    """Correctness of the most frequent answer (None answers do not vote; no votes: 0)."""
    votes = Counter(a for a in answers if a is not None)
    if not votes:
        return 0.0
    top = max(votes.values())
    winner = next(a for a in answers if a is not None and votes[a] == top)
    return float(correct[answers.index(winner)])


def ks_for(n: int) -> list[int]:
    """The k of pass@k: powers of two below n, and n."""
    out, k = [], 1
    while k < n:
        out.append(k)
        k *= 2
    return out + [n]


def prompt_metrics(
    correct: Sequence[float], reward: Sequence[float], answers: Sequence[str | None]
) -> dict[str, float]:
    """The metrics of one prompt's n samples."""
    n = len(correct)
    out = {"accuracy": sum(correct) / n, "reward": sum(reward) / n}
    if n > 1:
        hits = sum(1 for c in correct if c >= 1.0)
        out.update({f"pass@{k}": pass_at_k(n, hits, k) for k in ks_for(n)})
        out.update(
            {f"mean@{n}": out["accuracy"], f"best@{n}": max(reward), f"maj@{n}": majority_correct(answers, correct)}
        )
    return out


def summarize(
    domains: Sequence[str], correct: Sequence[float], reward: Sequence[float], answers: Sequence[str | None], n: int
) -> dict[str, dict[str, float]]:
    """{domain or "all": {"prompts": P, metric: mean over the domain's prompts}}."""
    if not len(domains) == len(correct) == len(reward) == len(answers) or len(domains) % n:
        raise ValueError("domains, correct, reward and answers must be aligned lists of prompts x n samples")
    per_prompt: dict[str, list[dict[str, float]]] = {}
    for start in range(0, len(domains), n):
        rows = slice(start, start + n)
        m = prompt_metrics(correct[rows], reward[rows], answers[rows])
        per_prompt.setdefault(domains[start], []).append(m)
        per_prompt.setdefault(ALL, []).append(m)
    out = {}
    for name in sorted(per_prompt, key=lambda d: (d == ALL, d)):  # domains first, "all" last
        items = per_prompt[name]
        out[name] = {"prompts": float(len(items)), **{k: sum(m[k] for m in items) / len(items) for k in items[0]}}
    return out


def metric_keys(summary: Mapping[str, Mapping[str, float]], prefix: str) -> dict[str, float]:
    """MLflow keys: prefix/metric for "all", prefix/metric/domain per domain ("@" is spelled "_at_")."""
    out = {}
    for name, metrics in summary.items():
        for key, value in metrics.items():
            key = key.replace("@", "_at_")
            out[f"{prefix}/{key}" if name == ALL else f"{prefix}/{key}/{name}"] = value
    return out
