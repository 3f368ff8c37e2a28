"""`python -m grpo.compare`: tracked runs side by side, the params that differ next to the metrics.

Seed 004 compared runs by hand and blamed a regression on "fewer epochs" without a recorded
config of the tested run. Every run here logs its full resolved config as params, so this
command can list exactly the params in which the chosen runs differ (the equal ones, and
bookkeeping such as paths and tags, are left out) beside final and best metrics. `--plot`
writes the curves and, for a sweep, each varied param against the objective.

Errors are one line on stderr with exit code 2: no store, no runs, an unknown experiment
(the existing ones are listed) or an unknown metric (the logged ones are listed).

Runs that differ only in their seeds (`-m ... seed=0,1,2,3,4`) are one configuration: a summary
table gives each metric as mean ± sd (min–max) over them, and the plots draw them as a band.

The work is in `grpo.analysis` (runs, run_table, repeats, run_plots); this module is the command line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from grpo.analysis.pareto import StudySelection
from grpo.analysis.repeats import has_repeats, summary_table
from grpo.analysis.run_plots import DEFAULT_CURVES, curve_plots, scatter_plots
from grpo.analysis.run_table import (
    DATA_COLUMN,
    DEFAULT_METRICS,
    build_rows,
    check_known,
    checkpoint_columns,
    choose_metrics,
    data_column,
    differing_params,
    equal_param_count,
    runs_table,
    sort_rows,
)
from grpo.analysis.runs import CompareError, experiment_names, open_store, select_runs
from grpo.tables import FORMATS, Table, emit

DEFAULT_EXPERIMENT = "grpo-suite"
DEFAULT_LAST = 20


def default_tracking_uri() -> str:
    """Where `grpo.run` logs by default: the composed logger.tracking_uri."""
    from grpo.compose import compose

    return compose([]).cfg.logger.tracking_uri


def default_plot_dir() -> Path:
    from grpo.compose import compose

    return Path(compose([]).cfg.paths.outputs) / "plots"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m grpo.compare",
        description="Tracked runs side by side: the params that differ across them, and their metrics.",
        epilog="metrics: NAME (final value), NAME:best (max over the history), NAME:min, NAME:mean, "
        "NAME:rce (at the end of the RCE stage), NAME:gain (final minus :rce: what GRPO added). "
        "Runs that differ only in their seeds are also summarised as mean ± sd (min–max) and drawn as a band. "
        "examples: python -m grpo.compare --last 5 --plot;  "
        "python -m grpo.compare --parent <sweep run id> --sort val/accuracy:best;  "
        "python -m grpo.compare --study rce_grpo --tracking-uri http://mlflow:5000 --plot",
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
        "--study",
        metavar="NAME",
        help="the trials of an Optuna study (its parent run's children, every worker's); a multi-objective "
        "study adds its Pareto front (a column, and pareto_NAME.png with --plot)",
    )
    p.add_argument(
        "--tag", action="append", default=[], metavar="KEY=VALUE", help="only runs with this tag (repeatable)"
    )
    p.add_argument("--runs", nargs="+", metavar="ID", help="these runs (ids or unique id prefixes)")
    p.add_argument(
        "--eval", action="store_true", help="include grpo.eval's runs (left out by default: they did not train)"
    )
    p.add_argument(
        "--last", type=int, metavar="N", help=f"the newest N runs (default: {DEFAULT_LAST}; all children with --parent)"
    )
    p.add_argument(
        "--metrics", nargs="+", metavar="METRIC", help=f"metric columns (default: {' '.join(DEFAULT_METRICS)})"
    )
    p.add_argument("--sort", metavar="METRIC", help="sort by this metric, highest first (default: the first metric)")
    p.add_argument("--ascending", action="store_true", help="sort lowest first")
    p.add_argument(
        "--checkpoints", action="store_true", help="add each run's best and final adapter (runs:/ID/adapter...)"
    )
    p.add_argument(
        "--summary",
        action="store_true",
        help="only the summary: one row per configuration, each metric as mean ± sd (min–max) over the runs "
        "that differ only in their seeds (shown after the runs' table anyway when some configuration repeats)",
    )
    p.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    p.add_argument("--plot", nargs="?", const="", metavar="DIR", help="write PNG plots to DIR (default: outputs/plots)")
    p.add_argument(
        "--curves", nargs="+", metavar="METRIC", help=f"metrics to plot by step (default: {' '.join(DEFAULT_CURVES)})"
    )
    args = p.parse_args(argv)
    if args.runs and (args.parent or args.study or args.tag or args.last is not None):
        p.error("--runs names the runs itself: drop --parent/--study/--tag/--last")
    if args.study and args.parent:
        p.error("--study finds the study's parent run itself: drop --parent")
    if any("=" not in t for t in args.tag):
        p.error("--tag takes KEY=VALUE")
    if args.last is not None and args.last < 1:
        p.error("--last takes a positive number")
    return args


def compare(args: argparse.Namespace) -> tuple[list[Table], list[Path]]:
    """The tables to print (the runs; the seed summary after it, or alone with --summary) and the PNGs written."""
    store = open_store(args.tracking_uri or default_tracking_uri())
    study = StudySelection.find(store, args.study) if args.study else None
    parent = study.parent_id if study else args.parent
    runs = select_runs(
        store,
        run_ids=args.runs or (),
        parent=parent,
        experiments=args.experiment,
        tags=args.tag,
        limit=args.last if args.last is not None else (None if parent else DEFAULT_LAST),
        with_eval=args.eval,
    )
    specs, sort = choose_metrics(runs, args.metrics, args.sort)
    if study is not None:
        specs, sort, args.ascending = study.columns(specs, sort, args.sort is not None, args.ascending)
    keys = differing_params(runs)
    rows = sort_rows(build_rows(store, runs, keys, specs), sort, args.ascending)
    extra = {DATA_COLUMN: data_column(runs)} if data_column(runs) else {}
    if args.checkpoints:
        extra.update(checkpoint_columns(runs))
    table = runs_table(rows, keys, specs, sort, args.ascending, equal_param_count(runs, keys), extra)
    if study is not None:
        study.annotate(table, rows)
    written: list[Path] = []
    if args.plot is not None:
        if args.curves:
            check_known(args.curves, runs)
        outdir = Path(args.plot) if args.plot else default_plot_dir()
        subtitle = experiment_names(store, runs)
        written = curve_plots(store, rows, keys, args.curves or DEFAULT_CURVES, outdir, subtitle)
        written += scatter_plots(store, rows, outdir)
        if study is not None:
            written += study.plots(rows, outdir)
    if args.summary:
        return [summary_table(rows, specs, sort, args.ascending)], written
    if has_repeats(rows) and args.format in ("table", "markdown"):  # csv/json: one table per output
        return [table, summary_table(rows, specs, sort, args.ascending)], written
    return [table], written


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        tables, written = compare(args)
    except CompareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for i, table in enumerate(tables):
        if i:
            print()
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
