"""AFlow's operators, the parent's side: each builds its prompt, calls the executor LLM and parses the reply.

A workflow (grpo/rewards/aflow/validator.py) calls them by name inside the sandbox; the call
arrives here through the channel (grpo/rewards/aflow/runner.py) as (name, inputs), and the reply
goes back as text. Every value is a string, so a small model can chain them:

    Custom(input, instruction="")          the executor follows `instruction` on `input`
    AnswerGenerate(input)                  step by step, then the final answer alone
    ScEnsemble(solutions, problem)         picks the most consistent of several solutions
    Programmer(problem, analysis="")       the executor writes Python; it runs in the sandbox, its output returns
    Test(problem, solution)                the executor writes assertions; they run in the sandbox, and one
                                           failure gets one revision (a Revise call)
    Format(problem, solution)              the answer alone, in the form the problem asks for
    Review(problem, solution)              feedback on a solution
    Revise(problem, solution, feedback)    the solution, improved with the feedback

Each prompt ends with the problem (and the text it works on), so the executor reads the task last.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from grpo.algorithms.names import AFLOW_OPERATORS

_ANSWER_LINE = re.compile(r"(?:final answer|answer)\s*[:：]\s*(.+)", re.IGNORECASE)
_LETTER = re.compile(r"\b([A-Z])\b")


@dataclass(frozen=True)
class Call:
    """One operator call, as the parent saw it."""

    output: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    error: str | None = None


class Operator:
    name = ""
    inputs: tuple[str, ...] = ()  # required inputs, in order
    optional: tuple[str, ...] = ()
    instruction = ""

    def prompt(self, inputs: Mapping[str, object]) -> str:
        return f"{self.instruction}\n\n" + "\n".join(f"{k.capitalize()}: {inputs[k]}" for k in self.order(inputs))

    def order(self, inputs: Mapping[str, object]) -> list[str]:
        """The inputs shown, the problem last (the executor reads the task last)."""
        keys = [k for k in (*self.optional, *self.inputs) if str(inputs.get(k, "")).strip()]
        return sorted(keys, key=lambda k: k in ("problem", "input"))

    def parse(self, reply: str, inputs: Mapping[str, object]) -> str:
        return reply.strip()

    def __call__(self, executor, inputs: Mapping[str, object]) -> Call:
        reply = executor.complete(self.prompt(inputs))
        error = getattr(reply, "error", None)
        if error:
            return Call("", reply.prompt_tokens, reply.completion_tokens, reply.cached, str(error))
        return Call(self.parse(reply.text, inputs), reply.prompt_tokens, reply.completion_tokens, reply.cached)


class Custom(Operator):
    name, inputs, optional = "Custom", ("input",), ("instruction",)

    def prompt(self, inputs):
        instruction = str(inputs.get("instruction", "")).strip() or "Solve the following."
        return f"{instruction}\n\nInput: {inputs['input']}"


class AnswerGenerate(Operator):
    name, inputs = "AnswerGenerate", ("input",)
    instruction = "Think step by step, then give only the final answer on the last line, after 'Answer:'."

    def parse(self, reply, inputs):
        found = _ANSWER_LINE.findall(reply)
        return found[-1].strip() if found else reply.strip()


class ScEnsemble(Operator):
    name, inputs = "ScEnsemble", ("solutions", "problem")
    instruction = "Several solutions to one problem follow. Reply with the letter of the most consistent one."

    def prompt(self, inputs):
        lines = [f"{chr(65 + i)}: {s}" for i, s in enumerate(inputs["solutions"])]
        return f"{self.instruction}\n\n" + "\n".join(lines) + f"\n\nProblem: {inputs['problem']}"

    def parse(self, reply, inputs):
        """The solution the executor picked; when the reply names no letter, the most common one."""
        solutions = [str(s) for s in inputs["solutions"]]
        if not solutions:
            return ""
        for letter in _LETTER.findall(reply):
            if ord(letter) - 65 < len(solutions):
                return solutions[ord(letter) - 65]
        return Counter(s.strip() for s in solutions).most_common(1)[0][0]


class Programmer(Operator):
    name, inputs, optional = "Programmer", ("problem",), ("analysis",)
    instruction = (
        "Write Python that solves the problem: define solve() returning the answer, "
        "or write one expression. Reply with the code only."
    )


class Test(Operator):
    name, inputs = "Test", ("problem", "solution")
    instruction = "Write Python assert statements that check the solution's solve() on the problem. Code only."


class Format(Operator):
    name, inputs = "Format", ("problem", "solution")
    instruction = "Give only the final answer of the solution, in the form the problem asks for, nothing else."


class Review(Operator):
    name, inputs = "Review", ("problem", "solution")
    instruction = "Review the solution to the problem. Say what is wrong, or 'correct' when nothing is."


class Revise(Operator):
    name, inputs = "Revise", ("problem", "solution", "feedback")
    instruction = "Revise the solution to the problem using the feedback. Reply with the revised solution only."


OPERATORS: dict[str, Operator] = {
    op.name: op for op in (Custom(), AnswerGenerate(), ScEnsemble(), Programmer(), Test(), Format(), Review(), Revise())
}
assert tuple(OPERATORS) == AFLOW_OPERATORS, "grpo/algorithms/names.py lists the operators a config may name"


def check_inputs(name: str, inputs: object) -> str | None:
    """Why a call's inputs are refused (None: accepted): an unknown operator, a missing or extra
    input, a value of the wrong kind (text, or a list of texts for ScEnsemble's solutions)."""
    op = OPERATORS.get(name)
    if op is None:
        return f"unknown operator {name!r}"
    if not isinstance(inputs, dict):
        return "inputs must be an object"
    missing = [k for k in op.inputs if k not in inputs]
    extra = [k for k in inputs if k not in (*op.inputs, *op.optional)]
    if missing or extra:
        return f"{name} takes {', '.join((*op.inputs, *op.optional))} (missing {missing}, unexpected {extra})"
    for key, value in inputs.items():
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value) if key == "solutions" else None
        if ok is None:
            ok = isinstance(value, str)
        if not ok:
            return f"{name}: '{key}' must be {'a list of texts' if key == 'solutions' else 'text'}"
    return None
