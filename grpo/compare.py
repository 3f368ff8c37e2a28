"""`python -m grpo.compare`: tracked runs side by side, the params that differ next to the metrics.

Seed 004 compared runs by hand and blamed a regression on "fewer epochs" without a recorded
config of the tested run. Every run here logs its full resolved config as params, so this
command can list exactly the params in which the chosen runs differ (the equal ones, and
bookkeeping such as paths and tags, are left out) beside final and best metrics. `--plot`
writes the curves and, for a sweep, each varied param against the objective.

Errors are one line on stderr with exit code 2: no store, no runs, an unknown experiment
(the existing ones are listed) or an unknown metric (the logged ones are listed).
"""

from __future__ import annotations

import argparse
import ast
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grpo.tables import FORMATS, MISSING, Table, cell_text, emit

DEFAULT_EXPERIMENT = "grpo-suite"
DEFAULT_LAST = 20
DEFAULT_METRICS = ("val/accuracy", "val/accuracy:best", "val/reward", "train/reward", "train/kl", "time/total")
DEFAULT_CURVES = ("val/accuracy", "train/reward")
AGGREGATES = ("final", "best", "min")  # latest value | max over the history | min over the history
WALL_TIME = "time/total"  # falls back to the run's end - start when the run did not log it
PARENT_TAG = "mlflow.parentRunId"
STUDY_TAG = "optuna_study"
LEGEND_PARAMS = 4  # differing params named in a legend entry; the table has them all
# Params that differ between runs without saying anything about the training.
NOISY_PREFIXES = ("logger.tags.", "paths.", "optuna_trial.")
NOISY_KEYS = {"optuna_trial", "logger.parent_run_id", "logger.tracking_uri", "logger.run_name", "derived.run_name"}


class CompareError(Exception):
    """A one-line message for the user (exit code 2)."""


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
        raise CompareError(f"metric {text!r}: unknown aggregate {agg!r} (use NAME, NAME:best or NAME:min)")
    return MetricSpec(name, agg)


# ------------------------------------------------------------------------------------ store
@dataclass
class Store:
    """An MLflow client plus a cache of metric histories (the table and the plots share them)."""

    client: Any
    uri: str
    histories: dict[tuple[str, str], list[tuple[int, float]]] = field(default_factory=dict)

    def history(self, run_id: str, metric: str) -> list[tuple[int, float]]:
        """(step, value) pairs in step order, non-finite values dropped."""
        key = (run_id, metric)
        if key not in self.histories:
            points = self.client.get_metric_history(run_id, metric)
            self.histories[key] = sorted((m.step, m.value) for m in points if math.isfinite(m.value))
        return self.histories[key]


def sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


def open_store(uri: str) -> Store:
    """A client on `uri`; a missing SQLite file is reported, not silently created."""
    path = sqlite_path(uri)
    if path is not None and not path.exists():
        raise CompareError(
            f"no MLflow store at {path}: nothing has been tracked there yet "
            "(run `python -m grpo.run ...` first, or pass --tracking-uri)"
        )
    from mlflow.tracking import MlflowClient

    return Store(MlflowClient(tracking_uri=uri), uri)


def default_tracking_uri() -> str:
    """Where `grpo.run` logs by default: the composed logger.tracking_uri."""
    from grpo.compose import compose

    return compose([]).cfg.logger.tracking_uri


def default_plot_dir() -> Path:
    from grpo.compose import compose

    return Path(compose([]).cfg.paths.outputs) / "plots"


# -------------------------------------------------------------------------------- selection
def experiment_ids(store: Store, names: Sequence[str]) -> list[str]:
    experiments = {e.name: e.experiment_id for e in store.client.search_experiments()}
    for name in names:
        if name not in experiments:
            if not store_has_runs(store, list(experiments.values())):
                raise CompareError(f"the store {store.uri} has no runs yet (run `python -m grpo.run ...` first)")
            raise CompareError(f"no experiment {name!r} in {store.uri} (existing: {', '.join(sorted(experiments))})")
    return [experiments[n] for n in names]


def store_has_runs(store: Store, ids: list[str]) -> bool:
    return bool(ids) and bool(store.client.search_runs(ids, max_results=1))


def run_filter(parent: str | None, tags: Sequence[str]) -> str:
    """An MLflow filter string: children of `parent`, carrying every `key=value` tag."""
    clauses = [f"tags.`{PARENT_TAG}` = '{parent}'"] if parent else []
    for tag in tags:
        key, value = tag.split("=", 1)
        clauses.append(f"tags.`{key}` = '{value}'")
    return " and ".join(clauses)


