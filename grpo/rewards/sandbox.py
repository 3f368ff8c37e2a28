"""Run one untrusted program against its tests in an isolated child process.

What the child gets, and why (each line is one guard):

1. A fresh Python interpreter (`-I -B`: no user site, no PYTHON* variables, no bytecode
   writes), started in its own session so the whole process group can be killed.
2. A clean environment: PATH, HOME/TMPDIR (its temp dir) and LANG only; nothing inherited, so
   no tokens or keys of the training process reach it.
3. A fresh temporary working directory, removed afterwards. Nothing of the parent's is in it: the
   job file is deleted before the program runs; output and tests travel on unlinked files.
4. When we run as root: another uid and gid, unique per execution, with no supplementary groups
   (so the run's files are out of reach at the OS level, and a final `kill -9 -1` as that uid
   ends every process it started, even ones that left the process group).
5. Resource limits, set by the child on itself before any untrusted line runs: address space
   (RLIMIT_AS = memory_mb), CPU seconds (RLIMIT_CPU), processes (RLIMIT_NPROC: fork bombs),
   file size (RLIMIT_FSIZE: stdout/stderr go to a file capped at `max_output_bytes`, so a
   100 MB print fails instead of filling memory), open files, no core dumps.
6. An audit hook (PEP 578) installed before the program runs that refuses: writing, creating,
   removing, renaming, chmod/chown of any path outside the temp dir; symlinks and hard links;
   starting processes (fork, exec, spawn, system, subprocess); signalling other processes;
   sockets; ctypes; further audit hooks; and opening another process's /proc entries.
7. A wall-clock timeout in the parent for the whole execution (every test together); on expiry
   the process group is killed (and, as root, every process of the sandbox uid).

The verdict (grpo/rewards/sandbox_runner.py): before any untrusted line the child forks into the
program's process (grpo/rewards/program_server.py) and a judge that never runs a line of it
(grpo/rewards/judge.py). The judge runs the tests; the program's names are asked of the program's
process, which answers plain data (grpo/rewards/plain.py) or opaque handles, never objects the
judge would compare. Tests reach the judge on an unlinked file the program's process closed before
its first line; the judge reports on a pipe that process does not hold, each line prefixed with a
per-run secret; anything but a clean finish within the limits scores 0. README.md, "What the code
reward guarantees", says what this covers and what it does not.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import selectors
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from grpo.rewards.sandbox_runner import RUNNER_CODE_FILE, runner_code, runner_source

log = logging.getLogger(__name__)

MAX_VERDICT_BYTES = 1 << 20  # what the judge reports is kept up to this much
OUTPUT_KEPT_BYTES = 2048  # how much of the program's output is kept in the result, for debugging
NPROC_AS_OTHER_UID = 16  # processes the sandbox uid may own (only this execution uses that uid)
NPROC_MARGIN_SAME_UID = 16  # without root: processes beyond what our uid already runs


@dataclass(frozen=True)
class Limits:
    timeout: float = 10.0  # wall-clock seconds for the whole execution (all tests)
    memory_mb: int = 512  # address-space limit
    max_output_bytes: int = 1 << 20  # stdout + stderr; more than this scores 0
    allow_processes: bool = False  # only for tests of the RLIMIT_NPROC guard


@dataclass(frozen=True)
class ExecResult:
    passed: int  # tests that ran to the end without raising
    total: int
    status: str  # ok | syntax_error | timeout | crashed | output_limit | error
    compiled: bool  # the program parsed
    ran: bool  # the program itself executed without raising (at least once)
    seconds: float
    output: str = ""  # the first OUTPUT_KEPT_BYTES of stdout + stderr

    @property
    def pass_fraction(self) -> float:
        """The score: share of tests passed, 0 unless the execution finished within its limits."""
        return self.passed / self.total if self.status == "ok" and self.total else 0.0


# ---------------------------------------------------------------------------- the interpreter
_probe_lock = threading.Lock()
_warned: set[str] = set()
_isolation: tuple[str, bool] | None = None  # (interpreter, drop privileges)


def _world_executable(path: str) -> bool:
    """Whether a process with no relation to root can execute (a directory: enter) `path`."""
    path = os.path.realpath(path)
    try:
        if not os.stat(path).st_mode & stat.S_IXOTH:
            return False
        parent = os.path.dirname(path)
        while True:
            if not os.stat(parent).st_mode & stat.S_IXOTH:
                return False
            if parent == os.path.dirname(parent):
                return True
            parent = os.path.dirname(parent)
    except OSError:
        return False


def _probe(interpreter: str, uid: int | None) -> bool:
    """The interpreter starts (as `uid`) and has audit hooks (Python >= 3.8)."""
    ids = {} if uid is None else {"user": uid, "group": uid, "extra_groups": []}
    try:
        out = subprocess.run(
            [interpreter, "-I", "-c", "import sys; sys.exit(0 if sys.version_info >= (3, 8) else 1)"],
            env={"PATH": "/usr/bin:/bin"},
            cwd="/",
            timeout=30,
            capture_output=True,
            **ids,
        )
        return out.returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def isolation() -> tuple[str, bool]:
    """The interpreter the sandbox runs, and whether the child drops to another uid.

    As root, the child runs as an unprivileged uid; it needs an interpreter that uid can reach
    (a pyenv build under /root is not), so the system python3 is tried next. Found once per process.
    """
    global _isolation
    with _probe_lock:
        if _isolation is None:
            own = os.path.realpath(sys.executable)
            if os.geteuid() != 0:
                _isolation = (own, False)
            else:
                tried = [own, "/usr/bin/python3", "/usr/local/bin/python3", shutil.which("python3") or ""]
                found = next(
                    (p for p in dict.fromkeys(tried) if p and _world_executable(p) and _probe(p, sandbox_uid())), None
                )
                if found is None:
                    log.warning(
                        "code sandbox: no Python interpreter is executable by an unprivileged uid; programs run as "
                        "root, guarded by the audit hook and resource limits only"
                    )
                    _isolation = (own, False)
                else:
                    _isolation = (os.path.realpath(found), True)
    return _isolation


def sandbox_uid() -> int:
    """A uid no account uses, fresh per execution: its processes are exactly this sandbox's."""
    return 1_000_000 + secrets.randbelow(1 << 30)


