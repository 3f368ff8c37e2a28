"""The Optuna sweeper (grpo.sweep) end to end: the real CLI of a cheap Hydra app
(tests/sweep_app) in subprocesses, with the study and the MLflow store in tmp_path.

Fast tests: plugin import cost, config composition, the in-job TrialReporter.
Slow tests (@pytest.mark.slow, a few seconds each): sweeps, pruning, failures, resume,
joblib, MLflow.
"""

from __future__ import annotations

import math
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.helpers.subprocess_env import child_env  # noqa: E402  (after the path insert)

APP = ROOT / "tests" / "sweep_app" / "app.py"
CONF = ROOT / "tests" / "sweep_app" / "conf"


# --------------------------------------------------------------------------- helpers
def storage_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'optuna.db'}"


@dataclass
class Sweep:
    proc: subprocess.CompletedProcess
    dir: Path

    @property
    def output(self) -> str:
        return self.proc.stdout + self.proc.stderr

    @property
    def results(self) -> dict:
        return yaml.safe_load((self.dir / "optimization_results.yaml").read_text())


def sweep(tmp_path: Path, *overrides: str, name: str = "sweep", expect_rc: int = 0) -> Sweep:
    """Run `app.py -m +sweep=quadratic <overrides>` with its sweep dir and study in tmp_path.
    (-m: the sweep file sets hydra.mode=MULTIRUN, but Hydra still wants -m when the command
    line itself holds sweep syntax such as x=choice(...).)"""
    sweep_dir = tmp_path / name
    cmd = [
        sys.executable,
        str(APP),
        "-m",
        "+sweep=quadratic",
        f"hydra.sweep.dir={sweep_dir}",
        f"hydra.sweeper.storage={storage_url(tmp_path)}",
        *overrides,
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=300)
    if proc.returncode != expect_rc:
        raise AssertionError(
            f"rc={proc.returncode} (expected {expect_rc}) for {shlex.join(cmd)}\n"
            f"--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}"
        )
    return Sweep(proc, sweep_dir)


def load(tmp_path: Path, study_name: str = "app-quadratic"):
    import optuna

    return optuna.load_study(study_name=study_name, storage=storage_url(tmp_path))


def states(study) -> list[str]:
    return [t.state.name for t in study.trials]


# --------------------------------------------------------------------------- fast
def test_plugin_import_is_light():
    code = (
        "import sys, hydra_plugins.grpo_optuna_sweeper as m\n"
        "heavy = [k for k in ('optuna', 'mlflow', 'sqlalchemy', 'torch') if k in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert m.OptunaSweeper.__module__ == 'hydra_plugins.grpo_optuna_sweeper'\n"
        "import grpo.sweep\n"
        "assert 'optuna' not in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=child_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert not (ROOT / "hydra_plugins" / "__init__.py").exists(), "hydra_plugins must stay a namespace"


SAMPLERS = ["tpe", "random", "grid", "cmaes", "nsgaii", "qmc", "gp"]
PRUNERS = {
    "none": "NopPruner",
    "median": "MedianPruner",
    "successive_halving": "SuccessiveHalvingPruner",
    "hyperband": "HyperbandPruner",
}


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_composes_and_instantiates(sampler):
    import optuna
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    import hydra_plugins.grpo_optuna_sweeper  # noqa: F401 - registers the configs

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "hydra/sweeper=optuna",
                f"hydra/sweeper/sampler={sampler}",
                "hydra.sweeper.sampler.seed=3",
            ],
            return_hydra_config=True,
        )
    sw = cfg.hydra.sweeper
    assert sw._target_ == "hydra_plugins.grpo_optuna_sweeper.OptunaSweeper"
    assert sw.sampler.seed == 3
    assert sw.pruner._target_ == "optuna.pruners.NopPruner"
    assert (sw.direction, sw.n_trials, sw.n_jobs, sw.max_failure_rate) == ("minimize", 20, 1, 0.0)
    obj = instantiate(sw.sampler)
    if sampler == "grid":
        obj = obj(search_space={"x": [0, 1]})
    assert isinstance(obj, optuna.samplers.BaseSampler)


@pytest.mark.parametrize("pruner", sorted(PRUNERS))
def test_every_pruner_composes_and_instantiates(pruner):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    import hydra_plugins.grpo_optuna_sweeper  # noqa: F401

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=["hydra/sweeper=optuna", f"hydra/sweeper/pruner={pruner}"],
            return_hydra_config=True,
        )
    assert type(instantiate(cfg.hydra.sweeper.pruner)).__name__ == PRUNERS[pruner]