def is_training_run(run) -> bool:
    """A sweep's parent run logs no params; it has nothing to compare."""
    return bool(run.data.params)


def search(store: Store, ids: list[str], filter_string: str, limit: int | None) -> list:
    """Newest first, training runs only, at most `limit` (all when None), across result pages."""
    runs, token = [], None
    while True:
        page = store.client.search_runs(
            ids,
            filter_string=filter_string,
            order_by=["attributes.start_time DESC"],
            max_results=1000,
            page_token=token,
        )
        runs += [r for r in page if is_training_run(r)]
        token = page.token
        if not token or (limit is not None and len(runs) >= limit):
            return runs[:limit] if limit is not None else runs


def get_run(store: Store, run_id: str):
    """A run by id, or by a unique prefix of its id (the table shows 8 characters)."""
    from mlflow.exceptions import MlflowException

    if len(run_id) == 32:
        try:
            return store.client.get_run(run_id)
        except MlflowException:
            raise CompareError(f"no run {run_id!r} in {store.uri}") from None
    ids = [e.experiment_id for e in store.client.search_experiments()]
    found = (
        store.client.search_runs(ids, filter_string=f"attributes.run_id LIKE '{run_id}%'", max_results=2) if ids else []
    )
    if len(found) != 1:
        raise CompareError(f"{'no' if not found else 'more than one'} run with id {run_id!r}... in {store.uri}")
    return found[0]


def select_runs(store: Store, args: argparse.Namespace) -> list:
    if args.runs:
        return [get_run(store, r) for r in args.runs]
    if args.parent:
        parent = get_run(store, args.parent)
        ids, args.parent = [parent.info.experiment_id], parent.info.run_id
    else:
        ids = experiment_ids(store, args.experiment)
    limit = args.last if args.last is not None else (None if args.parent else DEFAULT_LAST)
    runs = search(store, ids, run_filter(args.parent, args.tag), limit)
    if not runs:
        raise CompareError(no_runs_message(store, args, ids))
    return runs


def no_runs_message(store: Store, args: argparse.Namespace, ids: list[str]) -> str:
    if not store_has_runs(store, [e.experiment_id for e in store.client.search_experiments()]):
        return f"the store {store.uri} has no runs yet (run `python -m grpo.run ...` first)"
    criteria = ([f"--parent {args.parent}"] if args.parent else []) + [f"--tag {t}" for t in args.tag]
    where = "the parent's experiment" if args.parent else "experiment " + ", ".join(repr(n) for n in args.experiment)
    return f"no runs matched {' '.join(criteria) or '(any run)'} in {where} of {store.uri}"