def _own_task_count() -> int:
    """Threads our uid runs now (RLIMIT_NPROC counts them all), for the limit without root."""
    uid, total = os.getuid(), 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
            if int(fields["Uid"].split()[0]) == uid:
                total += int(fields["Threads"])
        except (OSError, KeyError, ValueError):
            continue
    return total


def kill_all(proc: subprocess.Popen, uid: int | None) -> None:
    """End the child's process group and, when it ran as its own uid, every process of that uid."""
    try:
        os.killpg(proc.pid, 9)
    except (ProcessLookupError, PermissionError):
        pass
    if uid is not None:  # `kill -9 -1` as the sandbox uid: signals all of its processes (not itself)
        try:
            subprocess.run(
                ["/bin/sh", "-c", "kill -9 -1 2>/dev/null"],
                user=uid,
                group=uid,
                extra_groups=[],
                env={"PATH": "/usr/bin:/bin"},
                cwd="/",
                timeout=10,
            )
        except (OSError, subprocess.SubprocessError):
            pass


# ---------------------------------------------------------------------------- one execution
def run_program(program: str, tests: Sequence[str], limits: Limits = Limits()) -> ExecResult:
    """Execute `program` once per test (fresh namespace each time) in an isolated child; judge outside it."""
    t0 = time.perf_counter()
    tests = [str(t) for t in tests]
    try:
        compile(program, "<solution>", "exec")  # cheap refusal of what cannot run (the parser runs no code)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return ExecResult(0, len(tests), "syntax_error", False, False, time.perf_counter() - t0)
    if not tests:
        return ExecResult(0, 0, "ok", True, False, time.perf_counter() - t0)

    interpreter, drop = isolation()
    uid = sandbox_uid() if drop else None
    workdir = tempfile.mkdtemp(prefix="grpo-exec-", dir=temp_base(drop))
    read_fd, write_fd = os.pipe()
    secret = secrets.token_hex(16)
    proc = None
    try:
        with tempfile.TemporaryFile() as tests_file, tempfile.TemporaryFile() as out:
            tests_file.write(json.dumps({"secret": secret, "tests": tests}).encode())
            tests_file.flush()
            tests_file.seek(0)
            job = {
                "verdict_fd": write_fd,
                "tests_fd": tests_file.fileno(),
                "limits": rlimits(limits, drop),
                "program": program,
                "allow_processes": limits.allow_processes,
            }
            _write_job(workdir, job, uid)
            proc = _start(interpreter, workdir, out, (write_fd, tests_file.fileno()), uid)
            os.close(write_fd)
            write_fd = -1
            timed_out, reported = _wait(proc, read_fd, limits.timeout)
            kill_all(proc, uid)
            proc.wait()
            tested, compiled, done = _read_verdicts(reported, secret)
            size, output = _read_output(out)
    except OSError as exc:
        _warn_once(exc)
        if proc is not None:
            kill_all(proc, uid)
        return ExecResult(0, len(tests), "error", True, False, time.perf_counter() - t0, str(exc))
    finally:
        close_quietly(read_fd, write_fd)
        remove_workdir(workdir)

    passed = sum(1 for i in range(len(tests)) if tested.get(i, (False, False))[1])
    ran = any(r for r, _ in tested.values())
    if timed_out:
        status = "timeout"
    elif size >= limits.max_output_bytes:
        status = "output_limit"
    elif proc.returncode != 0 or not done:
        status = "crashed"
    else:
        status = "ok" if compiled else "syntax_error"
    return ExecResult(passed, len(tests), status, compiled, ran, time.perf_counter() - t0, output)


