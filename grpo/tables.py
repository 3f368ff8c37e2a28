"""One table model, five renderings: rich (terminal), plain text, markdown, CSV, JSON.

`grpo.diff`, `grpo.compare`, `grpo.eval` and `grpo.bench` build a `Table` of plain values and
hand it here, so they all print the same way: a rich table for reading, plain fixed-width text
where the table is also a log or an artifact, markdown for pasting into notes (the seeds'
comparison tables were written by hand), CSV and JSON for scripts. Cells keep their raw
values; text renderings format them, JSON keeps them as they are.

The bottom layer: it imports nothing from `grpo`, so any module may use it.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

FORMATS = ("table", "markdown", "csv", "json")


class _Missing:
    """A cell with no value (a key absent from one composition, a metric a run never logged)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


def cell_text(value: Any) -> str:
    """YAML-like text: what a user would write in an override (null, true, 2e-05, [a, b])."""
    if value is MISSING:
        return "—"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(cell_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {cell_text(v)}" for k, v in value.items()) + "}"
    return str(value)


def json_value(value: Any) -> Any:
    return None if value is MISSING else value


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    title: str | None = None
    notes: list[str] = field(default_factory=list)  # shown under the terminal and markdown tables
    formatters: dict[str, Callable[[Any], str]] = field(default_factory=dict)  # per column, text views only
    right: set[str] = field(default_factory=set)  # right-aligned (numeric) columns
    sections: set[int] = field(default_factory=set)  # row indices followed by a rule (terminal, text)
    styles: dict[int, str] = field(default_factory=dict)  # row index -> rich style

    def text(self, column: str, value: Any) -> str:
        if value is MISSING:
            return "—"
        fmt = self.formatters.get(column)
        return fmt(value) if fmt else cell_text(value)

    def records(self) -> list[dict[str, Any]]:
        return [{c: json_value(v) for c, v in zip(self.columns, row)} for row in self.rows]


def render(table: Table, fmt: str) -> str:
    """The table as text in `fmt` (see FORMATS); 'table' renders what rich would print."""
    if fmt == "markdown":
        return to_markdown(table)
    if fmt == "csv":
        return to_csv(table)
    if fmt == "json":
        return json.dumps(table.records(), indent=2, default=str) + "\n"
    if fmt == "table":
        buf = io.StringIO()
        print_rich(table, buf)
        return buf.getvalue()
    raise ValueError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")


def emit(table: Table, fmt: str, stream: TextIO | None = None) -> None:
    """Print to `stream` (stdout): rich output goes straight to the console, keeping colour."""
    stream = stream or sys.stdout
    if fmt == "table":
        print_rich(table, stream)
    else:
        stream.write(render(table, fmt))


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(table: Table) -> str:
    head = "| " + " | ".join(_md_escape(c) for c in table.columns) + " |"
    rule = "|" + "|".join("---:" if c in table.right else "---" for c in table.columns) + "|"
    lines = [head, rule]
    for row in table.rows:
        lines.append("| " + " | ".join(_md_escape(table.text(c, v)) for c, v in zip(table.columns, row)) + " |")
    if table.notes:
        lines += [""] + [f"_{n}_" for n in table.notes]
    return "\n".join(lines) + "\n"


def to_text(table: Table) -> str:
    """Fixed-width plain text: no box characters, so it reads the same in a terminal, a log or a
    .txt artifact. The title above, a rule under the header and under each section's last row."""
    rows = [list(table.columns)] + [[table.text(c, v) for c, v in zip(table.columns, row)] for row in table.rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(table.columns))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            t.rjust(w) if c in table.right else t.ljust(w) for c, t, w in zip(table.columns, cells, widths)
        )

    rule = "-" * len(line(rows[0]))
    lines = [*([table.title] if table.title else []), line(rows[0]), rule]
    for i, cells in enumerate(rows[1:]):
        lines.append(line(cells))
        if i in table.sections and i < len(table.rows) - 1:
            lines.append(rule)
    return "\n".join(lines + table.notes) + "\n"


def to_csv(table: Table) -> str:
    """Full precision (no column formatters): CSV is for further analysis."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(table.columns)
    for row in table.rows:
        writer.writerow(["" if v is MISSING else cell_text(v) for v in row])
    return buf.getvalue()


def print_rich(table: Table, stream: TextIO) -> None:
    """A rich table. Off a terminal: unbounded width (long names are not wrapped), no padding."""
    from rich.console import Console

    tty = stream.isatty()
    target = stream if tty else io.StringIO()
    console = Console(file=target, width=None if tty else 100_000, highlight=False)
    console.print(rich_table(table))
    for note in table.notes:
        console.print(note, style="dim")
    if not tty:
        stream.write("\n".join(line.rstrip() for line in target.getvalue().splitlines()) + "\n")


def rich_table(table: Table):
    from rich.table import Table as RichTable
    from rich.text import Text

    rt = RichTable(title=table.title, title_justify="left", header_style="bold")
    for c in table.columns:
        rt.add_column(c, justify="right" if c in table.right else "left", overflow="fold")
    for i, row in enumerate(table.rows):
        # Text, not markup: a list cell like "[q_proj, v_proj]" would read as a rich tag.
        rt.add_row(
            *(Text(table.text(c, v)) for c, v in zip(table.columns, row)),
            style=table.styles.get(i),
            end_section=i in table.sections,
        )
    return rt
