"""The workflow validator (seed 003's WorkflowValidatorV2): what a workflow must be before it runs.

A workflow is Python text that defines `solve(problem)` and calls operators by name; no imports,
the operators are there already:

    def solve(problem):
        answer = AnswerGenerate(problem)
        return Format(problem, answer)

We chose a plain function over AFlow's `class Workflow` with `async def __call__`: it is the
shortest form a small model can learn to write, and a workflow is still a program of operator calls.

The rules, each a reason a failure is counted under (`reward/aflow_invalid/<reason>`), checked in
this order:

    syntax               the text does not parse as Python
    import               an import statement (the operators need none, and nothing else is allowed in)
    top_level            a top-level statement other than `def` (helpers may be defined; nothing runs on load)
    entry_point          no `def solve(problem)` with exactly one parameter (async or a class is not one)
    forbidden_name       exec, eval, compile, open, __import__, getattr and the like, or any dunder name
    unknown_operator     a call to a name that is neither an operator, a function the workflow defines,
                         nor a plain builtin (len, str, int, max, sorted, ...)
    operator_arguments   an operator called with missing, surplus or unknown arguments
    no_operator          no operator is called at all: a workflow delegates to the executor
    constraint_*         the seed's operator constraints ("prevented Programmer/Test misuse", 003 L169); the
                         seed does not list them, ours are: `constraint_test_domain` (Test only on code
                         problems: it checks a program), `constraint_programmer_domain` (no Programmer on qa
                         problems: a program cannot answer a fact), `constraint_ensemble_size` (ScEnsemble given
                         a literal list of fewer than 2 solutions), `constraint_call_sites` (more than
                         MAX_CALL_SITES operator calls written in the text)

A workflow that passes runs in the sandbox (grpo/rewards/aflow/runner.py); one that fails scores the
lowest tier and is never executed. `patch_indentation` is seed 003's reactive patching: with
`reward.patch_indentation`, a workflow refused only for its layout is re-indented and checked again.
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass, field

from grpo.rewards.aflow.operators import OPERATORS

MAX_CALL_SITES = 8
ENTRY_POINT = "solve"
FORBIDDEN_NAMES = frozenset(
    [
        "exec",
        "eval",
        "compile",
        "open",
        "__import__",
        "globals",
        "locals",
        "vars",
        "getattr",
        "setattr",
        "delattr",
        "input",
        "breakpoint",
        "exit",
        "quit",
        "help",
        "memoryview",
        "type",
        "object",
        "super",
        "classmethod",
        "staticmethod",
        "property",
    ]
)
PLAIN_BUILTINS = frozenset(
    [
        "len",
        "str",
        "int",
        "float",
        "bool",
        "max",
        "min",
        "sorted",
        "reversed",
        "range",
        "enumerate",
        "list",
        "dict",
        "set",
        "tuple",
        "abs",
        "round",
        "sum",
        "any",
        "all",
        "zip",
        "map",
        "filter",
        "isinstance",
        "repr",
        "print",
    ]
)
REASONS = (
    "syntax",
    "import",
    "top_level",
    "entry_point",
    "forbidden_name",
    "unknown_operator",
    "operator_arguments",
    "no_operator",
    "constraint_test_domain",
    "constraint_programmer_domain",
    "constraint_ensemble_size",
    "constraint_call_sites",
)


@dataclass(frozen=True)
class Validation:
    ok: bool
    reason: str | None = None  # one of REASONS when not ok
    detail: str = ""
    operators: tuple[str, ...] = field(default_factory=tuple)  # operator call sites, in text order

    @staticmethod
    def fail(reason: str, detail: str) -> Validation:
        return Validation(False, reason, detail)


def _operator_arguments(call: ast.Call, name: str) -> str | None:
    op = OPERATORS[name]
    allowed = (*op.inputs, *op.optional)
    if any(isinstance(a, ast.Starred) for a in call.args) or any(k.arg is None for k in call.keywords):
        return f"{name}: no *args or **kwargs"
    if len(call.args) > len(allowed):
        return f"{name} takes at most {len(allowed)} arguments ({', '.join(allowed)})"
    given = set(allowed[: len(call.args)])
    for kw in call.keywords:
        if kw.arg not in allowed or kw.arg in given:
            return f"{name}: unexpected or repeated argument {kw.arg!r}"
        given.add(kw.arg)
    missing = [k for k in op.inputs if k not in given]
    return f"{name}: missing {', '.join(missing)}" if missing else None


def _shape(tree: ast.Module) -> Validation | None:
    """The module's top level: only function definitions, one of them `solve(problem)`."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            return Validation.fail("import", f"line {node.lineno}: imports are not allowed")
    entry = None
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            continue  # a docstring
        if not isinstance(node, ast.FunctionDef):
            return Validation.fail("top_level", f"line {node.lineno}: only `def` statements at the top level")
        if node.name == ENTRY_POINT:
            entry = node
    if entry is None:
        return Validation.fail("entry_point", f"define `def {ENTRY_POINT}(problem):`")
    a = entry.args
    if len(a.args) != 1 or a.vararg or a.kwarg or a.kwonlyargs or a.posonlyargs or a.defaults:
        return Validation.fail("entry_point", f"`{ENTRY_POINT}` takes exactly one parameter, the problem")
    return None


