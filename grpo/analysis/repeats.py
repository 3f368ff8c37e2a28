"""Repeated runs of one configuration: runs whose params differ only in their seeds.

`python -m grpo.run -m +experiment=numgame_tiny seed=0,1,2,3,4` makes five runs of one
configuration; one of them is one draw, not a result. Here they are grouped (every param equal
but `seed` and the seeds derived from it), each metric summarised as mean ± sd with its min and
max, and each curve reduced to a band: the mean, ± one standard deviation, and the extremes.
The sd is the sample standard deviation (n - 1); one run has none.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from grpo.analysis.run_table import MetricSpec, RunRow, differing_params, fmt_metric, is_noisy
from grpo.analysis.runs import Store, parse_param
from grpo.tables import MISSING, Table

# What a repetition varies: the run's seed and what is derived from it (grpo/config/derived.py).
SEED_KEYS = ("seed", "derived.model_init_seed", "derived.data_seed")


def is_seed_key(key: str) -> bool:
    return key in SEED_KEYS


def configuration(run) -> tuple:
    """The run's params that say what was trained: all but noise and seeds."""
    params = run.data.params
    return tuple(sorted((k, v) for k, v in params.items() if not is_noisy(k) and not is_seed_key(k)))


def repeat_groups(rows: Sequence[RunRow]) -> list[list[RunRow]]:
    """Rows grouped by configuration, in the order each configuration first appears."""
    groups: dict[tuple, list[RunRow]] = {}
    for row in rows:
        groups.setdefault(configuration(row.run), []).append(row)
    return list(groups.values())


def has_repeats(rows: Sequence[RunRow]) -> bool:
    return any(len(g) > 1 for g in repeat_groups(rows))


# ------------------------------------------------------------------------------- statistics
@dataclass(frozen=True)
class Spread:
    """A metric over the runs of one configuration."""

    n: int
    mean: float
    sd: float | None  # sample sd (n - 1); None for one run
    min: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread | None:
        values = [v for v in values if v is not None and math.isfinite(v)]
        if not values:
            return None
        sd = statistics.stdev(values) if len(values) > 1 else None
        return cls(len(values), statistics.fmean(values), sd, min(values), max(values))

    def text(self) -> str:
        if self.sd is None:
            return fmt_metric(float(self.mean))
        sd = f"{self.sd:.2g}"  # two significant digits: the spread, not its spread
        return f"{fmt_metric(self.mean)} ± {sd} ({fmt_metric(self.min)}–{fmt_metric(self.max)})"

    def record(self) -> dict[str, Any]:
        return {"n": self.n, "mean": self.mean, "sd": self.sd, "min": self.min, "max": self.max}


def spread_cell(spread: Spread | None) -> Any:
    """A table cell: a dict (JSON keeps mean, sd, min, max, n), shown as `mean ± sd (min–max)`."""
    return MISSING if spread is None else spread.record()


def spread_text(cell: dict[str, Any]) -> str:
    return Spread(**cell).text()


# ----------------------------------------------------------------------------------- table
def summary_table(
    rows: Sequence[RunRow], specs: Sequence[MetricSpec], sort: MetricSpec | None, ascending: bool
) -> Table:
    """One row per configuration: the params that tell the configurations apart, how many runs
    and which seeds, and each metric as mean ± sd (min–max) over those runs."""
    groups = repeat_groups(rows)
    keys = [k for k in differing_params([g[0].run for g in groups]) if not is_seed_key(k)] if len(groups) > 1 else []
    labels = [s.label for s in specs]
    table = Table(columns=["run", *keys, "runs", "seeds", *labels])
    table.formatters = {label: spread_text for label in labels}
    table.right = {*labels, "runs"}
    spreads = [{s: Spread.of([r.metrics.get(s) for r in g]) for s in specs} for g in groups]
    order = list(range(len(groups)))
    if sort is not None:
        present = [i for i in order if spreads[i].get(sort) is not None]
        present.sort(key=lambda i: spreads[i][sort].mean, reverse=not ascending)
        order = present + [i for i in order if i not in present]
    for i in order:
        group, first = groups[i], groups[i][0]
        seeds = sorted(parse_param(r.run.data.params.get("seed", "None")) for r in group)
        table.rows.append(
            [
                first.name,
                *(first.params.get(k, MISSING) for k in keys),
                len(group),
                seeds,
                *(spread_cell(spreads[i][s]) for s in specs),
            ]
        )
    runs = sum(len(g) for g in groups)
    table.title = f"{runs} runs in {len(groups)} configuration{'s' if len(groups) != 1 else ''}"
    table.notes = [
        "metrics: mean ± sd (min–max) over the runs of each configuration, which differ only in their seeds; "
        "sd: the sample standard deviation (n - 1); a configuration run once shows its value"
    ]
    return table


# ------------------------------------------------------------------------------------ bands
@dataclass
class BandValues:
    steps: list[int]
    mean: list[float]
    sd: list[float]
    lo: list[float]
    hi: list[float]
    n: int  # runs in the band


def band_values(store: Store, group: Sequence[RunRow], metric: str) -> BandValues | None:
    """Per step, over the runs that logged it: mean, sd (0 where one run did), min and max."""
    by_step: dict[int, list[float]] = {}
    for row in group:
        for step, value in store.history(row.run.info.run_id, metric):
            by_step.setdefault(step, []).append(value)
    if not by_step:
        return None
    steps = sorted(by_step)
    spreads = [Spread.of(by_step[s]) for s in steps]
    return BandValues(
        steps=steps,
        mean=[s.mean for s in spreads],
        sd=[s.sd or 0.0 for s in spreads],
        lo=[s.min for s in spreads],
        hi=[s.max for s in spreads],
        n=len(group),
    )