def test_sweep_file_selects_sweeper_sampler_and_pruner():
    from hydra import compose, initialize_config_dir

    import hydra_plugins.grpo_optuna_sweeper  # noqa: F401

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["+sweep=quadratic"], return_hydra_config=True)
    sw = cfg.hydra.sweeper
    assert sw.sampler._target_ == "optuna.samplers.RandomSampler"
    assert sw.pruner._target_ == "optuna.pruners.MedianPruner"
    assert sw.pruner.n_startup_trials == 2
    assert dict(sw.params) == {"x": "interval(-4.0, 4.0)", "y": "choice(0, 1, 2, 3)"}
    assert "optuna_trial" not in cfg  # the trial reaches the job through GRPO_OPTUNA_TRIAL


def test_storage_default_and_relative_sqlite_paths_become_absolute(tmp_path):
    from omegaconf import OmegaConf

    from grpo.sweep.sweeper import OptunaSweeper

    sw = OptunaSweeper()
    sw.config = OmegaConf.create({"hydra": {"runtime": {"cwd": str(tmp_path)}, "job": {"name": "run"}}})
    assert sw._resolve_storage(None) == f"sqlite:///{tmp_path}/outputs/optuna.db"
    assert (tmp_path / "outputs").is_dir()
    assert sw._resolve_storage("sqlite:///rel/s.db") == f"sqlite:///{tmp_path}/rel/s.db"
    assert sw._resolve_storage("postgresql://u:p@h/db") == "postgresql://u:p@h/db"
    assert sw._default_study_name() == "run"
    sw.config.hydra.runtime.choices = {"sweep": "rce_grpo"}
    assert sw._default_study_name() == "run-rce_grpo"


@pytest.mark.parametrize("bad", [{"direction": "up"}, {"n_jobs": 0}, {"max_failure_rate": 2}])
def test_bad_settings_are_refused(bad):
    from grpo.sweep.sweeper import OptunaSweeper

    with pytest.raises(ValueError):
        OptunaSweeper(**bad)._parse_directions(bad.get("direction", "minimize"))


def test_trial_reporter_from_config_none_and_incomplete():
    from omegaconf import OmegaConf

    from grpo.sweep.trial import TrialReporter

    assert TrialReporter.from_config(None) is None
    assert TrialReporter.from_config(OmegaConf.create({})) is None
    with pytest.raises(ValueError, match="number"):
        TrialReporter.from_config({"study_name": "s", "storage": "sqlite://"})


def test_trial_reporter_reports_and_prunes(tmp_path):
    import optuna
    from omegaconf import OmegaConf

    from grpo.sweep.trial import TrialReporter

    url = storage_url(tmp_path)
    study = optuna.create_study(study_name="unit", storage=url)
    pruner = {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 1}

    def reporter(number: int) -> TrialReporter:
        node = OmegaConf.create({"study_name": "unit", "storage": url, "number": number, "pruner": pruner})
        rep = TrialReporter.from_config(node)
        assert rep is not None
        return rep

    good = study.ask()
    rep = reporter(good.number)
    for step, value in enumerate([3.0, 2.0, 1.0]):
        rep.report(value, step)
        assert not rep.should_prune()
    study.tell(good, 1.0)

    bad = study.ask()
    rep = reporter(bad.number)
    rep.report(50.0, 0)
    assert rep.should_prune()
    with pytest.raises(optuna.TrialPruned, match=r"trial 1 pruned at step 0 .* MedianPruner"):
        rep.prune()
    rep.set_user_attr("mlflow_run_id", "abc")
    frozen = optuna.load_study(study_name="unit", storage=url).trials[1]
    assert frozen.intermediate_values == {0: 50.0}
    assert frozen.user_attrs["mlflow_run_id"] == "abc"


