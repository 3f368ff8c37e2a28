"""The program's process: runs the program and answers the judge's requests (grpo/rewards/judge.py).

Everything here runs beside the program, in the process it controls; nothing here decides a
verdict. It only turns what the judge asks for -- a name, an attribute, a call, an item, the next
item, `str()` -- into an answer: plain data, or a reference to an object it keeps for the judge
(grpo/rewards/plain.py). Whatever the program does to this code, the most it can change is which
values the judge receives, and choosing those is what every program does.

This module also runs inside the sandbox child (its source is sent there): standard library only,
Python >= 3.8.
"""

from __future__ import annotations

import ast
import builtins
import json
import os
import sys

from grpo.rewards.plain import decode, encode

MUTABLE = (list, dict, set, bytearray)  # arguments a call may change in place: sent back when it did


class Objects:
    """The program's objects the judge holds references to, numbered; one number per object."""

    def __init__(self):
        self.by_ref: list = []  # kept alive here, so no id() is reused while the judge may ask
        self.ref_of: dict = {}

    def refer(self, obj) -> int:
        ref = self.ref_of.get(id(obj))
        if ref is None:
            ref = self.ref_of[id(obj)] = len(self.by_ref)
            self.by_ref.append(obj)
        return ref

    def resolve(self, ref: int, _value=None):
        return self.by_ref[ref]


def serve(program: str, requests: int, answers: int) -> None:
    """Answer the judge's requests until it says "end" or its pipe closes; never returns."""
    reader = os.fdopen(requests, "rb")
    code = compile(program, "<solution>", "exec")
    try:  # a bare expression is bound to `answer` (output-prediction items test `answer`)
        expr = compile(ast.parse(program, mode="eval"), "<solution>", "eval")
    except BaseException:
        expr = None
    state = {"namespace": {}, "objects": Objects()}
    request: dict = {}
    while True:
        try:
            request = {}
            request = json.loads(reader.readline() or b'{"op": "end"}')
            if request["op"] == "end":
                break
            answer = _answer(request, state, code, expr)
        except BaseException as exc:
            answer = _raised(exc)
        try:
            send(answers, json.dumps(dict(answer, id=request.get("id"))).encode() + b"\n")
        except BaseException:
            break
    send(answers, json.dumps({"value": None, "id": request.get("id")}).encode() + b"\n")  # the reply to "end"
    sys.stdout.flush()
    os._exit(0)


def _answer(request: dict, state: dict, code, expr) -> dict:
    op = request["op"]
    if op == "program":  # run the program afresh: a new namespace, and no object of the last run
        namespace = state["namespace"] = {"__name__": "__main__", "__builtins__": builtins}
        state["objects"] = Objects()
        exec(code, namespace)
        if expr is not None and "answer" not in namespace:
            namespace["answer"] = eval(expr, namespace)
        return {"value": None}
    objects = state["objects"]
    target = objects.resolve(request["ref"]) if request.get("ref") is not None else None
    if op == "call":
        return _call(target, request, objects)
    if op == "name":
        if request["name"] not in state["namespace"]:
            raise NameError(f"name {request['name']!r} is not defined")
        value = state["namespace"][request["name"]]
    elif op == "getattr":
        value = getattr(target, request["name"])
    elif op == "getitem":
        value = target[decode(request["key"], objects.resolve)]
    elif op == "setattr":
        setattr(target, request["name"], decode(request["value"], objects.resolve))
        value = None
    elif op == "setitem":
        target[decode(request["key"], objects.resolve)] = decode(request["value"], objects.resolve)
        value = None
    elif op == "iter":
        value = iter(target)
    elif op == "next":
        value = next(target)
    elif op in ("str", "repr"):
        value = str(target) if op == "str" else repr(target)
    else:
        raise ValueError(f"unknown request {op!r}")
    return {"value": encode(value, objects.refer)}


def _call(target, request: dict, objects: Objects) -> dict:
    """Call `target`; send back the value, and each mutable argument the call changed."""
    args = [decode(a, objects.resolve) for a in request["args"]]
    kwargs = {k: decode(v, objects.resolve) for k, v in request["kwargs"].items()}
    value = target(*args, **kwargs)
    sent = list(enumerate(request["args"])) + list(request["kwargs"].items())
    given = list(enumerate(args)) + list(kwargs.items())
    changed = []
    for (key, before), (_, obj) in zip(sent, given):
        if type(obj) in MUTABLE:
            after = encode(obj, objects.refer)
            if after != before:
                changed.append([key, after])
    return {"value": encode(value, objects.refer), "changed": changed}


def _raised(exc: BaseException) -> dict:
    """What the program raised: the nearest builtin exception class's name, and the message."""
    name = "Exception"
    for kind in type(exc).__mro__:
        if kind.__module__ == "builtins":
            name = kind.__name__
            break
    try:
        message = str(exc)[:200]
    except BaseException:
        message = ""
    return {"raised": name, "message": message}


def send(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
