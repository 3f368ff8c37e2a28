"""Plain data: the values that cross between the judge and a program's process (grpo/rewards/sandbox.py).

`encode` turns None, bool, int, float, complex, str, bytes, bytearray, range, dict views and
list, tuple, set, frozenset and dict of them into JSON-able data, reading each through the builtin
type's own slots, never a method of the value's class. `decode` builds the same builtin values
back, so what the judge compares was built by the judge.

Anything else crosses as a reference, never as itself: the side that holds the object gives it
a number (`refer`), the other side receives ["handle", n], which its `resolve` turns into what it
uses there (the judge: an opaque Handle; the program's process: the object again). A subclass of
a builtin type (a namedtuple, an IntEnum, `class S(str)` with its own `__eq__`) crosses as its
builtin value, read through the base type's slots, plus a reference: ["sub", n, value]. Without
`refer`, an iterator is read to its end (["iterator", items]) and anything else raises NotPlainData.

This module also runs inside the sandbox child (its source is sent there): standard library only,
Python >= 3.8.
"""

from __future__ import annotations

MAX_ITEMS = 1_000_000  # values with more parts than this (all levels together) are refused
_BIG = 1 << 60  # ints at least this large travel as hex text (no int <-> str digit limit)
_BASES = (str, int, float, complex, bytes, bytearray, list, tuple, set, frozenset, dict)
_VIEWS = {type({}.keys()): "dict_keys", type({}.values()): "dict_values", type({}.items()): "dict_items"}


class NotPlainData(TypeError):
    """A value that is neither plain data nor something the sender can refer to."""


def encode(value, refer=None, budget: list | None = None):
    """`value` as JSON-able data: small ints, bools, str and None as themselves, the rest tagged lists."""
    budget = [MAX_ITEMS] if budget is None else budget
    budget[0] -= 1
    if budget[0] < 0:
        raise NotPlainData("the value is too large")
    kind = type(value)
    if value is None or kind is bool:
        return value
    base = next((b for b in _BASES if issubclass(kind, b)), None)
    if base is not None:
        plain = _builtin(value, base, refer, budget)
        ref = refer(value) if refer is not None and kind is not base else None
        return plain if ref is None else ["sub", ref, plain]
    if kind is range:
        return ["range", [value.start, value.stop, value.step]]
    if kind in _VIEWS:
        return [_VIEWS[kind], [encode(v, refer, budget) for v in value]]
    ref = refer(value) if refer is not None else None
    if ref is not None:
        return ["handle", ref]
    if hasattr(kind, "__next__"):  # an iterator of the sender's own (a generator, map): read to its end
        return ["iterator", [encode(v, refer, budget) for v in _limited(value, budget)]]
    raise NotPlainData(f"a {_name(kind)} is not plain data (None, bool, int, float, complex, str, bytes, containers)")


def _builtin(value, base, refer, budget: list):
    """The builtin value `value` holds, through `base`'s own slots."""
    if base is str:
        return str.__str__(value)
    if base is int:
        number = int.__index__(value)
        return number if -_BIG < number < _BIG else ["int", int.__format__(number, "x")]
    if base is float:
        return ["float", float.hex(value)]
    if base is complex:
        return ["complex", float.hex(complex.real.__get__(value)), float.hex(complex.imag.__get__(value))]
    if base is bytes or base is bytearray:
        return [base.__name__, base.hex(value)]
    if base is dict:
        return ["dict", [[encode(k, refer, budget), encode(v, refer, budget)] for k, v in dict.items(value)]]
    return [base.__name__, [encode(v, refer, budget) for v in base.__iter__(value)]]


def _limited(iterator, budget: list):
    for item in iterator:
        if budget[0] <= 0:
            raise NotPlainData("the iterator is too long (or endless)")
        yield item


def _name(kind) -> str:
    try:
        return str(type.__getattribute__(kind, "__name__"))
    except BaseException:
        return "value"


_CONTAINERS = {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}
_REBUILT = {  # built here from their items: a real range, dict view or iterator of the receiver's own
    "range": lambda items: range(*[int.__index__(i) for i in items]),
    "dict_keys": lambda items: dict.fromkeys(items).keys(),
    "dict_values": lambda items: dict(enumerate(items)).values(),
    "dict_items": lambda items: dict(tuple(kv) for kv in items).items(),
    "iterator": iter,
}


def decode(data, resolve=None):
    """The value `data` (from `encode`) stands for; references go through `resolve(n, value or None)`.

    Raises ValueError (or TypeError) for anything malformed, and for references without `resolve`.
    """
    kind = type(data)
    if data is None or kind is bool or kind is str or kind is int:
        return data
    if kind is not list or not data or type(data[0]) is not str:
        raise ValueError("malformed plain data")
    tag, rest = data[0], data[1:]
    if tag in ("handle", "sub") and resolve is not None and rest and type(rest[0]) is int:
        if tag == "handle" and len(rest) == 1:
            return resolve(rest[0], None)
        if tag == "sub" and len(rest) == 2:
            return resolve(rest[0], decode(rest[1], resolve))
    if tag in _CONTAINERS and len(rest) == 1 and type(rest[0]) is list:
        return _CONTAINERS[tag](decode(v, resolve) for v in rest[0])
    if tag in _REBUILT and len(rest) == 1 and type(rest[0]) is list:
        return _REBUILT[tag]([decode(v, resolve) for v in rest[0]])
    if tag == "dict" and len(rest) == 1 and type(rest[0]) is list:
        if not all(type(kv) is list and len(kv) == 2 for kv in rest[0]):
            raise ValueError("malformed plain data")
        return {decode(k, resolve): decode(v, resolve) for k, v in rest[0]}
    if all(type(r) is str for r in rest):
        if tag == "int" and len(rest) == 1:
            return int(rest[0], 16)
        if tag == "float" and len(rest) == 1:
            return float.fromhex(rest[0])
        if tag == "complex" and len(rest) == 2:
            return complex(float.fromhex(rest[0]), float.fromhex(rest[1]))
        if tag in ("bytes", "bytearray") and len(rest) == 1:
            return (bytes if tag == "bytes" else bytearray).fromhex(rest[0])
    raise ValueError("malformed plain data")
