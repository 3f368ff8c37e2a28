"""A multi-objective study's Pareto front (`grpo.compare --study NAME`): the trials that no other
trial beats on every objective, as a table column and a PNG of the first two objectives.

The study's objectives and their directions come from its MLflow parent run's tags
(``optuna_metric_names``, ``optuna_directions``, written by the sweeper), the values from each
trial run's final metrics; only trials that completed (``optuna_state`` COMPLETE, or a
FINISHED run without that tag) can be on the front, as in Optuna's ``study.best_trials``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grpo import plots
from grpo.analysis.run_table import MetricSpec, RunRow
from grpo.analysis.runs import Store, study_parent
from grpo.tables import Table

PARETO_COLUMN = "pareto"


@dataclass(frozen=True)
class Objectives:
    names: list[str]
    directions: list[str]  # "maximize" | "minimize", one per name


@dataclass
class StudySelection:
    """`grpo.compare --study NAME`: the study's parent run (its trials are the parent's
    children) and, for a multi-objective study, its objectives."""

    name: str
    parent_id: str
    objectives: Objectives | None

    @classmethod
    def find(cls, store: Store, name: str) -> StudySelection:
        parent = study_parent(store, name)
        return cls(name, parent.info.run_id, study_objectives(parent))

    def columns(
        self, specs: list[MetricSpec], sort: MetricSpec | None, sort_asked: bool, ascending: bool
    ) -> tuple[list[MetricSpec], MetricSpec | None, bool]:
        """The table's metric columns with the objectives first, and (unless --sort was given)
        the order: by the first objective, best first."""
        if self.objectives is None:
            return specs, sort, ascending
        first = [MetricSpec(n) for n in self.objectives.names]
        if sort_asked:
            return first + [s for s in specs if s not in first], sort, ascending
        return first + [s for s in specs if s not in first], first[0], self.objectives.directions[0] == "minimize"

    def annotate(self, table: Table, rows: Sequence[RunRow]) -> None:
        """The trial number first; for several objectives, the `pareto` column and a note."""
        table.columns.insert(0, "trial")
        for row, cells in zip(rows, table.rows):
            cells.insert(0, trial_label(row))
        if self.objectives is not None:
            add_pareto_column(table, rows, front(rows, self.objectives))
        table.title = f"study {self.name}: {table.title}"

    def plots(self, rows: Sequence[RunRow], outdir: Path) -> list[Path]:
        if self.objectives is None:
            return []
        path = pareto_plot(rows, self.objectives, self.name, outdir)
        return [path] if path is not None else []


def study_objectives(parent: Any) -> Objectives | None:
    """The objectives of a multi-objective study's parent run; None for one objective."""
    tags = parent.data.tags
    directions = [d for d in tags.get("optuna_directions", "").split(",") if d]
    names = [n for n in tags.get("optuna_metric_names", "").split(",") if n]
    if len(directions) < 2 or len(names) != len(directions):
        return None
    return Objectives(names, directions)


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """Whether `a` is at least as good as `b` on every objective and better on one."""
    signs = [1.0 if d == "maximize" else -1.0 for d in directions]
    at_least = all(s * x >= s * y for s, x, y in zip(signs, a, b))
    better = any(s * x > s * y for s, x, y in zip(signs, a, b))
    return at_least and better


def pareto_indices(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """Indices of the points that no other point dominates."""
    return [i for i, p in enumerate(points) if not any(dominates(q, p, directions) for q in points if q is not p)]


def completed(row: RunRow) -> bool:
    state = row.run.data.tags.get("optuna_state")
    return state == "COMPLETE" if state else row.run.info.status == "FINISHED"


def values_of(row: RunRow, objectives: Objectives) -> list[float] | None:
    values = [row.metrics.get(MetricSpec(n)) for n in objectives.names]
    if any(v is None or not math.isfinite(v) for v in values):
        return None
    return [float(v) for v in values]  # type: ignore[arg-type]


def front(rows: Sequence[RunRow], objectives: Objectives) -> list[RunRow]:
    """The rows on the Pareto front, best first on the first objective."""
    scored = [(r, v) for r in rows if completed(r) and (v := values_of(r, objectives)) is not None]
    on_front = [scored[i] for i in pareto_indices([v for _, v in scored], objectives.directions)]
    sign = -1.0 if objectives.directions[0] == "maximize" else 1.0
    return [r for r, v in sorted(on_front, key=lambda rv: sign * rv[1][0])]


def add_pareto_column(table: Table, rows: Sequence[RunRow], on_front: Sequence[RunRow]) -> None:
    """A `pareto` column after the run's status: ★ for the front's trials."""
    ids = {r.run.info.run_id for r in on_front}
    at = table.columns.index("status") + 1
    table.columns.insert(at, PARETO_COLUMN)
    for row, cells in zip(rows, table.rows):
        cells.insert(at, "★" if row.run.info.run_id in ids else "")
    names = ", ".join(sorted((trial_label(r) for r in on_front), key=lambda s: int(s[1:]) if s[1:].isdigit() else 0))
    table.notes.append(f"★ Pareto front ({len(on_front)} of {len(rows)} trials): {names or 'none'}")


def trial_label(row: RunRow) -> str:
    trial = row.run.data.tags.get("optuna_trial")
    return f"#{trial}" if trial is not None else row.run.info.run_id[:8]


def pareto_plot(rows: Sequence[RunRow], objectives: Objectives, study: str, outdir: Path) -> Path | None:
    """The first two objectives of every completed trial, the front joined by a step line."""
    points = [(r, v) for r in rows if (v := values_of(r, objectives)) is not None]
    if len(points) < 2:
        return None
    on_front = {r.run.info.run_id for r in front(rows, objectives)}
    plt = plots._pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5.2), layout="constrained")
    (xname, yname), (xdir, ydir) = objectives.names[:2], objectives.directions[:2]
    others = [(r, v) for r, v in points if r.run.info.run_id not in on_front]
    best = sorted((v, r) for r, v in points if r.run.info.run_id in on_front)
    ax.scatter([v[0] for _, v in others], [v[1] for _, v in others], s=36, color="0.6", label="other trials", zorder=2)
    ax.scatter(
        [v[0] for v, _ in best],
        [v[1] for v, _ in best],
        s=90,
        color="tab:red",
        marker="*",
        label="Pareto front",
        zorder=3,
    )
    # the edge of the region the front dominates: flat after each point when x is minimised, before it when maximised
    where = "post" if xdir == "minimize" else "pre"
    ax.step([v[0] for v, _ in best], [v[1] for v, _ in best], where=where, color="tab:red", alpha=0.5, zorder=2)
    for r, v in points:
        ax.annotate(trial_label(r), (v[0], v[1]), xytext=(4, 4), textcoords="offset points", fontsize="x-small")
    ax.set_xlabel(f"{xname} ({'higher' if xdir == 'maximize' else 'lower'} is better)")
    ax.set_ylabel(f"{yname} ({'higher' if ydir == 'maximize' else 'lower'} is better)")
    for name, setter in ((xname, ax.set_xlim), (yname, ax.set_ylim)):
        if plots.is_fraction(name):
            setter(-0.03, 1.03)
    extra = (
        f"; objectives beyond the first two not shown: {', '.join(objectives.names[2:])}"
        if len(objectives.names) > 2
        else ""
    )
    ax.set_title(f"study {study}: Pareto front, {len(best)} of {len(points)} trials{extra}")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return plots._save(fig, outdir / f"pareto_{plots.slug(study)}.png")
