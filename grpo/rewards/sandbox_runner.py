"""The code a sandbox child runs before any untrusted line (the guards and the verdict: grpo/rewards/sandbox.py).

The training process only builds the child's text here (`runner_source`, `runner_code`): the
child is a fresh interpreter that loads CHILD_MODULES from their source and runs `main()`.
Standard library only, Python >= 3.8.

`main` reads the job, sets the resource limits and forks in two before anyone reads the program:

- the program's process (grpo/rewards/program_server.py) installs the audit hook, then runs the
  program afresh for each test and answers the judge's requests on a pair of pipes. It never holds
  the tests, their expected values or the verdict pipe.
- the judge (`judge_all`, the process the parent waits for) reads the tests and a per-run secret
  from a file descriptor the program's process closed before its first line, installs the same
  audit hook, runs every test (grpo/rewards/judge.py) and reports each verdict, prefixed with the
  secret, on the verdict pipe, which the program's process does not hold either.
"""

from __future__ import annotations

import json
import marshal
import os
import resource
import sys

from grpo.rewards.judge import ChannelBroken, Handle, raise_from_program, ref_of, run_test, wrap
from grpo.rewards.plain import decode, encode
from grpo.rewards.program_server import MUTABLE, send, serve

# grpo/rewards/<name>.py, sent to the child as modules of their own names, in this order
CHILD_MODULES = ("plain", "judge", "program_server", "sandbox_runner")
RUNNER_CODE_FILE = "runner.bin"  # runner_code(), beside job.json in the child's working directory
MAX_MESSAGE_BYTES = 16 << 20  # one answer of the program's process, at most
PROCESS_EVENTS = {"os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "subprocess.Popen"}
REFUSED_EVENTS = PROCESS_EVENTS | {
    "pty.spawn",
    "os.startfile",
    "os.kill",
    "os.killpg",
    "signal.pthread_kill",
    "os.link",
    "os.symlink",
    "socket.__new__",
    "ctypes.dlopen",
    "ctypes.dlsym",
    "sys.addaudithook",
    "resource.setrlimit",
    "resource.prlimit",
}
PATH_EVENTS = {
    "os.remove",
    "os.rmdir",
    "os.chmod",
    "os.chown",
    "os.mkdir",
    "os.truncate",
    "os.utime",
    "os.chflags",
    "os.lchflags",
    "os.setxattr",
    "os.removexattr",
    "shutil.rmtree",
}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _child_sources() -> list:
    here = os.path.dirname(os.path.abspath(__file__))
    out = []
    for name in CHILD_MODULES:
        with open(os.path.join(here, name + ".py"), encoding="utf-8") as f:
            out.append(("grpo.rewards." + name, f.read()))
    return out


def runner_source() -> str:
    """The child's `-c` text (built in the parent): CHILD_MODULES as modules of their own names, then main().

    The modules come compiled from RUNNER_CODE_FILE when the child's bytecode format is the parent's
    (`runner_code`), else from their sources here.
    """
    global _runner
    if _runner is None:
        lines = [
            "import marshal, os, sys, types",
            "from _frozen_importlib_external import MAGIC_NUMBER",
            "for _p in ('grpo', 'grpo.rewards'):",
            "    sys.modules[_p] = types.ModuleType(_p)",
            f"with open({RUNNER_CODE_FILE!r}, 'rb') as _f:",
            "    _data = _f.read()",
            f"os.remove({RUNNER_CODE_FILE!r})",
            "_codes = marshal.loads(_data[len(MAGIC_NUMBER):]) if _data.startswith(MAGIC_NUMBER) else {}",
            f"for _name, _source in {_child_sources()!r}:",
            "    _m = sys.modules[_name] = types.ModuleType(_name)",
            "    exec(_codes.get(_name) or compile(_source, _name, 'exec'), _m.__dict__)",
            "_m.main()",
            "",
        ]
        _runner = "\n".join(lines)
    return _runner


def runner_code() -> bytes:
    """The child modules compiled by this interpreter, behind its bytecode magic number."""
    global _code
    if _code is None:
        from importlib.util import MAGIC_NUMBER

        _code = MAGIC_NUMBER + marshal.dumps({name: compile(src, name, "exec") for name, src in _child_sources()})
    return _code


_runner = None
_code = None


def main() -> None:
    with open("job.json") as f:
        job = json.load(f)
    os.remove("job.json")
    for name, value in job["limits"].items():
        which = getattr(resource, name)
        hard = resource.getrlimit(which)[1]
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)  # never above what we were given
        resource.setrlimit(which, (value, value))
    to_program, from_judge = os.pipe()
    to_judge, from_program = os.pipe()
    pid = os.fork()
    if pid == 0:  # the program's process: nothing of the judge's stays open in it
        try:
            for fd in (job["tests_fd"], job["verdict_fd"], from_judge, to_judge):
                os.close(fd)
            install_hook(os.path.realpath(os.getcwd()), job["allow_processes"])
            serve(job["program"], to_program, from_program)
        finally:
            os._exit(1)
    for fd in (to_program, from_program):
        os.close(fd)
    tests = _read_all(job["tests_fd"])
    install_hook(os.path.realpath(os.getcwd()), False)
    judge_all(job["program"], tests["tests"], tests["secret"], job["verdict_fd"], Program(to_judge, from_judge, pid))


def _read_all(fd: int) -> dict:
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    return json.loads(b"".join(chunks))


