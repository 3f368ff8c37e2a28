"""Runs a workflow in the sandbox; its operator calls reach the executor only through a pipe we serve.

The child is the code sandbox's (grpo/rewards/sandbox.py): a fresh isolated interpreter with a clean
environment, another uid when we are root, resource limits, and the audit hook that refuses
sockets, processes and writes outside its temporary directory, so the workflow cannot reach the
executor's server, or anything else, itself. What it has is one pair of pipes:

    child -> parent   {"op": "call", "operator": NAME, "input": {...}}     one operator call
    parent -> child   {"output": TEXT} | {"error": TEXT}                    its result
    child -> parent   {"op": "done", "answer": TEXT} | {"op": "failed", "error": TEXT}

The parent (`_serve`) checks each call (a known operator, its inputs, at most MAX_CALLS per
workflow), runs the operator (grpo/rewards/aflow/operators.py), which calls the executor client,
and counts calls and tokens itself. A wall-clock deadline (reward.execution_timeout) covers the
whole run, executor time included; past it the child's processes are killed. Anything unreadable
on the pipe ends the run as `channel_error`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import selectors
import subprocess
import tempfile
import threading
import time
import weakref
from collections import Counter, OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from grpo.rewards.aflow.operators import OPERATORS, check_inputs
from grpo.rewards.aflow.validator import Validation, patch_indentation, validate
from grpo.rewards.code_exec import extract_program
from grpo.rewards.sandbox import (
    Limits,
    close_quietly,
    isolation,
    kill_all,
    remove_workdir,
    rlimits,
    sandbox_uid,
    temp_base,
)

MAX_CALLS = 16  # operator calls one workflow may make (a loop of calls is refused past this)
MAX_LINE_BYTES = 1 << 20
CACHE_SIZE = 4096
# grpo/rewards/<name>.py loaded into the child as modules of their own names, in this order (the
# sandbox's audit hook lives in sandbox_runner, which imports the other three)
CHILD_MODULES = ("plain", "judge", "program_server", "sandbox_runner", "aflow.child")


@dataclass(frozen=True)
class WorkflowResult:
    valid: bool
    status: str  # ok | invalid | failed | timeout | channel_error | error
    answer: str | None = None  # what solve(problem) returned, when status is ok
    reason: str | None = None  # the validator's reason, when invalid
    calls: int = 0  # operator calls served (each one executor request, cached or not)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    executor_errors: int = 0  # calls the executor failed (no reply after its retries)
    seconds: float = 0.0
    error: str = ""
    patched: bool = False  # it ran re-indented (reward.patch_indentation)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def _child_source() -> str:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # grpo/rewards
    sources = []
    for name in CHILD_MODULES:
        with open(os.path.join(here, *name.split(".")) + ".py", encoding="utf-8") as f:
            sources.append(("grpo.rewards." + name, f.read()))
    return "\n".join(
        [
            "import sys, types",
            "for _p in ('grpo', 'grpo.rewards', 'grpo.rewards.aflow'):",
            "    sys.modules[_p] = types.ModuleType(_p)",
            f"for _name, _source in {sources!r}:",
            "    _m = sys.modules[_name] = types.ModuleType(_name)",
            "    exec(compile(_source, _name, 'exec'), _m.__dict__)",
            "_m.main()",
            "",
        ]
    )


_source_lock = threading.Lock()
_source: str | None = None


def child_source() -> str:
    global _source
    with _source_lock:
        if _source is None:
            _source = _child_source()
    return _source


class _Served:
    """What the parent counted while serving one workflow."""

    def __init__(self):
        self.calls = self.prompt_tokens = self.completion_tokens = self.errors = 0

    def result(self, status: str, t0: float, answer: str | None = None, error: str = "") -> WorkflowResult:
        return WorkflowResult(
            True,
            status,
            answer,
            None,
            self.calls,
            self.prompt_tokens,
            self.completion_tokens,
            self.errors,
            time.perf_counter() - t0,
            error,
        )


def _send(fd: int, data: bytes, deadline: float) -> bool:
    """Write all of `data` before the deadline (False: the child stopped reading)."""
    view = memoryview(data)
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_WRITE)
        while view:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                return False
            try:
                view = view[os.write(fd, view) :]
            except BlockingIOError:
                continue
    return True


def _answer_call(message: dict, executor, served: _Served) -> dict:
    name, inputs = message.get("operator"), message.get("input")
    if served.calls >= MAX_CALLS:
        return {"error": f"more than {MAX_CALLS} operator calls"}
    why = check_inputs(name, inputs)
    if why is not None:
        return {"error": why}
    served.calls += 1
    call = OPERATORS[name](executor, inputs)
    served.prompt_tokens += call.prompt_tokens
    served.completion_tokens += call.completion_tokens
    if call.error is not None:
        served.errors += 1
        return {"error": f"executor: {call.error}"}
    return {"output": call.output}


def _serve(read_fd: int, write_fd: int, executor, deadline: float, t0: float) -> WorkflowResult:
    """Answer the child's calls until it reports, the deadline passes or the pipe breaks."""
    served, buffer = _Served(), b""
    with selectors.DefaultSelector() as sel:
        sel.register(read_fd, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return served.result("timeout", t0, error="the workflow ran past reward.execution_timeout")
            if not sel.select(left):
                continue
            try:
                chunk = os.read(read_fd, 1 << 16)
            except BlockingIOError:
                continue
            if not chunk:
                return served.result("failed", t0, error="the workflow's process ended without an answer")
            buffer += chunk
            if len(buffer) > MAX_LINE_BYTES and b"\n" not in buffer:
                return served.result("channel_error", t0, error="a message over the size limit")
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                try:
                    message = json.loads(line)
                    op = message["op"]
                except (ValueError, TypeError, KeyError):
                    return served.result("channel_error", t0, error="an unreadable message")
                if op == "done":
                    return served.result("ok", t0, answer=str(message.get("answer", "")))
                if op == "failed":
                    return served.result("failed", t0, error=str(message.get("error", ""))[:2000])
                if op != "call":
                    return served.result("channel_error", t0, error=f"an unknown message {op!r}")
                reply = _answer_call(message, executor, served)
                if not _send(write_fd, json.dumps(reply).encode() + b"\n", deadline):
                    return served.result("timeout", t0, error="the workflow stopped reading its channel")


def execute(source: str, problem: str, executor, limits: Limits) -> WorkflowResult:
    """Run `source`'s solve(problem) in the sandbox, serving its operator calls (no validation here)."""
    t0 = time.perf_counter()
    interpreter, drop = isolation()
    uid = sandbox_uid() if drop else None
    workdir = tempfile.mkdtemp(prefix="grpo-aflow-", dir=temp_base(drop))
    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()
    proc = None
    try:
        if uid is not None:
            os.chown(workdir, uid, uid)
            os.chmod(workdir, 0o700)
        ids = {} if uid is None else {"user": uid, "group": uid, "extra_groups": []}
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"}
        proc = subprocess.Popen(
            [interpreter, "-I", "-B", "-c", child_source(), str(to_child_r), str(from_child_w)],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(to_child_r, from_child_w),
            start_new_session=True,
            **ids,
        )
        for fd in (to_child_r, from_child_w):
            os.close(fd)
        to_child_r = from_child_w = -1
        os.set_blocking(from_child_r, False)
        os.set_blocking(to_child_w, False)
        deadline = time.monotonic() + limits.timeout
        job = {"workflow": source, "problem": problem, "limits": rlimits(limits, drop)}
        if not _send(to_child_w, json.dumps(job).encode() + b"\n", deadline):
            return _Served().result("error", t0, error="the sandbox did not start")
        return _serve(from_child_r, to_child_w, executor, deadline, t0)
    except OSError as exc:
        return _Served().result("error", t0, error=f"sandbox: {exc}")
    finally:
        if proc is not None:
            kill_all(proc, uid)
            proc.wait()
        close_quietly(to_child_r, to_child_w, from_child_r, from_child_w)
        remove_workdir(workdir)


def run_workflow(
    completion: str, problem: str, domain: str | None, executor, limits: Limits, patch: bool = False
) -> WorkflowResult:
    """Validate the workflow in `completion` (its first fenced block, else all of it), then run it.
    With `patch`, one refused for its layout (syntax, a top-level body line) is re-indented and
    validated again (seed 003's reactive patching)."""
    source = extract_program(completion)
    check: Validation = validate(source, domain)
    patched = patch and not check.ok and check.reason in ("syntax", "top_level") and patch_indentation(source)
    if patched:
        source, check = patched, validate(patched, domain)
    if not check.ok:
        return WorkflowResult(False, "invalid", reason=check.reason, error=check.detail)
    result = execute(source, problem, executor, limits)
    return dataclasses.replace(result, patched=True) if patched else result


_caches: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # executor -> OrderedDict of results
_cache_lock = threading.Lock()
_counted: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # executor -> the completions last counted


def run_workflows(
    completions: Sequence[str],
    problems: Sequence[str],
    domains: Sequence[str | None],
    executor,
    limits: Limits,
    workers: int = 2,
    patch: bool = False,
) -> list[WorkflowResult]:
    """Every row's result, `workers` at a time. A result is kept per executor client, so the
    components that read one run (correctness, efficiency, code quality) run it once. Each batch's
    rows are counted once on the executor (`count`): reward/aflow_invalid/<validator reason> and
    reward/aflow_runs/<status> (ok, failed, timeout, channel_error, error) per scored step, and
    reward/aflow_patched/indentation for the workflows that ran re-indented (`patch`)."""
    if executor is None:
        raise ValueError("aflow rewards need the executor (reward.executor); the scorer passes it as executor=")
    keys = [(c, p, d, limits, patch) for c, p, d in zip(completions, problems, domains)]
    with _cache_lock:
        cache = _caches.setdefault(executor, OrderedDict())
        todo = [k for k in dict.fromkeys(keys) if k not in cache]
    fresh = {}
    if todo:
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(todo)))) as pool:
            fresh = dict(zip(todo, pool.map(lambda k: run_workflow(k[0], k[1], k[2], executor, k[3], k[4]), todo)))
        with _cache_lock:
            for key, result in fresh.items():
                if result.status != "error":  # an internal failure is worth retrying
                    cache[key] = result
            while len(cache) > CACHE_SIZE:
                cache.popitem(last=False)
    with _cache_lock:
        out = [fresh[k] if k in fresh else cache[k] for k in keys]
        counted = _counted.get(executor) is completions  # another component already read this very list
        _counted[executor] = completions  # held, so no later list can take its id
    if not counted and hasattr(executor, "count"):
        outcomes = Counter(_outcome(r) for r in out)
        outcomes.update(["aflow_patched/indentation"] * sum(r.patched for r in out))
        for name, n in outcomes.items():
            executor.count(name, n)  # logged with the executor's stats as reward/<name>
    return out


def _outcome(result: WorkflowResult) -> str:
    """The counter a row's result adds to: aflow_invalid/<reason>, or aflow_runs/<status>."""
    return f"aflow_invalid/{result.reason}" if not result.valid else f"aflow_runs/{result.status}"