# --------------------------------------------------------------------------- slow: sweeps
@pytest.mark.slow
def test_sweep_end_to_end(tmp_path):
    s = sweep(tmp_path, "hydra.sweeper.n_trials=6")
    study = load(tmp_path)  # default study name: <job name>-<sweep choice>
    assert [t.number for t in study.trials] == list(range(6))
    assert all(st in ("COMPLETE", "PRUNED") for st in states(study))
    assert (s.dir / "multirun.yaml").is_file()
    for n in range(6):
        assert (s.dir / str(n) / ".hydra" / "overrides.yaml").is_file()
        assert study.trials[n].user_attrs["output_dir"] == str(s.dir / str(n))

    res = s.results
    assert res["name"] == "optuna"
    assert res["best_value"] == pytest.approx(study.best_value)
    assert res["best_params"] == study.best_params
    assert res["best_trial"] == study.best_trial.number
    assert "Best trial: #" in s.output and "Re-run it with: " in s.output

    # the printed command re-runs the best trial as a single run with the same params
    cmd = shlex.split(res["command"])
    assert cmd[0] == "python" and cmd[-1] == "hydra.mode=RUN"
    run_dir = tmp_path / "rerun"
    proc = subprocess.run(
        [sys.executable, *cmd[1:], f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
    for key, value in study.best_params.items():
        assert f"{key}={value}" in overrides
    assert len(load(tmp_path).trials) == 6  # the re-run did not sweep


@pytest.mark.slow
def test_pruning_records_pruned_trials(tmp_path):
    # trials with x > 0 report terrible intermediate values; MedianPruner(n_startup_trials=2)
    sweep(tmp_path, "hydra.sweeper.n_trials=8", "bad_if_x_above=0")
    study = load(tmp_path)
    got = states(study)
    assert len(got) == 8 and "FAIL" not in got
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    assert pruned, got
    for t in pruned:
        assert len(t.intermediate_values) < 4  # stopped early (steps=4)
        assert t.value == t.intermediate_values[max(t.intermediate_values)]
        assert "pruned at step" in t.user_attrs["prune_reason"]
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert all(len(t.intermediate_values) == 4 for t in complete)


@pytest.mark.slow
def test_failure_rate_stops_the_sweep_with_one_line(tmp_path):
    # every trial raises; 4 planned, max_failure_rate=0.5 -> stops at the 3rd failure (3/4 > .5)
    s = sweep(
        tmp_path,
        "x=choice(5.0)",
        "raise_if_x_above=3",
        "hydra.sweeper.max_failure_rate=0.5",
        "hydra.sweeper.n_trials=4",
        expect_rc=1,
    )
    study = load(tmp_path)
    assert states(study) == ["FAIL"] * 3
    for t in study.trials:
        assert t.user_attrs["fail_reason"] == "ValueError: x=5.0 is above raise_if_x_above=3"
        assert "Traceback" in t.user_attrs["traceback"]
    assert "Traceback" not in s.proc.stderr
    line = next(ln for ln in s.proc.stderr.splitlines() if "stopped" in ln)
    assert "3 of the 4 trials planned in this run failed (75%)" in line
    assert "max_failure_rate=0.5" in line and "ValueError: x=5.0" in line
    assert s.results["best_value"] is None


@pytest.mark.slow
def test_nan_and_none_objectives_fail_but_the_sweep_goes_on(tmp_path):
    sweep(
        tmp_path,
        "hydra.sweeper.pruner.n_startup_trials=1000",  # no pruning
        "x=choice(-1.0, 5.0)",
        "nan_if_x_above=3",
        "hydra.sweeper.max_failure_rate=1.0",
        "hydra.sweeper.n_trials=6",
    )
    study = load(tmp_path)
    assert len(study.trials) == 6
    for t in study.trials:
        if t.params["x"] > 3:
            assert t.state.name == "FAIL"
            assert t.user_attrs["fail_reason"] == "the objective is NaN"
        else:
            assert t.state.name == "COMPLETE"

    sweep(
        tmp_path,
        "return_none=true",
        "hydra.sweeper.max_failure_rate=1.0",
        "hydra.sweeper.n_trials=1",
        "hydra.sweeper.study_name=none",
        name="none",
    )
    (t,) = load(tmp_path, "none").trials
    assert t.state.name == "FAIL" and "returned None" in t.user_attrs["fail_reason"]


@pytest.mark.slow
def test_resume_continues_numbering_and_skips_finished_trials(tmp_path):
    first = sweep(tmp_path, "hydra.sweeper.n_trials=3", name="first")
    before = [(t.number, t.params, t.datetime_complete) for t in load(tmp_path).trials]
    assert [b[0] for b in before] == [0, 1, 2]

    second = sweep(tmp_path, "hydra.sweeper.n_trials=6", name="second")
    study = load(tmp_path)
    assert [t.number for t in study.trials] == list(range(6))
    assert [(t.number, t.params, t.datetime_complete) for t in study.trials[:3]] == before
    assert "3 finished trials" in second.output and "running 3 more" in second.output
    assert sorted(p.name for p in first.dir.iterdir() if p.is_dir()) == ["0", "1", "2"]
    assert sorted(p.name for p in second.dir.iterdir() if p.is_dir()) == ["3", "4", "5"]
    # a seeded sampler does not draw the first run's points again
    first_points = {tuple(sorted(t.params.items())) for t in study.trials[:3]}
    assert not first_points & {tuple(sorted(t.params.items())) for t in study.trials[3:]}

    third = sweep(tmp_path, "hydra.sweeper.n_trials=6", name="third")
    assert len(load(tmp_path).trials) == 6 and "running 0 more" in third.output


@pytest.mark.slow
@pytest.mark.parametrize(
    "sig, reason",
    [
        (signal.SIGKILL, "left RUNNING by an earlier sweep process"),  # found on resume
        (signal.SIGINT, "sweep interrupted while running"),  # Ctrl-C: marked on the way out
    ],
    ids=["kill-9", "ctrl-c"],
)
def test_resume_after_kill(tmp_path, sig, reason):
    """Stop the sweep while trial 3 runs; trial 3 ends FAIL flagged interrupted, the rerun
    re-queues its params and finishes the study without redoing trials 0-2."""
    db = tmp_path / "optuna.db"
    cmd = [
        sys.executable,
        str(APP),
        "+sweep=quadratic",
        f"hydra.sweep.dir={tmp_path / 'killed'}",
        f"hydra.sweeper.storage={storage_url(tmp_path)}",
        "hydra.sweeper.n_trials=6",
        "hydra.sweeper.pruner.n_startup_trials=100",
        "sleep=0.2",
        "slow_trial=3",  # trial 3 runs 4 x 2 s: the signal lands inside it even when the poll is late
        "slow_sleep=2.0",
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # a test runner started in the background (`cmd &` in a script) ignores SIGINT, and its children
        # inherit that: the sweep must see Ctrl-C as a terminal would deliver it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    seen: list[str] = []
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
            try:  # read-only peek: never let the poller create tables
                con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
                seen = [r[0] for r in con.execute("select state from trials order by number")]
                # trial 3's job is inside its step loop once it reported a first value
                n_reported = con.execute(
                    "select count(*) from trial_intermediate_values v join trials t "
                    "on v.trial_id=t.trial_id where t.number=3"
                ).fetchone()[0]
                con.close()
            except sqlite3.Error:
                continue
            if seen[:4] == ["COMPLETE"] * 3 + ["RUNNING"] and n_reported >= 1:
                proc.send_signal(sig)
                break
    finally:
        proc.wait(timeout=30)
    assert seen[:4] == ["COMPLETE"] * 3 + ["RUNNING"], seen
    before = [(t.number, t.params, t.datetime_complete) for t in load(tmp_path).trials[:3]]

    s = sweep(tmp_path, "hydra.sweeper.n_trials=6", "hydra.sweeper.pruner.n_startup_trials=100", name="resumed")
    study = load(tmp_path)
    assert [(t.number, t.params, t.datetime_complete) for t in study.trials[:3]] == before
    killed = study.trials[3]
    assert killed.state.name == "FAIL", killed
    assert killed.user_attrs.get("interrupted") is True, killed.user_attrs
    assert reason in killed.user_attrs["fail_reason"]
    retry = study.trials[4]
    assert retry.user_attrs["retry_of"] == 3 and retry.params == killed.params
    assert retry.state.name == "COMPLETE"
    # 6 finished trials besides the interrupted one: numbers went on to 6
    assert [t.number for t in study.trials] == list(range(7))
    assert sum(t.state.name == "COMPLETE" for t in study.trials) == 6
    assert "3 finished trials" in s.output


@pytest.mark.slow
def test_joblib_launcher_runs_two_trials_at_once(tmp_path):
    s = sweep(
        tmp_path,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.n_trials=6",
        "sleep=0.2",
    )
    study = load(tmp_path)
    assert [t.number for t in study.trials] == list(range(6))
    assert all(st in ("COMPLETE", "PRUNED") for st in states(study)), states(study)
    assert "PRUNED" in states(study)
    assert "locked" not in s.output.lower()
    for n in range(6):
        assert study.trials[n].user_attrs["output_dir"] == str(s.dir / str(n))
    # trials 0 and 1 form the first batch and overlap in time
    t0, t1 = study.trials[0], study.trials[1]
    assert t1.datetime_start < t0.datetime_complete and t0.datetime_start < t1.datetime_complete


@pytest.mark.slow
def test_grid_sampler_walks_the_grid_once(tmp_path):
    s = sweep(
        tmp_path,
        "hydra/sweeper/sampler=grid",
        "hydra.sweeper.pruner.n_startup_trials=1000",
        "x=choice(0, 1)",
        "y=range(1, 3)",  # Optuna range: 1, 2, 3 (stop included, as in hydra-optuna-sweeper)
        "hydra.sweeper.n_trials=20",
    )
    study = load(tmp_path)
    assert "grid of 6" in s.output
    assert sorted((t.params["x"], t.params["y"]) for t in study.trials) == [(x, y) for x in (0, 1) for y in (1, 2, 3)]
    assert s.results["best_params"] == {"x": 1, "y": 2} and s.results["best_value"] == 0.0


@pytest.mark.slow
def test_multi_objective_writes_pareto_solutions(tmp_path):
    s = sweep(
        tmp_path,
        "two_objectives=true",
        "hydra.sweeper.direction=[minimize,minimize]",
        "hydra.sweeper.n_trials=5",
    )
    study = load(tmp_path)
    assert len(study.directions) == 2 and states(study) == ["COMPLETE"] * 5
    sols = s.results["solutions"]
    assert sorted(x["number"] for x in sols) == sorted(t.number for t in study.best_trials)
    assert "cannot prune multi-objective" in s.output


@pytest.mark.slow
def test_custom_search_space_and_fixed_params(tmp_path):
    sweep(
        tmp_path,
        "~hydra.sweeper.params.y",
        "hydra.sweeper.custom_search_space=custom_space.suggest_y",
        "steps=2",
        "hydra.sweeper.n_trials=3",
    )
    study = load(tmp_path)
    for t in study.trials:
        assert set(t.params) == {"x", "y"} and isinstance(t.params["y"], int)
        assert t.user_attrs["steps"] == "2"  # fixed overrides recorded, as the official plugin
        assert len(t.intermediate_values) in (1, 2)


@pytest.mark.slow
def test_composition_error_fails_the_trial_and_stops(tmp_path):
    s = sweep(tmp_path, "nokey=choice(1, 2)", expect_rc=1)
    assert "Could not override 'nokey'" in s.proc.stderr
    (t,) = load(tmp_path).trials
    assert t.state.name == "FAIL" and "interrupted" not in t.user_attrs
    assert t.user_attrs["fail_reason"].startswith("ConfigCompositionException")


@pytest.mark.slow
def test_existing_study_without_load_if_exists_is_a_clear_error(tmp_path):
    sweep(tmp_path, "hydra.sweeper.n_trials=1")
    s = sweep(tmp_path, "hydra.sweeper.load_if_exists=false", name="again", expect_rc=1)
    assert "already exists" in s.proc.stderr and "load_if_exists=true" in s.proc.stderr
    assert "Traceback" not in s.proc.stderr


# --------------------------------------------------------------------------- slow: MLflow
@pytest.mark.slow
def test_mlflow_parent_run_and_children(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["logger.backend=mlflow", f"logger.tracking_uri={uri}", "logger.experiment=sweeps"]
    sweep(tmp_path, *args, "hydra.sweeper.n_trials=3", name="first")
    sweep(tmp_path, *args, "hydra.sweeper.n_trials=4", name="resumed")  # same parent
    study = load(tmp_path)

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("sweeps")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert parent.info.run_id == study.user_attrs["mlflow_parent_run_id"]
    assert parent.info.run_name == "app-quadratic" and parent.info.status == "FINISHED"
    assert parent.data.tags["study_name"] == "app-quadratic"
    assert parent.data.tags["sweep"] == "quadratic"
    assert parent.data.metrics["best_value"] == pytest.approx(study.best_value)
    assert parent.data.tags["best_trial"] == str(study.best_trial.number)
    for k, v in study.best_params.items():
        assert parent.data.tags[f"best_params.{k}"] == str(v)

    by_trial = {int(r.data.tags["optuna_trial"]): r for r in children}
    assert sorted(by_trial) == [0, 1, 2, 3]
    for n, run in by_trial.items():
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["optuna_study"] == "app-quadratic"
        assert study.trials[n].user_attrs["mlflow_run_id"] == run.info.run_id
        if study.trials[n].state.name == "COMPLETE":
            assert math.isclose(run.data.metrics["objective"], study.trials[n].value)
