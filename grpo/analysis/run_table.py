"""The comparison table: the params in which the chosen runs differ, beside their metrics.

Every run logs its full resolved config as params, so the differing ones can be listed
exactly; the equal ones, and bookkeeping such as paths and tags, are left out. Metrics are a
final value or an aggregate over the history (`val/accuracy:best`).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from grpo.analysis.runs import CompareError, Store, parse_param, wall_time
from grpo.tables import MISSING, Table
from grpo.tasks.lineage import PARAM_PREFIX, fingerprint

DEFAULT_METRICS = ("val/accuracy", "val/accuracy:best", "val/reward", "train/reward", "train/kl", "time/total")
# latest value | max | min | mean over the history | see STAGE_AGGREGATES
AGGREGATES = ("final", "best", "min", "mean", "rce", "gain")
# At the end of the RCE stage (step derived.rce_steps: with trainer.init_from and no RCE, the validation
# before training, i.e. the checkpoint), and final minus that: what the GRPO stage added.
STAGE_AGGREGATES = ("rce", "gain")
WALL_TIME = "time/total"  # falls back to the run's end - start when the run did not log it
# Params that differ between runs without saying anything about the training.
# `data.*` (digests and sources of the data read) are summed up in one `data` column instead.
NOISY_PREFIXES = ("logger.tags.", "paths.", "optuna_trial.", PARAM_PREFIX)
NOISY_KEYS = {
    "optuna_trial",
    "logger.parent_run_id",
    "logger.tracking_uri",
    "logger.run_name",
    "derived.run_name",
    "logger.tags",  # `{}` until a tag is set (a rerun's rerun_of)
}


# ---------------------------------------------------------------------------------- params
def is_noisy(key: str) -> bool:
    return key in NOISY_KEYS or key.startswith(NOISY_PREFIXES) or "output_dir" in key


def differing_params(runs: Sequence) -> list[str]:
    """Keys whose value is not the same on every run, config before derived.

    Absent counts as null: a run made before an optional key joined the schema did not change it.
    """
    keys = set().union(*(r.data.params for r in runs))
    differing = [k for k in keys if not is_noisy(k) and len({r.data.params.get(k, "None") for r in runs}) > 1]
    return sorted(differing, key=lambda k: (k.startswith("derived."), k))


def equal_param_count(runs: Sequence, differing: Sequence[str]) -> int:
    """Params logged by the runs that are neither noise nor differing (the table's note counts them)."""
    return len({k for r in runs for k in r.data.params if not is_noisy(k)}) - len(differing)


# ---------------------------------------------------------------------- data, checkpoints
DATA_COLUMN = "data"
CHECKPOINT_COLUMNS = ("best checkpoint", "final checkpoint")


def data_column(runs: Sequence) -> dict[str, Any]:
    """run id -> a short digest of the data it trained and validated on; empty when every run read
    the same data (or none logged it)."""
    prints = {r.info.run_id: fingerprint(r.data.params) for r in runs}
    if len(set(prints.values())) < 2:
        return {}
    return {k: MISSING if v is None else v for k, v in prints.items()}


def checkpoint_columns(runs: Sequence) -> dict[str, dict[str, Any]]:
    """column -> run id -> where its best / final adapter is: the `runs:/` artifact, else the local directory."""
    out: dict[str, dict[str, Any]] = {c: {} for c in CHECKPOINT_COLUMNS}
    for run in runs:
        tags = run.data.tags
        for column, which in zip(CHECKPOINT_COLUMNS, ("best", "final")):
            where = tags.get(f"{which}_checkpoint_uri") or tags.get(f"{which}_checkpoint")
            out[column][run.info.run_id] = where or MISSING
    return out


# --------------------------------------------------------------------------------- metrics
@dataclass(frozen=True)
class MetricSpec:
    name: str
    agg: str = "final"

    @property
    def label(self) -> str:
        return self.name if self.agg == "final" else f"{self.name} ({self.agg})"


def parse_metric(text: str) -> MetricSpec:
    """`val/accuracy` (final value), `val/accuracy:best` (max), `train/kl:min`."""
    name, sep, agg = text.rpartition(":")
    if not sep:
        return MetricSpec(text)
    if agg not in AGGREGATES:
        raise CompareError(
            f"metric {text!r}: unknown aggregate {agg!r} "
            "(use NAME, NAME:best, NAME:min, NAME:mean, NAME:rce or NAME:gain)"
        )
    return MetricSpec(name, agg)


def logged_metrics(runs: Sequence) -> set[str]:
    names = set().union(*(r.data.metrics for r in runs))
    if any(wall_time(r) is not None for r in runs):
        names.add(WALL_TIME)
    return names


def check_known(names: Iterable[str], runs: Sequence) -> None:
    known = logged_metrics(runs)
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise CompareError(
                f"unknown metric {name!r}{hint}; the chosen runs logged: {', '.join(sorted(known)) or 'nothing'}"
            )


def metric_value(store: Store, run, spec: MetricSpec) -> float | None:
    if spec.agg == "final":
        value = run.data.metrics.get(spec.name)
        return wall_time(run) if value is None and spec.name == WALL_TIME else value
    if spec.agg in STAGE_AGGREGATES:
        return stage_value(store, run, spec)
    values = [v for _, v in store.history(run.info.run_id, spec.name)]
    if not values:
        return None
    if spec.agg == "mean":
        return sum(values) / len(values)
    return max(values) if spec.agg == "best" else min(values)


def stage_value(store: Store, run, spec: MetricSpec) -> float | None:
    """`rce`: the value logged at the end of the RCE stage; `gain`: the final value minus it."""
    rce_steps = parse_param(run.data.params.get("derived.rce_steps", "None"))
    at_end = [v for s, v in store.history(run.info.run_id, spec.name) if s == rce_steps]
    if not at_end:
        return None
    if spec.agg == "rce":
        return at_end[-1]
    final = run.data.metrics.get(spec.name)
    return None if final is None else final - at_end[-1]


def choose_metrics(
    runs: Sequence, metrics: Sequence[str] | None, sort: str | None
) -> tuple[list[MetricSpec], MetricSpec | None]:
    """The metric columns and the sort key. Asked-for metrics must exist; absent defaults drop out."""
    specs = [parse_metric(m) for m in (metrics or DEFAULT_METRICS)]
    if metrics:
        check_known([s.name for s in specs], runs)
    else:
        known = logged_metrics(runs)
        specs = [s for s in specs if s.name in known]
    key = parse_metric(sort) if sort else (specs[0] if specs else None)
    if sort:
        check_known([key.name], runs)
        if key not in specs:
            specs.append(key)
    return specs, key


# ------------------------------------------------------------------------------------ rows
@dataclass
class RunRow:
    run: Any
    params: dict[str, Any]
    metrics: dict[MetricSpec, float | None]

    @property
    def name(self) -> str:
        return self.run.info.run_name or self.run.data.tags.get("mlflow.runName", "")


def build_rows(store: Store, runs: Sequence, keys: Sequence[str], specs: Sequence[MetricSpec]) -> list[RunRow]:
    return [
        RunRow(
            r,
            {k: parse_param(r.data.params[k]) if k in r.data.params else MISSING for k in keys},
            {s: metric_value(store, r, s) for s in specs},
        )
        for r in runs
    ]


def sort_rows(rows: list[RunRow], spec: MetricSpec | None, ascending: bool) -> list[RunRow]:
    """By `spec` (highest first unless ascending); runs without the metric go last."""
    if spec is None:
        return rows
    present = [r for r in rows if r.metrics.get(spec) is not None]
    absent = [r for r in rows if r.metrics.get(spec) is None]
    return sorted(present, key=lambda r: r.metrics[spec], reverse=not ascending) + absent


# ----------------------------------------------------------------------------------- table
def fmt_metric(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def runs_table(
    rows: Sequence[RunRow],
    keys: Sequence[str],
    specs: Sequence[MetricSpec],
    sort: MetricSpec | None,
    ascending: bool,
    equal_count: int,
    extra: dict[str, dict[str, Any]] | None = None,
) -> Table:
    """`extra`: more columns after the params, column -> run id -> value (data, checkpoints)."""
    extra = extra or {}
    labels = [s.label for s in specs]
    table = Table(columns=["run", "id", "status", *keys, *extra, *labels])
    table.formatters = {"id": lambda v: str(v)[:8], **{label: fmt_metric for label in labels}}
    table.right = set(labels)
    for row in rows:
        metrics = [MISSING if row.metrics[s] is None else row.metrics[s] for s in specs]
        run_id = row.run.info.run_id
        table.rows.append(
            [
                row.name,
                run_id,
                row.run.info.status,
                *(row.params[k] for k in keys),
                *(values.get(run_id, MISSING) for values in extra.values()),
                *metrics,
            ]
        )
    order = f", sorted by {sort.label} {'↑' if ascending else '↓'}" if sort else ""
    table.title = f"{len(rows)} run{'s' if len(rows) != 1 else ''}{order}"
    table.notes = [f"{equal_count} params equal on all runs are not shown" + ("" if keys else "; no param differs")]
    if DATA_COLUMN in extra:
        table.notes.append(f"the runs trained on different data: '{DATA_COLUMN}' digests each one's train/val data")
    return table
