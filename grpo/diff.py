"""`python -m grpo.diff A B [C ...]`: what differs between compositions, as a table.

Seed 000 kept minimal_training.yaml aligned with training.yaml by hand and listed two of its
four differences; seeds 000/001 called a learning rate cut from 5e-5 to 2e-5 "higher". Here
each argument is composed exactly as `grpo.run` composes it, every differing leaf is listed
with the derived values (warm-up, totals, LoRA scaling, run name) beside it, and numbers
carry their direction and ratio against the first column (↓ ×0.4).

Exit 0 when the compositions are identical, 1 when they differ (a one-line alignment guard
for CI), 2 when one does not compose.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from grpo.config.flatten import flat_config
from grpo.tables import FORMATS, MISSING, Table, emit

# Groups outside the defaults list: Hydra needs `+group=x`, users write `group=x` (PRODUCT.md).
APPEND_GROUPS = ("preset", "experiment", "sweep")
DERIVED_PREFIX = "derived."


@dataclass
class Row:
    key: str
    values: list[Any]  # one per composition; MISSING where a composition lacks the key
    section: str = "config"  # config | derived
    note: str = ""  # for an equal row shown as context: the `enabled` switch it depends on

    @property
    def differs(self) -> bool:
        return len({canonical(v) for v in self.values}) > 1


def canonical(value: Any) -> str:
    """Equality that ignores Python's 1 == True == 1.0 and compares lists/dicts by content."""
    if value is MISSING:
        return "<missing>"
    return json.dumps(value, sort_keys=True, default=str) + type(value).__name__


def hydra_overrides(arg: str) -> list[str]:
    """One composition argument -> Hydra overrides (`preset=full` -> `+preset=full`)."""
    out = []
    for token in shlex.split(arg):
        key = token.split("=", 1)[0]
        out.append(f"+{token}" if key in APPEND_GROUPS and "=" in token else token)
    return out


def compose_arg(arg: str):
    """Compose one argument exactly as `python -m grpo.run <overrides>` would (raises on error)."""
    from grpo.compose import compose

    return compose(hydra_overrides(arg))


def leaves(comp) -> dict[str, Any]:
    return flat_config(comp.raw)


def derived_values(comp) -> dict[str, Any]:
    return {f.name: getattr(comp.derived, f.name) for f in fields(comp.derived)}


def config_rows(trees: Sequence[dict[str, Any]]) -> list[Row]:
    """Every leaf key in first-seen order, with one value per composition."""
    keys: dict[str, None] = {}
    for tree in trees:
        keys.update(dict.fromkeys(tree))
    return [Row(k, [t.get(k, MISSING) for t in trees]) for k in keys]


def derived_rows(comps: Sequence[Any]) -> list[Row]:
    values = [derived_values(c) for c in comps]
    return [Row(DERIVED_PREFIX + name, [v[name] for v in values], section="derived") for name in values[0]]


def restates_budget(row: Row, comps: Sequence[Any]) -> bool:
    """derived.grpo_steps / steps_per_epoch add nothing while trainer.max_steps fixes the budget."""
    max_steps = [c.cfg.trainer.max_steps for c in comps]
    if row.key == DERIVED_PREFIX + "grpo_steps":
        return row.values == max_steps
    if row.key == DERIVED_PREFIX + "steps_per_epoch":
        return all(m is not None for m in max_steps)
    return False


def switched_groups(rows: Sequence[Row]) -> dict[str, Row]:
    """Prefixes whose `enabled` switch differs: their other keys take effect in some columns only."""
    return {r.key[: -len("enabled")]: r for r in rows if r.key.endswith(".enabled") and r.differs}


def context_rows(rows: Sequence[Row]) -> set[int]:
    """Indices of equal rows that belong to a switched group (schedule.temperature.initial, ...)."""
    groups = switched_groups(rows)
    keep = set()
    for i, row in enumerate(rows):
        prefix = next((p for p in groups if row.key.startswith(p) and row.key != p + "enabled"), None)
        if prefix and not row.differs:
            row.note = prefix + "enabled"
            keep.add(i)
    return keep


