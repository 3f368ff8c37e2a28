"""What runs inside the sandbox child of a workflow (grpo/rewards/aflow/runner.py sends this source there).

Standard library only, Python >= 3.8. `main` reads the job (the workflow, the problem) from the
channel, sets the resource limits, installs the sandbox's audit hook (grpo/rewards/sandbox_runner.py:
no sockets, no processes, no writes outside the working directory), defines the operators as
functions that send one JSON line {"op": "call", "operator": NAME, "input": {...}} on the channel
and read one line {"output": TEXT} or {"error": TEXT} back, runs the workflow's `solve(problem)`
and reports {"op": "done", "answer": TEXT} or {"op": "failed", "error": TEXT}. The parent counts
every call and spends every token; nothing the workflow writes here changes those counts.

Programmer and Test also run code the executor wrote: here, inside the same sandbox.
"""

from __future__ import annotations

import ast
import json
import os
import resource
import sys

from grpo.rewards.sandbox_runner import install_hook

MAX_LINE_BYTES = 1 << 20


class OperatorError(Exception):
    """An operator call the parent refused or the executor failed."""


class Channel:
    def __init__(self, read_fd: int, write_fd: int):
        self.reader = os.fdopen(read_fd, "rb")
        self.write_fd = write_fd

    def send(self, message: dict) -> None:
        view = memoryview(json.dumps(message).encode() + b"\n")
        while view:
            view = view[os.write(self.write_fd, view) :]

    def receive(self) -> dict:
        line = self.reader.readline(MAX_LINE_BYTES)
        if not line:
            raise OperatorError("the channel closed")
        return json.loads(line)


def unfenced(text: str) -> str:
    """The first fenced block of a reply (its language tag dropped), else the reply."""
    fence = text.split("```")
    if len(fence) < 3:
        return text
    body = fence[1]
    first, _, rest = body.partition("\n")
    return rest if rest and (not first.strip() or first.strip().isidentifier()) else body


def run_code(code: str) -> str:
    """The output of code the executor wrote: `solve()` when it defines one, a bare expression's
    value, else the variable `result`; an exception's text otherwise (a program that failed)."""
    code = unfenced(code)
    try:
        tree = ast.parse(code.strip() or "None")
        namespace: dict = {"__name__": "program"}
        if len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr):
            return str(eval(compile(ast.Expression(tree.body[0].value), "<program>", "eval"), namespace))
        exec(compile(tree, "<program>", "exec"), namespace)
        if callable(namespace.get("solve")):
            return str(namespace["solve"]())
        return str(namespace.get("result", ""))
    except Exception as exc:  # noqa: BLE001 - the program's failure is its output
        return f"Error: {type(exc).__name__}: {exc}"


def operators(channel: Channel) -> dict:
    """The operator names a workflow sees: each a call through the channel."""

    def call(name: str, **inputs) -> str:
        channel.send({"op": "call", "operator": name, "input": inputs})
        reply = channel.receive()
        if "error" in reply:
            raise OperatorError(f"{name}: {reply['error']}")
        return str(reply.get("output", ""))

    def Custom(input, instruction=""):  # noqa: N802, A002 - AFlow's names
        return call("Custom", input=str(input), instruction=str(instruction))

    def AnswerGenerate(input):  # noqa: N802, A002
        return call("AnswerGenerate", input=str(input))

    def ScEnsemble(solutions, problem):  # noqa: N802
        return call("ScEnsemble", solutions=[str(s) for s in solutions], problem=str(problem))

    def Programmer(problem, analysis=""):  # noqa: N802
        return run_code(call("Programmer", problem=str(problem), analysis=str(analysis)))

    def Test(problem, solution):  # noqa: N802
        """Runs the solution with the executor's assertions; one revision when one fails."""
        checks = unfenced(call("Test", problem=str(problem), solution=str(solution)))
        try:
            exec(compile(unfenced(str(solution)) + "\n" + checks, "<test>", "exec"), {"__name__": "test"})
            return str(solution)
        except Exception as exc:  # noqa: BLE001 - a failed check is the feedback
            feedback = f"{type(exc).__name__}: {exc}"
        return call("Revise", problem=str(problem), solution=str(solution), feedback=feedback)

    def Format(problem, solution):  # noqa: N802
        return call("Format", problem=str(problem), solution=str(solution))

    def Review(problem, solution):  # noqa: N802
        return call("Review", problem=str(problem), solution=str(solution))

    def Revise(problem, solution, feedback):  # noqa: N802
        return call("Revise", problem=str(problem), solution=str(solution), feedback=str(feedback))

    return {
        "Custom": Custom,
        "AnswerGenerate": AnswerGenerate,
        "ScEnsemble": ScEnsemble,
        "Programmer": Programmer,
        "Test": Test,
        "Format": Format,
        "Review": Review,
        "Revise": Revise,
    }


def main() -> None:
    read_fd, write_fd = int(sys.argv[1]), int(sys.argv[2])
    channel = Channel(read_fd, write_fd)
    job = channel.receive()
    for name, value in job["limits"].items():
        which = getattr(resource, name)
        hard = resource.getrlimit(which)[1]
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(which, (value, value))
    install_hook(os.path.realpath(os.getcwd()), False)
    try:
        namespace = {"__name__": "workflow", **operators(channel)}
        exec(compile(job["workflow"], "<workflow>", "exec"), namespace)
        answer = namespace["solve"](job["problem"])
        channel.send({"op": "done", "answer": "" if answer is None else str(answer)})
    except BaseException as exc:  # noqa: BLE001 - any failure of the workflow is reported, then we exit
        try:
            channel.send({"op": "failed", "error": f"{type(exc).__name__}: {exc}"[:2000]})
        except BaseException:  # noqa: BLE001
            pass
    sys.stdout.flush()
    os._exit(0)