# --------------------------------------------------------------------------- params/metrics
def parse_param(text: str) -> Any:
    """MLflow stores str(value): give numbers, booleans, None and lists back their type."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def is_noisy(key: str) -> bool:
    return key in NOISY_KEYS or key.startswith(NOISY_PREFIXES) or "output_dir" in key


def differing_params(runs: Sequence) -> list[str]:
    """Keys whose value is not the same on every run, config before derived.

    Absent counts as null: a run made before an optional key joined the schema did not change it.
    """
    keys = set().union(*(r.data.params for r in runs))
    differing = [k for k in keys if not is_noisy(k) and len({r.data.params.get(k, "None") for r in runs}) > 1]
    return sorted(differing, key=lambda k: (k.startswith("derived."), k))


def wall_time(run) -> float | None:
    if run.info.end_time and run.info.start_time:
        return (run.info.end_time - run.info.start_time) / 1000.0
    return None


def logged_metrics(runs: Sequence) -> set[str]:
    names = set().union(*(r.data.metrics for r in runs))
    if any(wall_time(r) is not None for r in runs):
        names.add(WALL_TIME)
    return names


def check_known(names: Iterable[str], runs: Sequence) -> None:
    import difflib

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
    values = [v for _, v in store.history(run.info.run_id, spec.name)]
    if not values:
        return None
    return max(values) if spec.agg == "best" else min(values)


def choose_metrics(args: argparse.Namespace, runs: Sequence) -> tuple[list[MetricSpec], MetricSpec]:
    """The metric columns and the sort key. Asked-for metrics must exist; absent defaults drop out."""
    specs = [parse_metric(m) for m in (args.metrics or DEFAULT_METRICS)]
    if args.metrics:
        check_known([s.name for s in specs], runs)
    else:
        known = logged_metrics(runs)
        specs = [s for s in specs if s.name in known]
    sort = parse_metric(args.sort) if args.sort else (specs[0] if specs else None)
    if args.sort:
        check_known([sort.name], runs)
        if sort not in specs:
            specs.append(sort)
    return specs, sort


# ------------------------------------------------------------------------------------ table
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


def fmt_metric(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def runs_table(
    rows: Sequence[RunRow],
    keys: Sequence[str],
    specs: Sequence[MetricSpec],
    sort: MetricSpec | None,
    ascending: bool,
    equal_count: int,
) -> Table:
    labels = [s.label for s in specs]
    table = Table(columns=["run", "id", "status", *keys, *labels])
    table.formatters = {"id": lambda v: str(v)[:8], **{label: fmt_metric for label in labels}}
    table.right = set(labels)
    for row in rows:
        metrics = [MISSING if row.metrics[s] is None else row.metrics[s] for s in specs]
        table.rows.append(
            [row.name, row.run.info.run_id, row.run.info.status, *(row.params[k] for k in keys), *metrics]
        )
    order = f", sorted by {sort.label} {'↑' if ascending else '↓'}" if sort else ""
    table.title = f"{len(rows)} run{'s' if len(rows) != 1 else ''}{order}"
    table.notes = [f"{equal_count} params equal on all runs are not shown" + ("" if keys else "; no param differs")]
    return table


# ------------------------------------------------------------------------------------ plots
def short_keys(keys: Sequence[str]) -> dict[str, str]:
    """`algorithm.kl_beta` -> `kl_beta` where the last part is unambiguous among `keys`."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def legend_label(row: RunRow, keys: Sequence[str], with_name: bool = True) -> str:
    """Run name + the params that tell the runs apart (`kl_beta=0.1`); the name alone if none does."""
    short = short_keys([k for k in keys if not k.startswith("derived.")])
    shown = list(short)[:LEGEND_PARAMS]
    params = ", ".join(f"{short[k]}={cell_text(row.params[k])}" for k in shown)
    if len(short) > len(shown):
        params += f", +{len(short) - len(shown)} more"
    if not params:
        return f"{row.name} [{row.run.info.run_id[:8]}]"
    return f"{row.name} ({params})" if with_name else params


def sortable(value: Any) -> tuple:
    return (0, value, "") if numeric(value) else (1, 0, cell_text(value))


def plot_order(rows: Sequence[RunRow], keys: Sequence[str]) -> list[RunRow]:
    """Legend order follows the differing params (kl_beta 0.01, 0.1, 1.0), not the table's sort."""
    return sorted(rows, key=lambda r: tuple(sortable(r.params[k]) for k in keys))


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
    from grpo import plots

    names = {r.name for r in rows}
    shared_name = len(names) == 1 and any(not k.startswith("derived.") for k in keys)
    if shared_name:  # one name for all: say it once, above the plot, not in every legend entry
        subtitle = f"{subtitle}, runs {names.pop()}" if subtitle else f"runs {names.pop()}"
    written = []
    for metric in metrics:
        series = []
        for row in plot_order(rows, keys):
            points = store.history(row.run.info.run_id, metric)
            if points:
                label = legend_label(row, keys, with_name=not shared_name)
                series.append(plots.Series(label, [s for s, _ in points], [v for _, v in points]))
        if series:
            boundary = stage_boundary(rows)
            if boundary and max(max(s.steps) for s in series) <= boundary:
                boundary = None
            written.append(plots.curves(series, metric, outdir / f"{plots.slug(metric)}.png", subtitle, boundary))
    return written


def sweep_groups(rows: Sequence[RunRow]) -> dict[str, list[RunRow]]:
    """Runs of one sweep: the same MLflow parent run or the same Optuna study (2 runs or more)."""
    groups: dict[str, list[RunRow]] = {}
    for row in rows:
        tags = row.run.data.tags
        key = tags.get(STUDY_TAG) or (f"parent-{tags[PARENT_TAG][:8]}" if PARENT_TAG in tags else None)
        if key:
            groups.setdefault(key, []).append(row)
    return {k: v for k, v in groups.items() if len(v) >= 2}


def numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def varied_numeric_params(group: Sequence[RunRow]) -> list[str]:
    keys = differing_params([r.run for r in group])
    return [
        k
        for k in keys
        if not k.startswith("derived.") and all(numeric(parse_param(r.run.data.params.get(k, "None"))) for r in group)
    ]


