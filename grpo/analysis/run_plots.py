"""Plots of compared runs: each metric's curves by step, and each sweep's params against its objective.

The drawing is `grpo.plots`; here is what to draw: which runs, in what order, under which
legend labels, and which params a sweep varied.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from grpo import plots
from grpo.analysis.repeats import band_values, is_seed_key, repeat_groups
from grpo.analysis.run_table import MetricSpec, RunRow, differing_params, metric_value
from grpo.analysis.runs import PARENT_TAG, STUDY_TAG, Store, parse_param
from grpo.config.derived import short_value
from grpo.tables import cell_text

DEFAULT_CURVES = ("val/accuracy", "train/reward")
LOG_PARAMS_TAG = "optuna_log_params"  # a trial's params searched on a log scale (grpo/sweep/trial.py)
LEGEND_PARAMS = 8  # differing params named in a legend entry (a sweep's searched ones); the table has them all


# ----------------------------------------------------------------------------------- labels
def short_keys(keys: Sequence[str]) -> dict[str, str]:
    """`algorithm.kl_beta` -> `kl_beta` where the last part is unambiguous among `keys`."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def legend_value(value: Any) -> str:
    return short_value(value) if isinstance(value, float) else cell_text(value)


def legend_label(row: RunRow, keys: Sequence[str]) -> str:
    """What tells the runs apart: a sweep trial's number, then the params that differ between the
    runs (`#3 kl_beta=0.21 rce_lr=0.0025`); the run name (and id) when no param does."""
    short = short_keys([k for k in keys if not k.startswith("derived.")])
    shown = list(short)[:LEGEND_PARAMS]
    params = " ".join(f"{short[k]}={legend_value(row.params[k])}" for k in shown)
    if len(short) > len(shown):
        params += f" +{len(short) - len(shown)} more (see the table)"
    trial = row.run.data.tags.get("optuna_trial")
    if trial is not None:
        state = trial_state(row)
        return f"#{trial} {params}".strip() + ("" if state == "COMPLETE" else f" ({state.lower()})")
    if not params:
        return f"{row.name} [{row.run.info.run_id[:8]}]"
    return params


def numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def sortable(value: Any) -> tuple:
    return (0, value, "") if numeric(value) else (1, 0, cell_text(value))


def plot_order(rows: Sequence[RunRow], keys: Sequence[str]) -> list[RunRow]:
    """Legend order follows the differing params (kl_beta 0.01, 0.1, 1.0), not the table's sort;
    a sweep's trials go by trial number."""
    trials = [r.run.data.tags.get("optuna_trial", "") for r in rows]
    if all(t.isdigit() for t in trials):
        return [r for _, r in sorted(zip((int(t) for t in trials), rows), key=lambda pair: pair[0])]
    return sorted(rows, key=lambda r: tuple(sortable(r.params[k]) for k in keys))


# ----------------------------------------------------------------------------------- curves
def stage_boundary(rows: Sequence[RunRow]) -> int | None:
    """The step where GRPO starts, when every run had the same RCE stage before it."""
    values = {r.run.data.params.get("derived.rce_steps") for r in rows}
    if len(values) != 1:
        return None
    value = parse_param(values.pop() or "0")
    return value if isinstance(value, int) and value > 0 else None


def curve_plots(
    store: Store, rows: Sequence[RunRow], keys: Sequence[str], metrics: Sequence[str], outdir: Path, subtitle: str
) -> list[Path]:
    """A PNG per metric: a line per run; runs of one configuration over several seeds as one band."""
    groups = repeat_groups(plot_order(rows, keys))
    if any(len(g) > 1 for g in groups):  # seeds are what a band averages over, not what labels it
        keys = [k for k in keys if not is_seed_key(k)]
    names = {r.name for r in rows}
    shared_name = len(names) == 1 and any(not k.startswith("derived.") for k in keys)
    if shared_name:  # one name for all: say it once, above the plot, not in every legend entry
        subtitle = f"{subtitle}, runs {names.pop()}" if subtitle else f"runs {names.pop()}"
    written = []
    for metric in metrics:
        series, bands = curve_parts(store, groups, keys, metric)
        if series or bands:
            boundary = stage_boundary(rows)
            if boundary and max(max(s.steps) for s in [*series, *bands]) <= boundary:
                boundary = None
            path = outdir / f"{plots.slug(metric)}.png"
            written.append(plots.curves(series, metric, path, subtitle, boundary, bands=bands))
    return written


