"""`grpo.compare` on repeated runs: runs that differ only in their seeds are one configuration,
summarised as mean ± sd (min–max) per metric and drawn as a band.

The module fixture makes real runs in a temp MLflow store: the advertised multirun
(`-m +experiment=numgame_tiny seed=0,1,2`, shrunk) and one run of another configuration.
"""

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from grpo.analysis.repeats import Spread, band_values, configuration, repeat_groups
from grpo.analysis.run_table import MetricSpec, build_rows
from grpo.analysis.runs import open_store, select_runs
from grpo.compare import main

SHRINK = [
    "+experiment=numgame_tiny",
    "schedule.rce_steps=4",
    "trainer.max_steps=2",
    "rollout.batch_size=4",
    "rollout.group_size=2",
    "task.train_size=32",
    "eval.eval_every=2",
    "eval.num_samples=8",
    "eval.before_train=false",
    "trainer.threads=1",
    "trainer.save_every=0",
    "logger.log_every=1",
]


# ------------------------------------------------------------------------------ no store needed
def test_spread_is_mean_sample_sd_min_max():
    s = Spread.of([0.8, 0.9, 1.0])
    assert (s.n, s.min, s.max) == (3, 0.8, 1.0)
    assert s.mean == pytest.approx(0.9) and s.sd == pytest.approx(0.1)  # n - 1
    assert s.text() == "0.9 ± 0.1 (0.8–1)"
    one = Spread.of([0.5, None, float("nan")])
    assert one.n == 1 and one.sd is None and one.text() == "0.5"
    assert Spread.of([]) is None


# ------------------------------------------------------------------------------ real runs
@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("summary")
    uri = f"sqlite:///{root}/mlflow.db"
    from mlflow.tracking import MlflowClient

    # The store and its experiment first: two processes creating one SQLite schema at once collide.
    MlflowClient(tracking_uri=uri).create_experiment("grpo-suite", artifact_location=str(root / "mlartifacts"))
    env = {**os.environ, "TQDM_DISABLE": "1"}
    common = [*SHRINK, f"logger.tracking_uri={uri}"]
    cmds = [
        ["-m", *common, "seed=0,1,2", f"hydra.sweep.dir={root}/multirun"],
        [*common, "seed=0", "schedule.rce_lr=1e-3", f"hydra.run.dir={root}/other"],
    ]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "grpo.run", *cmd],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for cmd in cmds
    ]
    for proc in procs:
        out, _ = proc.communicate(timeout=900)
        assert proc.returncode == 0, out[-3000:]
    return uri


def compare_json(capsys, uri: str, *args: str) -> list[dict]:
    code = main(["--tracking-uri", uri, "--format", "json", *args])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def test_runs_that_differ_only_in_seed_are_one_configuration(store):
    s = open_store(store)
    runs = select_runs(s, experiments=["grpo-suite"])
    groups = repeat_groups(build_rows(s, runs, [], []))
    assert sorted(len(g) for g in groups) == [1, 3]
    seeds = {g[0].run.data.params["seed"] for g in groups if len(g) == 1}
    assert seeds == {"0"}
    # The three differ in seed and the seeds derived from it, and in nothing else that trains.
    three = next(g for g in groups if len(g) == 3)
    assert len({configuration(r.run) for r in three}) == 1
    assert len({r.run.data.params["derived.model_init_seed"] for r in three}) == 3


def test_summary_is_mean_sd_min_max_over_the_seeds(store, capsys):
    per_run = compare_json(capsys, store, "--metrics", "val/accuracy", "rce/loss")
    summary = compare_json(capsys, store, "--summary", "--metrics", "val/accuracy", "rce/loss")
    assert len(per_run) == 4 and len(summary) == 2
    repeated = next(r for r in summary if r["runs"] == 3)
    assert repeated["seeds"] == [0, 1, 2] and repeated["schedule.rce_lr"] == 0.003
    for metric in ("val/accuracy", "rce/loss"):
        values = [r[metric] for r in per_run if r["schedule.rce_lr"] == 0.003]
        cell = repeated[metric]
        assert cell["n"] == 3
        assert cell["mean"] == pytest.approx(statistics.fmean(values))
        assert cell["sd"] == pytest.approx(statistics.stdev(values))
        assert (cell["min"], cell["max"]) == (min(values), max(values))
    single = next(r for r in summary if r["runs"] == 1)
    assert single["seeds"] == [0] and single["val/accuracy"]["sd"] is None


def test_the_terminal_shows_the_runs_then_the_summary(store, capsys):
    code = main(["--tracking-uri", store, "--format", "markdown", "--metrics", "val/accuracy"])
    out = capsys.readouterr().out
    assert code == 0
    runs_part, summary_part = out.split("\n\n| run |")
    assert len(body_rows(runs_part)) == 4
    rows = body_rows(summary_part)
    assert sorted(line.count(" ± ") for line in rows) == [0, 1]  # three seeds summarised; the single run as it is
    assert "mean ± sd (min–max) over the runs of each configuration" in summary_part


def body_rows(markdown: str) -> list[str]:
    """A markdown table's rows, without its header and rule."""
    return [
        line for line in markdown.splitlines() if line.startswith("| ") and not line.startswith(("| run |", "|---"))
    ]


def test_stage_aggregates_give_grpo_its_share(store, capsys):
    from mlflow.tracking import MlflowClient

    rows = compare_json(capsys, store, "--metrics", "val/accuracy", "val/accuracy:rce", "val/accuracy:gain")
    client = MlflowClient(tracking_uri=store)
    for row in rows:
        history = {m.step: m.value for m in client.get_metric_history(row["id"], "val/accuracy")}
        assert row["val/accuracy (rce)"] == history[4]  # the end of the 4 RCE steps
        assert row["val/accuracy (gain)"] == pytest.approx(history[6] - history[4])


def test_mean_over_the_history(store, capsys):
    from mlflow.tracking import MlflowClient

    rows = compare_json(capsys, store, "--metrics", "rce/loss:mean")
    client = MlflowClient(tracking_uri=store)
    for row in rows:
        values = [m.value for m in client.get_metric_history(row["id"], "rce/loss")]
        assert len(values) == 4 and row["rce/loss (mean)"] == pytest.approx(statistics.fmean(values))


def test_bands_average_the_curves_of_a_configuration(store, capsys, tmp_path):
    s = open_store(store)
    rows = build_rows(s, select_runs(s, experiments=["grpo-suite"]), [], [MetricSpec("val/accuracy")])
    three = next(g for g in repeat_groups(rows) if len(g) == 3)
    band = band_values(s, three, "val/accuracy")
    assert band.steps == [2, 4, 6] and band.n == 3
    for i, step in enumerate(band.steps):
        at = [dict(s.history(r.run.info.run_id, "val/accuracy"))[step] for r in three]
        assert band.mean[i] == pytest.approx(statistics.fmean(at))
        assert (band.lo[i], band.hi[i]) == (min(at), max(at))
    code = main(["--tracking-uri", store, "--plot", str(tmp_path), "--curves", "val/accuracy"])
    out = capsys.readouterr().out
    assert code == 0 and f"wrote {Path(tmp_path) / 'val_accuracy.png'}" in out
    assert (tmp_path / "val_accuracy.png").stat().st_size > 10_000