def install_hook(root: str, allow_processes: bool) -> None:
    """The audit hook (PEP 578): no writes outside `root`, no processes, signals, sockets, ctypes,
    no further hooks, and no reading of another process's /proc entries (its memory, its fds)."""
    refused = REFUSED_EVENTS - PROCESS_EVENTS if allow_processes else REFUSED_EVENTS
    own_pid = str(os.getpid())

    def inside(path) -> bool:
        if isinstance(path, int):
            return True  # an already-open descriptor: its opening was checked
        full = os.path.realpath(os.fsdecode(path))
        return full == root or full.startswith(root + os.sep)

    def other_process(path) -> bool:
        if isinstance(path, int):
            return False
        full = os.path.realpath(os.fsdecode(path))
        parts = full.split(os.sep)  # /proc/self resolves to /proc/<own pid>
        return len(parts) > 2 and parts[1] == "proc" and parts[2].isdigit() and parts[2] != own_pid

    def hook(event, args):
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None, None))[:3]
            writing = (isinstance(flags, int) and flags & WRITE_FLAGS) or (
                isinstance(mode, str) and any(c in mode for c in "wax+")
            )
            if path is not None and ((writing and not inside(path)) or other_process(path)):
                raise PermissionError(f"sandbox: opening {path!r} is not allowed")
        elif event in PATH_EVENTS:
            if args and args[0] is not None and not inside(args[0]):
                raise PermissionError(f"sandbox: {event} outside the working directory is not allowed")
        elif event == "os.rename":
            if not (inside(args[0]) and inside(args[1])):
                raise PermissionError("sandbox: renaming outside the working directory is not allowed")
        elif event in refused:
            raise PermissionError(f"sandbox: {event} is not allowed")

    sys.addaudithook(hook)


# ---------------------------------------------------------------------------- the judge
class Program:
    """The judge's end of the pipes to the program's process: requests out, plain data back.

    Every request carries a fresh random id that its answer must repeat, and anything garbled,
    missing or out of turn breaks the channel for good (ChannelBroken, which a test's
    `except Exception` cannot swallow): answers written ahead of time never count.
    """

    def __init__(self, answers: int, requests: int, pid: int):
        self.pid = pid
        self.reader = os.fdopen(answers, "rb")
        self.requests = requests
        self.handles: dict = {}
        self.broken = False

    def _exchange(self, request: dict):
        if self.broken:
            raise ChannelBroken("the program's process is gone")
        request["id"] = os.urandom(8).hex()
        try:
            send(self.requests, json.dumps(request).encode() + b"\n")
            answer = json.loads(self.reader.readline(MAX_MESSAGE_BYTES))
            if type(answer) is not dict or answer.get("id") != request["id"] or not {"value", "raised"} & set(answer):
                raise ValueError("not the answer to this request")
            value = decode(answer["value"], self._resolve) if "value" in answer else None
            changed = [(k, decode(v, self._resolve)) for k, v in answer.get("changed", [])]
        except BaseException as exc:  # a signal mid-answer too: never read a later answer for this one
            self.broken = True
            raise ChannelBroken(f"the program's process answered nothing usable: {exc!r}") from None
        if "raised" in answer:
            raise_from_program(str(answer["raised"]), str(answer.get("message", "")), ended=request["op"] == "next")
        return value, changed

    def _resolve(self, ref: int, value):
        return wrap(self, ref, value)

    def handle(self, ref: int) -> Handle:
        if ref not in self.handles:
            self.handles[ref] = Handle(self, ref)
        return self.handles[ref]

    def ask(self, op: str, ref, **fields):
        """One request about the object numbered `ref` (a name, when None); its answer, decoded."""
        for key in ("key", "value"):
            if key in fields:
                fields[key] = encode(fields[key], ref_of)
        return self._exchange(dict(fields, op=op, ref=ref))[0]

    def call(self, ref: int, args: tuple, kwargs: dict):
        """Call the program's object `ref`; arguments it changed in place are changed here too."""
        request = {
            "args": [encode(a, ref_of) for a in args],
            "kwargs": {k: encode(v, ref_of) for k, v in kwargs.items()},
        }
        value, changed = self._exchange(dict(request, op="call", ref=ref))
        for key, new in changed:
            old = args[key] if type(key) is int and 0 <= key < len(args) else kwargs.get(key)
            if type(old) is type(new) and type(old) in MUTABLE:
                if type(old) in (dict, set):
                    old.clear()
                    old.update(new)
                else:
                    old[:] = new
        return value

    def start(self) -> None:
        """Run the program afresh in its process (raises what it raised)."""
        self.handles = {}
        self._exchange({"op": "program"})

    def end(self) -> bool:
        """Whether the program's process answered "end" (it exits right after; we reap it)."""
        try:
            self._exchange({"op": "end"})
        except BaseException:
            return False
        os.waitpid(self.pid, 0)
        return True


def judge_all(program: str, tests: list, secret: str, verdicts: int, channel: Program) -> None:
    """Run every test, report each (`test i ran ok`), then `done` if the program's process ended cleanly."""

    def report(line: str) -> None:
        send(verdicts, f"{secret} {line}\n".encode())

    try:
        compile(program, "<solution>", "exec")
    except BaseException:
        report("compiled 0")
        report("done")
        os._exit(0)
    report("compiled 1")
    for i, test in enumerate(tests):
        ran = ok = 0
        try:
            channel.start()
            ran = 1
            run_test(test, i, channel)
            ok = 1
        except BaseException:
            pass
        if channel.broken:
            break
        report(f"test {i} {ran} {ok}")
    else:
        if channel.end():
            report("done")
    sys.stdout.flush()
    os._exit(0)