def scatter_plots(store: Store, rows: Sequence[RunRow], outdir: Path) -> list[Path]:
    """For each sweep among the rows: its objective against each varied numeric param."""
    from grpo import plots

    written = []
    for name, group in sweep_groups(rows).items():
        objective = group[0].run.data.params.get("optimized_metric", "val/accuracy")
        scored = [(r, metric_value(store, r.run, MetricSpec(objective))) for r in group]
        scored = [(r, y) for r, y in scored if y is not None and math.isfinite(y)]
        if len(scored) < 2:
            continue
        for key in varied_numeric_params([r for r, _ in scored]):
            points = [plots.Point(float(parse_param(r.run.data.params[key])), y, trial_label(r)) for r, y in scored]
            path = outdir / f"sweep_{plots.slug(name)}_{plots.slug(key)}.png"
            title = f"sweep {name}: {objective} vs {key} ({len(points)} runs)"
            written.append(plots.scatter(points, key, objective, path, title))
    return written


def trial_label(row: RunRow) -> str:
    trial = row.run.data.tags.get("optuna_trial")
    return f"#{trial}" if trial is not None else row.run.info.run_id[:8]


# -------------------------------------------------------------------------------------- cli
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m grpo.compare",
        description="Tracked runs side by side: the params that differ across them, and their metrics.",
        epilog="metrics: NAME (final value), NAME:best (max over the history), NAME:min. "
        "examples: python -m grpo.compare --last 5 --plot;  "
        "python -m grpo.compare --parent <sweep run id> --sort val/accuracy:best",
    )
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: the composed logger.tracking_uri)")
    p.add_argument(
        "--experiment",
        nargs="+",
        default=[DEFAULT_EXPERIMENT],
        metavar="NAME",
        help=f"experiment name(s) (default: {DEFAULT_EXPERIMENT})",
    )
    p.add_argument("--parent", metavar="RUN_ID", help="the child runs of a sweep's parent run")
    p.add_argument(
        "--tag", action="append", default=[], metavar="KEY=VALUE", help="only runs with this tag (repeatable)"
    )
    p.add_argument("--runs", nargs="+", metavar="ID", help="these runs (ids or unique id prefixes)")
    p.add_argument(
        "--last", type=int, metavar="N", help=f"the newest N runs (default: {DEFAULT_LAST}; all children with --parent)"
    )
    p.add_argument(
        "--metrics", nargs="+", metavar="METRIC", help=f"metric columns (default: {' '.join(DEFAULT_METRICS)})"
    )
    p.add_argument("--sort", metavar="METRIC", help="sort by this metric, highest first (default: the first metric)")
    p.add_argument("--ascending", action="store_true", help="sort lowest first")
    p.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    p.add_argument("--plot", nargs="?", const="", metavar="DIR", help="write PNG plots to DIR (default: outputs/plots)")
    p.add_argument(
        "--curves", nargs="+", metavar="METRIC", help=f"metrics to plot by step (default: {' '.join(DEFAULT_CURVES)})"
    )
    args = p.parse_args(argv)
    if args.runs and (args.parent or args.tag or args.last is not None):
        p.error("--runs names the runs itself: drop --parent/--tag/--last")
    if any("=" not in t for t in args.tag):
        p.error("--tag takes KEY=VALUE")
    if args.last is not None and args.last < 1:
        p.error("--last takes a positive number")
    return args


def compare(args: argparse.Namespace) -> tuple[Table, list[Path]]:
    store = open_store(args.tracking_uri or default_tracking_uri())
    runs = select_runs(store, args)
    specs, sort = choose_metrics(args, runs)
    keys = differing_params(runs)
    equal = len({k for r in runs for k in r.data.params if not is_noisy(k)}) - len(keys)
    rows = sort_rows(build_rows(store, runs, keys, specs), sort, args.ascending)
    table = runs_table(rows, keys, specs, sort, args.ascending, equal)
    written: list[Path] = []
    if args.plot is not None:
        if args.curves:
            check_known(args.curves, runs)
        outdir = Path(args.plot) if args.plot else default_plot_dir()
        subtitle = experiment_names(store, runs)
        written = curve_plots(store, rows, keys, args.curves or DEFAULT_CURVES, outdir, subtitle)
        written += scatter_plots(store, rows, outdir)
    return table, written


def experiment_names(store: Store, runs: Sequence) -> str:
    names = sorted(store.client.get_experiment(i).name for i in {r.info.experiment_id for r in runs})
    return ("experiment " if len(names) == 1 else "experiments ") + ", ".join(names)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        table, written = compare(args)
    except CompareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    emit(table, args.format)
    # Keep stdout parseable for csv/json: the file list goes to stderr there.
    out = sys.stdout if args.format in ("table", "markdown") else sys.stderr
    for path in written:
        print(f"wrote {path}", file=out)
    if args.plot is not None and not written:
        print("no plot written: the chosen runs logged none of the curve metrics", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
