"""The code-execution sandbox: scores, limits and isolation, each case within its timeout + 1 s."""

from __future__ import annotations

import os
import sys
import time

import pytest

from grpo.rewards import sandbox
from grpo.rewards.code_exec import code_exec, execute, extract_program, run_many
from grpo.rewards.sandbox import Limits, run_program

TIMEOUT = 2.0
LIMITS = Limits(timeout=TIMEOUT, memory_mb=512)
TESTS = ["assert f(2) == 4", "assert f(0) == 0", "assert f(-3) == -6"]


def timed(program: str, tests=("assert True",), limits: Limits = LIMITS):
    t0 = time.perf_counter()
    result = run_program(program, list(tests), limits)
    wall = time.perf_counter() - t0
    assert wall < limits.timeout + 1.0, f"took {wall:.2f}s"
    return result


def test_passing_solution_scores_one():
    r = timed("def f(x):\n    return 2 * x\n", TESTS)
    assert (r.status, r.passed, r.total, r.pass_fraction) == ("ok", 3, 3, 1.0)


def test_failing_solution_scores_its_pass_fraction():
    r = timed("def f(x):\n    return x * x if x else 0\n", TESTS)  # right for 2 and 0, wrong for -3
    assert (r.status, r.passed) == ("ok", 2)
    assert r.pass_fraction == pytest.approx(2 / 3)


def test_infinite_loop_times_out_and_scores_zero():
    r = timed("while True: pass", TESTS)
    assert r.status == "timeout" and r.pass_fraction == 0.0


def test_fork_bomb_is_refused_and_ends_at_the_timeout():
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except BaseException:\n        pass\n"
    r = timed(bomb, TESTS)
    assert r.pass_fraction == 0.0 and r.status == "timeout"


def test_fork_bomb_is_held_by_the_process_limit():
    """With process creation allowed (the audit hook's guard off), RLIMIT_NPROC holds the bomb."""
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except BaseException:\n        pass\n"
    r = timed(bomb, TESTS, Limits(timeout=TIMEOUT, allow_processes=True))
    assert r.pass_fraction == 0.0
    time.sleep(0.2)
    uid_owned = [p for p in os.listdir("/proc") if p.isdigit() and _uid_of(p) is not None and _uid_of(p) >= 1_000_000]
    assert len(uid_owned) <= sandbox.NPROC_AS_OTHER_UID  # nothing left running beyond what the limit allows


def _uid_of(pid: str):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def test_huge_output_is_capped_and_scores_zero():
    r = timed("print('x' * 100_000_000)\ndef f(x):\n    return 2 * x\n", TESTS)
    assert r.status == "output_limit" and r.pass_fraction == 0.0
    assert len(r.output) <= sandbox.OUTPUT_KEPT_BYTES


def test_removing_a_file_outside_the_temp_dir_fails_and_the_file_survives(tmp_path):
    victim = tmp_path / "precious.txt"
    victim.write_text("keep")
    r = timed(f"import os\nos.remove({str(victim)!r})\n", ["assert True"])
    assert victim.read_text() == "keep"
    assert r.passed == 0 and not r.ran


def test_the_audit_hook_alone_guards_the_run_files(tmp_path, monkeypatch):
    """Even when the child keeps our uid (no privilege drop), writes outside its dir are refused."""
    monkeypatch.setattr(sandbox, "_isolation", (os.path.realpath(sys.executable), False))
    victim = tmp_path / "precious.txt"
    victim.write_text("keep")
    for attack in (
        f"import os\nos.remove({str(victim)!r})",
        f"open({str(victim)!r}, 'w').write('gone')",
        f"import os\nos.rename({str(victim)!r}, 'stolen.txt')",
        f"import shutil\nshutil.rmtree({str(tmp_path)!r})",
        f"import os\nos.chmod({str(victim)!r}, 0o777)",
        "import subprocess\nsubprocess.run(['true'])",
        "import socket\nsocket.socket()",
    ):
        r = timed(attack, ["assert True"])
        assert r.passed == 0, attack
    assert victim.read_text() == "keep"


def test_writing_inside_the_temp_dir_is_allowed():
    r = timed("open('scratch.txt', 'w').write('hi')\nimport os\nos.remove('scratch.txt')\nok = True", ["assert ok"])
    assert r.pass_fraction == 1.0


def test_clean_environment(monkeypatch):
    monkeypatch.setenv("GRPO_TEST_SECRET", "hunter2")
    r = timed(
        "import os\nleaked = 'GRPO_TEST_SECRET' in os.environ\nkeys = sorted(os.environ)",
        ["assert not leaked", "assert set(keys) <= {'PATH', 'HOME', 'TMPDIR', 'LANG', 'LC_CTYPE'}"],
    )
    assert r.pass_fraction == 1.0


def test_exits_and_crashes_score_zero():
    assert timed("import sys\nsys.exit(0)", ["assert True"]).pass_fraction == 0.0  # the program itself fails
    r = timed("import os\nos._exit(0)", ["assert True"])  # no verdict comes back
    assert r.status == "crashed" and r.pass_fraction == 0.0
    assert timed("x = bytearray(4_000_000_000)", ["assert True"]).pass_fraction == 0.0  # over RLIMIT_AS
    assert timed("def (", ["assert True"]).status == "syntax_error"


def test_bare_expression_is_bound_to_answer():
    assert timed("2", ["assert (len([1, 2])) == answer"]).pass_fraction == 1.0


def test_extract_program_prefers_a_fenced_block():
    assert extract_program("here:\n```python\ndef f(x):\n    return x\n```\nthanks") == "def f(x):\n    return x\n"
    assert extract_program("def f(x): return x") == "def f(x): return x"
    assert extract_program("```\nprint(1)") == "print(1)"