def curve_parts(
    store: Store, groups: Sequence[Sequence[RunRow]], keys: Sequence[str], metric: str
) -> tuple[list[plots.Series], list[plots.Band]]:
    """A line for each configuration run once, a band for each run several times."""
    series, bands = [], []
    for group in groups:
        label = legend_label(group[0], keys)
        if len(group) > 1:
            if not [k for k in keys if not k.startswith("derived.")]:  # no param tells it apart: no run id either
                label = group[0].name
            values = band_values(store, group, metric)
            if values:
                bands.append(plots.Band(label, values.steps, values.mean, values.sd, values.lo, values.hi, values.n))
            continue
        points = store.history(group[0].run.info.run_id, metric)
        if points:
            series.append(plots.Series(label, [s for s, _ in points], [v for _, v in points]))
    return series, bands


# ----------------------------------------------------------------------------------- sweeps
def sweep_groups(rows: Sequence[RunRow]) -> dict[str, list[RunRow]]:
    """Runs of one sweep: the same MLflow parent run or the same Optuna study (2 runs or more)."""
    groups: dict[str, list[RunRow]] = {}
    for row in rows:
        tags = row.run.data.tags
        key = tags.get(STUDY_TAG) or (f"parent-{tags[PARENT_TAG][:8]}" if PARENT_TAG in tags else None)
        if key:
            groups.setdefault(key, []).append(row)
    return {k: v for k, v in groups.items() if len(v) >= 2}


def varied_numeric_params(group: Sequence[RunRow]) -> list[str]:
    keys = differing_params([r.run for r in group])
    return [
        k
        for k in keys
        if not k.startswith("derived.") and all(numeric(parse_param(r.run.data.params.get(k, "None"))) for r in group)
    ]


def scatter_plots(store: Store, rows: Sequence[RunRow], outdir: Path) -> list[Path]:
    """For each sweep among the rows: its objective against each varied numeric param."""
    written = []
    for name, group in sweep_groups(rows).items():
        objective = group[0].run.data.params.get("optimized_metric", "val/accuracy")
        scored = [(r, metric_value(store, r.run, MetricSpec(objective))) for r in group]
        scored = [(r, y) for r, y in scored if y is not None and math.isfinite(y)]
        if len(scored) < 2:
            continue
        logs = {k for r, _ in scored for k in r.run.data.tags.get(LOG_PARAMS_TAG, "").split(",") if k}
        for key in varied_numeric_params([r for r, _ in scored]):
            points = [
                plots.Point(float(parse_param(r.run.data.params[key])), y, trial_label(r), trial_state(r))
                for r, y in scored
            ]
            path = outdir / f"sweep_{plots.slug(name)}_{plots.slug(key)}.png"
            title = f"sweep {name}: {objective} vs {key} ({len(points)} runs)"
            log_x = (key in logs) if logs else None  # as searched; else by the values' spread
            written.append(plots.scatter(points, key, objective, path, title, log_x=log_x))
    return written


def trial_label(row: RunRow) -> str:
    trial = row.run.data.tags.get("optuna_trial")
    return f"#{trial}" if trial is not None else row.run.info.run_id[:8]


def trial_state(row: RunRow) -> str:
    """COMPLETE, PRUNED or FAIL: the trial's Optuna state, else what its MLflow run says."""
    tags = row.run.data.tags
    if tags.get("optuna_state") in ("PRUNED", "FAIL", "COMPLETE"):
        return tags["optuna_state"]
    if tags.get("pruned") == "true":
        return "PRUNED"
    return "FAIL" if row.run.info.status == "FAILED" else "COMPLETE"