def _names_and_calls(tree: ast.Module, domain: str | None) -> Validation:
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    calls: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None
        if name is not None and (name in FORBIDDEN_NAMES or name.startswith("__")):
            return Validation.fail("forbidden_name", f"line {node.lineno}: {name!r} is not allowed")
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
            continue
        called = node.func.id
        if called in OPERATORS:
            if (why := _operator_arguments(node, called)) is not None:
                return Validation.fail("operator_arguments", f"line {node.lineno}: {why}")
            constraint = _constraint(node, called, domain)
            if constraint is not None:
                return Validation.fail(constraint, f"line {node.lineno}: {called}")
            calls.append((node.lineno, called))
        elif called not in defined and called not in PLAIN_BUILTINS:
            return Validation.fail("unknown_operator", f"line {node.lineno}: {called!r} is not an operator")
    if not calls:
        return Validation.fail("no_operator", "the workflow calls no operator")
    if len(calls) > MAX_CALL_SITES:
        return Validation.fail("constraint_call_sites", f"{len(calls)} operator calls (at most {MAX_CALL_SITES})")
    return Validation(True, operators=tuple(name for _, name in sorted(calls)))


def _constraint(call: ast.Call, name: str, domain: str | None) -> str | None:
    if name == "Test" and domain is not None and domain != "code":
        return "constraint_test_domain"
    if name == "Programmer" and domain == "qa":
        return "constraint_programmer_domain"
    if name == "ScEnsemble":
        first = call.args[0] if call.args else next((k.value for k in call.keywords if k.arg == "solutions"), None)
        if isinstance(first, (ast.List, ast.Tuple)) and len(first.elts) < 2:
            return "constraint_ensemble_size"
    return None


def patch_indentation(source: str) -> str | None:
    """Seed 003's reactive patching (L168, "fixed indentation bugs"): a workflow whose only fault is
    its indentation (it does not parse, or a body line sits at the top level), re-indented; None
    when it needs no patch or the repairs do not give it a parsing, def-only top level. The repairs,
    each applied on the last one's text until one works: tabs as 4 spaces and the common margin
    removed (a workflow indented as a whole); every indent width mapped to its depth (levels 4 spaces
    apart: 2/3/4-space mixes, a dedent to a width never opened); lines at column 0 after a
    top-level `def` indented into it (the top level may hold only `def`s)."""
    if _defs_only(source):
        return None
    text = textwrap.dedent(source.expandtabs(4))
    for repair in (lambda t: t, _indent_by_depth, _body_under_def):
        text = repair(text)
        if _defs_only(text):
            return text.rstrip("\n") + "\n"
    return None


def _defs_only(source: str) -> bool:
    """It parses, and its top level holds only `def`s (and a docstring)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False
    return all(
        isinstance(n, ast.FunctionDef) or (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))
        for n in tree.body
    )


def _indent_by_depth(text: str) -> str:
    """Each line's indent width replaced by 4 spaces per level: a deeper line opens a level only
    after a line ending in `:` (else it stays on the current one), and a width between two open
    levels closes back to the lower one."""
    out, open_widths, opens = [], [0], False
    for line in text.splitlines():
        body = line.lstrip(" ")
        if not body:
            out.append("")
            continue
        width = len(line) - len(body)
        while width < open_widths[-1]:
            open_widths.pop()
        if width > open_widths[-1] and opens:
            open_widths.append(width)
        out.append("    " * (len(open_widths) - 1) + body)
        opens = body.split("#", 1)[0].rstrip().endswith(":")
    return "\n".join(out)


def _body_under_def(text: str) -> str:
    """Every line at column 0 after a top-level `def`, up to the next one, indented under it."""
    out, in_def = [], False
    for line in text.splitlines():
        top = bool(line) and not line[0].isspace()
        if top and line.startswith("def "):
            in_def = True
        elif top and in_def:
            line = "    " + line
        out.append(line)
    return "\n".join(out)


def validate(source: str, domain: str | None = None) -> Validation:
    """Whether `source` is a workflow that may run on a problem of `domain` (None: any domain)."""
    if not source.strip():
        return Validation.fail("syntax", "empty workflow")
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
        return Validation.fail("syntax", f"{type(exc).__name__}: {exc}")
    return _shape(tree) or _names_and_calls(tree, domain)