def test_pool_runs_in_parallel_and_keeps_order():
    programs = [f"import time\ntime.sleep(0.5)\nv = {i}" for i in range(4)]
    t0 = time.perf_counter()
    results = run_many(programs, [[f"assert v == {i}"] for i in range(4)], LIMITS, workers=4)
    wall = time.perf_counter() - t0
    assert [r.pass_fraction for r in results] == [1.0] * 4
    assert wall < 4 * 0.5  # not one after another


def test_code_exec_component_scores_rows_with_tests_only():
    completions = ["def f(x):\n    return 2 * x", "def f(x):\n    return 0", "42"]
    scores = code_exec(["p"] * 3, completions, tests=[TESTS, TESTS, None], execution_timeout=TIMEOUT)
    assert scores == [1.0, pytest.approx(1 / 3), 0.0]
    assert execute(completions, [TESTS, None, None], execution_timeout=TIMEOUT)[1] is None


# ---------------------------------------------------------------------------- the judge (issue 19)
def test_the_issue_program_scores_zero():
    """An object whose __eq__ always says yes: comparisons run in the judge, on plain data only."""
    always_equal = "class A:\n    def __eq__(self, o): return True\n    def __ne__(self, o): return False\n"
    r = timed(always_equal + "def f(x):\n    return A()\n", ["assert f(1) == 2", "assert f(5) == 10"])
    assert (r.status, r.passed, r.pass_fraction) == ("ok", 0, 0.0)


def test_program_objects_are_not_judged_their_plain_fields_are():
    """What changes for tests that compare objects: compare their fields (or a tuple of them) instead."""
    point = "class P:\n    def __init__(self, x): self.x = x\n    def __eq__(self, o): return self.x == o.x\n"
    point += "def f():\n    return P(1)\n"
    r = timed(point, ["assert f() == P(1)", "assert f().x == 1", "p = f()\nassert p.x == 1"])
    assert r.passed == 2  # the first compared two objects of the program: no longer judged


def test_builtin_subclasses_are_read_as_their_builtin_value():
    """A namedtuple, a Counter or an IntEnum is judged by the builtin value it holds, not by its methods."""
    program = "import collections, enum\nP = collections.namedtuple('P', 'x y')\nclass E(enum.IntEnum):\n    A = 3\n"
    program += "def f():\n    return P(1, 2), collections.Counter('aab'), E.A\n"
    r = timed(program, ["assert f() == ((1, 2), {'a': 2, 'b': 1}, 3)", "assert f()[0].x == 1"])
    assert r.pass_fraction == 1.0


def test_a_test_keeps_its_own_names():
    """A name the test assigns is the judge's: it no longer rebinds the program's global of that name."""
    r = timed("x = 5\ndef g():\n    return x", ["x = 6\nassert g() == 5", "assert x == 5"])
    assert r.pass_fraction == 1.0


def test_arguments_a_call_changes_in_place_change_in_the_test():
    r = timed(
        "def f(l, d=None):\n    l.sort()\n    d['k'] = 1\n",
        ["l = [3, 1, 2]\nd = {}\nassert f(l, d=d) is None\nassert l == [1, 2, 3] and d == {'k': 1}"],
    )
    assert r.pass_fraction == 1.0


def test_the_program_process_holds_only_its_own_pipes():
    """stdin, stdout, stderr and the judge's two pipes: not the tests, not the verdict pipe."""
    r = timed("import os\ndef f():\n    return len(os.listdir('/proc/self/fd')) - 1\n", ["assert f() == 5"])
    assert r.pass_fraction == 1.0


def test_the_judge_raises_the_builtin_exception_the_program_raised():
    program = "class Mine(ValueError):\n    pass\ndef f(x):\n    raise Mine('no') if x else SystemExit(0)\n"
    caught = "try:\n    assert f(1) == 0\nexcept ValueError:\n    pass\nelse:\n    raise AssertionError"
    r = timed(program, [caught, "assert f(0) == 0"])
    assert r.passed == 1  # Mine is a ValueError; a SystemExit in f fails its test


def test_a_program_object_is_a_handle_judged_by_identity_only():
    program = "class A:\n    def __init__(self): self.v = [1]\n    def __bool__(self): return True\n"
    program += "    def __len__(self): return 1\ndef f():\n    return A()\na = A()\n"
    tests = ["assert f() is not None", "assert a is a and a == a and f() != f()", "assert a.v == [1]"]
    tests += ["assert a", "assert len(a) == 1", "assert 1 in a", "assert a + 0 == 0", "assert f() == f()"]
    r = timed(program, tests)
    assert (r.status, r.passed) == ("ok", 3)  # truth, len, `in`, arithmetic, value equality: refused


def test_plain_data_round_trips_and_refuses_everything_else():
    import collections
    import json

    from grpo.rewards.plain import NotPlainData, decode, encode

    values = [None, True, 0, -(2**100), 1.5, float("inf"), -0.0, 3 + 4j, "é", b"\x00", bytearray(b"z")]
    values += [[1, (2, {3})], frozenset({1}), {(1, 2): [None]}, range(1, 9, 2)]
    for value in values:
        back = decode(json.loads(json.dumps(encode(value))))
        assert back == value and type(back) is type(value), value
    assert decode(encode(float("nan"))) != decode(encode(float("nan")))  # still a NaN
    assert type(decode(encode(collections.OrderedDict(a=1)))) is dict
    assert list(decode(encode(map(str, [1, 2])))) == ["1", "2"]
    for value in (object(), print, type, [object()], {"k": lambda: 0}):
        with pytest.raises(NotPlainData):
            encode(value)
    for forged in (["always_equal"], ["list"], ["set", [["list", []]]], ["int", 5], {"a": 1}, 1.5):
        with pytest.raises((ValueError, TypeError)):
            decode(forged)
