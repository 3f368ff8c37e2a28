"""Tasks generated in-process from a seed: nothing to download, answers checkable exactly.

numgame (seed 002): "cmp A B =" -> 0 if A < B, 1 if A == B, 2 if A > B.
arithmetic: "A+B=" / "A-B=" -> the integer result.
code: "py: EXPR =" -> what Python prints for a small expression (output prediction).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from grpo.tasks.base import Example

INTEGER_PATTERN = r"-?\d+"


def numgame_example(rng: random.Random, max_number: int) -> Example:
    a = rng.randint(0, max_number)
    # Equal pairs are rare under uniform draws; a third of them keeps the three answers balanced.
    b = a if rng.random() < 1 / 3 else rng.randint(0, max_number)
    answer = "0" if a < b else ("1" if a == b else "2")
    return Example(prompt=f"cmp {a} {b} =", answer=answer, domain="qa", meta={"a": a, "b": b})


def arithmetic_example(rng: random.Random, max_number: int) -> Example:
    a, b = rng.randint(0, max_number), rng.randint(0, max_number)
    op = rng.choice("+-")
    value = a + b if op == "+" else a - b
    return Example(prompt=f"{a}{op}{b}=", answer=str(value), domain="math")


_CODE_TEMPLATES: tuple[Callable[[random.Random, int], str], ...] = (
    lambda r, n: f"len({[r.randint(0, 9) for _ in range(r.randint(1, 6))]})".replace(" ", ""),
    lambda r, n: f"max({r.randint(0, n)},{r.randint(0, n)})",
    lambda r, n: f"min({r.randint(0, n)},{r.randint(0, n)})",
    lambda r, n: f"abs({r.randint(-n, n)})",
    lambda r, n: f"{r.randint(0, n)}//{r.randint(1, 5)}",
    lambda r, n: f"{r.randint(0, n)}%{r.randint(2, 5)}",
)


def code_example(rng: random.Random, max_number: int) -> Example:
    expr = rng.choice(_CODE_TEMPLATES)(rng, max_number)
    answer = str(eval(expr, {"__builtins__": {"len": len, "max": max, "min": min, "abs": abs}}))  # our own expressions
    # Output prediction: the answer is checked as a value, so no tests to execute.
    return Example(prompt=f"py: {expr} =", answer=answer, domain="code")


GENERATORS: dict[str, Callable[[random.Random, int], Example]] = {
    "qa": numgame_example,
    "math": arithmetic_example,
    "code": code_example,
}


def generate(
    domain: str, count: int, rng: random.Random, max_number: int, exclude: frozenset = frozenset()
) -> list[Example]:
    """`count` distinct examples of one domain whose prompts are not in `exclude`."""
    out, seen = [], set(exclude)
    attempts = 0
    while len(out) < count:
        ex = GENERATORS[domain](rng, max_number)
        attempts += 1
        if ex.prompt in seen:
            if attempts > 50 * count + 1000:  # the space is smaller than asked: allow repeats
                seen = set(exclude)
            continue
        seen.add(ex.prompt)
        out.append(ex)
    return out
