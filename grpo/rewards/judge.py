"""The judge: runs a test's own code in a process that never runs a line of the program.

A test (`assert add(2, 3) == 5`, any Python statements) runs here, in a namespace of its own whose
builtins are Python's (the program cannot redefine `len`, `sorted` or `abs` for the tests). A
name the test does not define and Python does not either is the program's: the judge asks the
program's process for it (`Program.name`). What comes back is plain data (grpo/rewards/plain.py)
or, for anything else -- a function, a class, an instance -- a Handle: an opaque reference
through which the test may call, read attributes and items, set them, iterate, and take `str()`,
each a request answered in the program's process with plain data or another Handle. So every
comparison, truth test, `len`, `abs`, arithmetic, helper, loop and expected value of a test runs
here, on values the judge built itself; a program's `__eq__`, `__bool__`, patched builtins or
patched `math` never take part in a verdict, and the tests never enter the program's process.

What a Handle refuses (TypeError, so the test fails): comparisons other than identity, truth,
hashing by value, `len`, `in` and arithmetic -- the operations through which a program object
could answer for the test. Compare an object's plain fields instead (`assert p.x == 1`). A value
of a builtin subclass (a namedtuple, an IntEnum, a Counter) arrives as its builtin value, with
its other attributes (`p.x`, `e.name`) read from the program. Mutable arguments a call changed
(`f(l)` sorting `l` in place) are changed here too.

This module also runs inside the sandbox child (its source is sent there): standard library only,
Python >= 3.8.
"""

from __future__ import annotations

import builtins

from grpo.rewards.plain import NotPlainData


class ProgramRaised(Exception):
    """The program raised something that is no builtin exception (or SystemExit and its kind)."""


class ChannelBroken(BaseException):
    """The program's process stopped answering (exited, crashed, or garbled its answers)."""


def raise_from_program(name: str, message: str, ended: bool = False):
    """Raise, in the judge, the builtin exception the program raised (so `except ValueError` works).

    StopIteration stays a ProgramRaised unless it ends the program's own iterator (`ended`): raised
    from a plain call it would silently cut short a test's `map()` or `all()`, as if all had passed.
    """
    kind = getattr(builtins, name, None) if name in vars(builtins) else None
    stops = isinstance(kind, type) and issubclass(kind, (StopIteration, StopAsyncIteration))
    if isinstance(kind, type) and issubclass(kind, Exception) and (ended or not stops):
        raise kind(f"from the program: {message}")
    raise ProgramRaised(f"{name}: {message}")


def _refused(what: str):
    def refuse(self, *args):
        raise NotPlainData(f"{what} a program object is not judged: compare its plain fields")

    return refuse


class Handle:
    """A program object, held in the program's process; the judge only asks it for values."""

    __slots__ = ("_grpo_program", "_grpo_ref")

    def __init__(self, program, ref: int):
        object.__setattr__(self, "_grpo_program", program)
        object.__setattr__(self, "_grpo_ref", ref)

    def __getattr__(self, name: str):
        return self._grpo_program.ask("getattr", self._grpo_ref, name=name)

    def __setattr__(self, name: str, value) -> None:
        self._grpo_program.ask("setattr", self._grpo_ref, name=name, value=value)

    def __call__(self, *args, **kwargs):
        return self._grpo_program.call(self._grpo_ref, args, kwargs)

    def __getitem__(self, key):
        return self._grpo_program.ask("getitem", self._grpo_ref, key=key)

    def __setitem__(self, key, value) -> None:
        self._grpo_program.ask("setitem", self._grpo_ref, key=key, value=value)

    def __iter__(self):
        return self._grpo_program.ask("iter", self._grpo_ref)

    def __next__(self):
        return self._grpo_program.ask("next", self._grpo_ref)

    def __str__(self) -> str:
        return self._grpo_program.ask("str", self._grpo_ref)

    def __repr__(self) -> str:
        return self._grpo_program.ask("repr", self._grpo_ref)

    def __eq__(self, other):
        return self is other  # identity only (the program's process gives one Handle per object)

    def __ne__(self, other):
        return self is not other

    __hash__ = object.__hash__
    __bool__ = _refused("the truth of")
    __len__ = _refused("the length of")
    __contains__ = _refused("`in` on")
    __lt__ = __le__ = __gt__ = __ge__ = _refused("ordering")
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _refused("arithmetic on")
    __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = __mod__ = __rmod__ = _refused("arithmetic on")
    __pow__ = __rpow__ = __neg__ = __pos__ = __abs__ = _refused("arithmetic on")
    __int__ = __float__ = __index__ = __complex__ = _refused("converting")


def _remote(base: type) -> type:
    """`base` with the program's other attributes: what a value of a builtin subclass arrives as."""

    def __getattr__(self, name: str):
        if name.startswith("_grpo_") or name.startswith("__"):
            raise AttributeError(name)
        return self._grpo_program.ask("getattr", self._grpo_ref, name=name)

    return type(base.__name__, (base,), {"__getattr__": __getattr__, "__module__": "program"})


_REMOTE = {b: _remote(b) for b in (int, float, complex, str, bytes, bytearray, tuple, list, dict, set, frozenset)}


class _Names(dict):
    """A test's builtins: Python's own, then the program's names (asked for on first use, every use)."""

    def __init__(self, program):
        super().__init__(vars(builtins))
        self.program = program

    def __missing__(self, name: str):
        return self.program.ask("name", None, name=name)


def run_test(source: str, number: int, program) -> None:
    """Run one test against `program` (sandbox_runner.Program); it passes when this returns."""
    code = compile(source, f"<test {number}>", "exec")
    exec(code, {"__name__": "__test__", "__builtins__": _Names(program)})


def wrap(program, ref: int, value):
    """What a reference from the program's process becomes here (plain.decode's `resolve`)."""
    if value is None:
        return program.handle(ref)
    remote = _REMOTE.get(type(value))
    if remote is None:  # a bool, a range or a view: plain as it is
        return value
    out = remote(value)
    out._grpo_program, out._grpo_ref = program, ref
    return out


def ref_of(value):
    """The program's number for `value` if it came from the program (plain.encode's `refer`), else None."""
    if type(value) is Handle or type(value) in _REMOTE.values():
        return object.__getattribute__(value, "_grpo_ref")
    return None
