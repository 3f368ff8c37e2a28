"""Writes the AFlow workflow data of `+experiment=aflow_tiny` (written by the project, not downloaded).

    python experiments/data/aflow/make_workflows.py

workflow_candidates.jsonl  math problems, each with candidate workflows in seed 004's candidate
                           format (grpo/tasks/candidates.py): {text, score, correct}. Both the train
                           split and task.candidates_path of aflow_tiny: RCE warms the policy up on
                           them, GRPO then samples its own.
workflow_val.jsonl         held-out math problems of the same kind (no candidates).

Each problem is one arithmetic expression ("What is 7+3*4?"), so any executor that computes
(gpt-4o-mini, or the tests' deterministic server) answers it. Per problem there are 3 valid
workflows (1 or 2 operator calls) and 3 the validator refuses (grpo/rewards/aflow/validator.py:
no operator, a syntax error, an unknown operator; Test on a math problem breaks a constraint).

score: the reward the workflow earns with an executor that answers right, as far as the text tells:
1.0 for one operator call, 0.9 for two (aflow_efficiency prefers fewer), 0.0 for a refused one.
correct: 1 when it would return the right answer with such an executor, else 0. The run itself
scores every candidate by executing it; these two fields only order and label the candidates.

Deterministic: the same seed writes the same files.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 2026
N_TRAIN, N_VAL = 48, 12

# (text, score, correct); `p` is the problem
CANDIDATES = [
    ("def solve(p):\n    return AnswerGenerate(p)\n", 1.0, 1),
    ("def solve(p):\n    return Programmer(p)\n", 1.0, 1),
    ("def solve(p):\n    a = AnswerGenerate(p)\n    return Format(p, a)\n", 0.9, 1),
    ("def solve(p):\n    return p\n", 0.0, 0),  # no operator
    ("def solve(p)\n    return AnswerGenerate(p)\n", 0.0, 0),  # syntax: no colon
    ("def solve(p):\n    return Test(p, p)\n", 0.0, 0),  # Test only on code problems
]


def problem(rng: random.Random) -> tuple[str, int]:
    a, b, c = rng.randint(2, 9), rng.randint(2, 9), rng.randint(2, 9)
    text, value = rng.choice(
        [(f"{a}+{b}*{c}", a + b * c), (f"({a}+{b})*{c}", (a + b) * c), (f"{a}*{b}-{c}", a * b - c)]
    )
    return f"What is {text}?", value


def main() -> None:
    rng = random.Random(SEED)
    seen: dict[str, int] = {}
    while len(seen) < N_TRAIN + N_VAL:
        prompt, value = problem(rng)
        seen.setdefault(prompt, value)
    items = list(seen.items())
    with open(HERE / "workflow_candidates.jsonl", "w") as f:
        for prompt, value in items[:N_TRAIN]:
            cands = [{"text": t, "score": s, "correct": c} for t, s, c in CANDIDATES]
            f.write(json.dumps({"prompt": prompt, "answer": str(value), "domain": "math", "candidates": cands}) + "\n")
    with open(HERE / "workflow_val.jsonl", "w") as f:
        for prompt, value in items[N_TRAIN:]:
            f.write(json.dumps({"prompt": prompt, "answer": str(value), "domain": "math"}) + "\n")


if __name__ == "__main__":
    main()