def remove_workdir(workdir: str) -> None:
    """Remove the working directory, even where the program locked it (chmod 000 on a directory)."""
    shutil.rmtree(workdir, ignore_errors=True)
    stack = [workdir] if os.path.isdir(workdir) else []
    while stack:  # what was left: unlock every directory, then try again
        path = stack.pop()
        try:
            os.chmod(path, 0o700)
            stack += [e.path for e in os.scandir(path) if e.is_dir(follow_symlinks=False)]
        except OSError:
            pass
    shutil.rmtree(workdir, ignore_errors=True)


def temp_base(drop: bool) -> str:
    """Where the working directory goes: the temp dir, unless the sandbox uid could not enter it."""
    base = tempfile.gettempdir()
    if drop and not _world_executable(base):  # a TMPDIR under /root, say
        return "/tmp"
    return base


def rlimits(limits: Limits, drop: bool) -> dict[str, int]:
    """The resource limits the child sets on itself, by `resource` constant name."""
    nproc = NPROC_AS_OTHER_UID if drop else _own_task_count() + NPROC_MARGIN_SAME_UID
    return {
        "RLIMIT_AS": limits.memory_mb << 20,
        "RLIMIT_CPU": int(math.ceil(limits.timeout)) + 1,
        "RLIMIT_NPROC": nproc,
        "RLIMIT_FSIZE": limits.max_output_bytes,
        "RLIMIT_NOFILE": 64,
        "RLIMIT_CORE": 0,
    }


def _write_job(workdir: str, job: dict, uid: int | None) -> None:
    """The files the child reads (and deletes) first; with a sandbox uid, the directory becomes that uid's alone."""
    job_path, code_path = os.path.join(workdir, "job.json"), os.path.join(workdir, RUNNER_CODE_FILE)
    with open(job_path, "w") as f:
        json.dump(job, f)
    with open(code_path, "wb") as f:
        f.write(runner_code())
    if uid is not None:
        for path in (workdir, job_path, code_path):
            os.chown(path, uid, uid)
        os.chmod(workdir, 0o700)


def _start(interpreter: str, workdir: str, out, fds: tuple[int, ...], uid: int | None) -> subprocess.Popen:
    """The child, in its own session, with a clean environment; stdout and stderr go to the file `out`."""
    ids = {} if uid is None else {"user": uid, "group": uid, "extra_groups": []}
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"}
    return subprocess.Popen(
        [interpreter, "-I", "-B", "-c", runner_source()],
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT,
        pass_fds=fds,
        start_new_session=True,
        **ids,
    )


def _wait(proc: subprocess.Popen, fd: int, timeout: float) -> tuple[bool, bytes]:
    """(whether the child was still running after `timeout` seconds, what it reported on `fd`).

    The judge is the only holder of the verdict pipe's write end, so the pipe's end of file is its
    exit: waiting on the pipe wakes up at once (Popen.wait's polling would sleep up to 50 ms), and
    reading as it goes never lets a long report fill the pipe.
    """
    deadline = time.monotonic() + timeout
    data = b""
    os.set_blocking(fd, False)
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return True, data
            if not selector.select(left):
                continue
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                continue
            if not chunk:
                break
            data += chunk[: max(0, MAX_VERDICT_BYTES - len(data))]
    try:
        proc.wait(timeout=max(deadline - time.monotonic(), 0.01))
        return False, data
    except subprocess.TimeoutExpired:
        return True, data


def _read_output(out) -> tuple[int, str]:
    """The size of the child's output, and its first OUTPUT_KEPT_BYTES as text."""
    size = os.fstat(out.fileno()).st_size
    return size, os.pread(out.fileno(), OUTPUT_KEPT_BYTES, 0).decode("utf-8", "replace")


def _warn_once(exc: OSError) -> None:
    """Report an internal failure once per kind, so a broken sandbox does not flood the log."""
    if type(exc).__name__ not in _warned:
        _warned.add(type(exc).__name__)
        log.warning(
            "code sandbox failed to run a program (scored 0; further failures of this kind are not printed): %s",
            exc,
        )


def close_quietly(*fds: int) -> None:
    for fd in fds:
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass


def _read_verdicts(data: bytes, secret: str) -> tuple[dict[int, tuple[bool, bool]], bool, bool]:
    """What the judge reported, lines with the run's secret only: ({test: (ran, ok)}, compiled, done)."""
    tested: dict[int, tuple[bool, bool]] = {}
    compiled = done = False
    for line in data.decode("utf-8", "replace").splitlines():
        parts = line.split()
        if len(parts) < 2 or parts[0] != secret:
            continue
        if parts[1] == "done":
            done = True
        elif parts[1] == "compiled" and len(parts) == 3:
            compiled = parts[2] == "1"
        elif parts[1] == "test" and len(parts) == 5 and parts[2].isdigit():
            tested.setdefault(int(parts[2]), (parts[3] == "1", parts[4] == "1"))  # the first report wins
    return tested, compiled, done