def diff_rows(comps: Sequence[Any], show_all: bool = False) -> list[Row]:
    """Rows a reader needs: differing config leaves (+ keys of a switched group), then derived values."""
    config = config_rows([leaves(c) for c in comps])
    context = context_rows(config)
    shown = [r for i, r in enumerate(config) if show_all or r.differs or i in context]
    derived = [r for r in derived_rows(comps) if show_all or (r.differs and not restates_budget(r, comps))]
    return shown + derived


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def change(old: Any, new: Any) -> str:
    """Direction and ratio of a numeric change: `↓ ×0.4`, `↑ ×50`, `=`; '' when not numeric."""
    if not (is_number(old) and is_number(new)):
        return ""
    if new == old:
        return "="
    arrow = "↑" if new > old else "↓"
    if old == 0:
        return f"{arrow} from 0"
    ratio = new / old
    return f"{arrow} ×{ratio:.3g}" if ratio > 0 else arrow


def change_columns(labels: Sequence[str]) -> list[str]:
    if len(labels) == 2:
        return ["change"]
    return [f"change {label}" for label in labels[1:]]


def diff_table(labels: Sequence[str], rows: Sequence[Row]) -> Table:
    columns = ["key", *labels, *change_columns(labels)]
    table = Table(columns=columns, title=" vs ".join(labels))
    for row in rows:
        changes = [change(row.values[0], v) for v in row.values[1:]]
        table.rows.append([row.key, *row.values, *changes])
    config_count = sum(r.section == "config" for r in rows)
    if 0 < config_count < len(rows):
        table.sections.add(config_count - 1)
    for i, row in enumerate(rows):
        if row.note:
            table.styles[i] = "dim"
    table.notes = switch_notes(rows)
    return table


def switch_notes(rows: Sequence[Row]) -> list[str]:
    """Why equal rows are shown: they take effect only where their group's switch is on."""
    by_switch: dict[str, list[str]] = {}
    for r in rows:
        if r.note:
            by_switch.setdefault(r.note, []).append(r.key)
    return [f"{', '.join(keys)}: equal, in effect only where {switch}=true" for switch, keys in by_switch.items()]


def unique_labels(args: Sequence[str]) -> list[str]:
    labels: list[str] = []
    for arg in args:
        label = " ".join(arg.split()) or "(defaults)"
        n = sum(1 for existing in labels if existing == label or existing.startswith(label + " #"))
        labels.append(label if n == 0 else f"{label} #{n + 1}")
    return labels


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m grpo.diff",
        description="Compose each argument as grpo.run would and print the keys whose values differ. "
        "Exit 0: identical, 1: different, 2: a composition failed.",
        epilog='example: python -m grpo.diff preset=minimal preset=full "preset=full lora.rank=128"',
    )
    p.add_argument(
        "compositions",
        nargs="+",
        metavar="COMPOSITION",
        help="a preset/experiment (preset=minimal) or a quoted string of overrides "
        "(\"preset=full lora.rank=128\"); '' is the defaults",
    )
    p.add_argument("--all", action="store_true", help="show equal rows too")
    p.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    args = p.parse_args(argv)
    if len(args.compositions) < 2:
        p.error("give at least two compositions")
    return args


def one_line(exc: BaseException) -> str:
    """`explain`'s line; if explaining fails itself, the exception's first line (+ the options)."""
    from grpo.config.errors import explain

    try:
        return explain(exc)
    except Exception:  # noqa: BLE001 - a broken explanation must not hide the real error
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        options = getattr(exc, "options", None)
        return f"{first} (available: {', '.join(options)})" if options else first


def compose_all(args: Sequence[str], labels: Sequence[str]) -> list[Any]:
    """Compose every argument; a failure becomes a ValueError naming the argument in one line."""
    comps = []
    for arg, label in zip(args, labels):
        try:
            comps.append(compose_arg(arg))
        except Exception as exc:  # any failure to compose is the user's to fix: one line
            raise ValueError(f"{label}: {one_line(exc)}") from exc
    return comps


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    labels = unique_labels(args.compositions)
    try:
        comps = compose_all(args.compositions, labels)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = diff_rows(comps, show_all=args.all)
    different = any(r.differs for r in rows)
    if not rows and args.format == "table":
        print(f"identical: {' = '.join(labels)} ({len(leaves(comps[0]))} keys and the derived values)")
        return 0
    emit(diff_table(labels, rows), args.format)
    return 1 if different else 0


if __name__ == "__main__":
    sys.exit(main())
