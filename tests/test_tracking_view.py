"""What a user sees in the MLflow UI, the Optuna dashboard and grpo.compare (issue 18), in MLflow and
Optuna terms: trial runs have distinct names; params are the configuration (no bookkeeping keys);
completions are registered as tables; experiments open on runs; the study has metric names; the
sweep's parent run has the best params and links the best child; eval runs nest under their source
run; compare leaves eval runs out and marks pruned trials.

Fast tests use a temporary SQLite MLflow store and an in-memory Optuna study; the slow one runs a
real two-trial sweep of the main app.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BOOKKEEPING = ("optuna_trial", "logger.tags", "logger.parent_run_id")


@pytest.fixture
def client(tmp_path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")


def logger_cfg(client, **kw):
    from grpo.config.schema import LoggerConfig

    return LoggerConfig(tracking_uri=client.tracking_uri, experiment="view", **kw)


# ------------------------------------------------------------------------------ names and params
def test_trial_runs_get_distinct_names_from_their_searched_values():
    from grpo.config.derived import trial_run_name
    from grpo.sweep.trial import TrialReporter

    a = {"algorithm.kl_beta": 0.20880081501089318, "schedule.rce_lr": 0.0024691446306928408, "trainer.max_steps": 14}
    b = {**a, "algorithm.kl_beta": 0.055}
    assert trial_run_name(3, a) == "#3 kl_beta=0.21 rce_lr=0.0025 max_steps=14"
    assert trial_run_name(3, a) != trial_run_name(4, a) and trial_run_name(3, a) != trial_run_name(3, b)
    assert trial_run_name(1, {"reward.alpha": 0.3, "lora.alpha": 8}) == "#1 reward.alpha=0.3 lora.alpha=8"
    assert len(trial_run_name(1, {f"k{i}": 0.123456 for i in range(40)})) == 120

    rep = TrialReporter(study_name="s", storage="sqlite://", number=2, params=a, log_params=["schedule.rce_lr"])
    tags = rep.run_tags()
    assert tags["mlflow.runName"] == trial_run_name(2, a) and tags["optuna_trial"] == "2"
    assert tags["optuna_log_params"] == "schedule.rce_lr"


def test_a_trials_context_carries_its_searched_values_and_log_scales():
    import optuna

    from grpo.sweep.jobs import job_context
    from grpo.sweep.trial import TrialReporter

    study = optuna.create_study()
    trial = study.ask(
        {
            "schedule.rce_lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
            "reward.alpha": optuna.distributions.FloatDistribution(0.2, 0.5),
        }
    )
    context = job_context(
        trial,
        study_name="s",
        storage_url="sqlite://",
        directions=["maximize"],
        storage_timeout=60.0,
        pruner_config=None,
        metric_names=None,
        parent_run_id="p",
    )
    assert context["params"] == trial.params and context["log_params"] == ["schedule.rce_lr"]
    rep = TrialReporter.from_config(json.loads(json.dumps(context)))
    assert rep.run_tags()["mlflow.runName"].startswith(f"#{trial.number} rce_lr=")


def test_params_are_the_configuration_not_bookkeeping():
    from grpo.tracking.run_record import is_bookkeeping, log_run_record

    class Recorder:
        params: dict = {}

        def log_params(self, params):
            self.params = dict(params)

        def __getattr__(self, name):
            return lambda *a, **k: None

    tracker = Recorder()
    params = {
        "logger.parent_run_id": "abc",
        "logger.tags.optuna_study": "s",
        "logger.tags": "{}",
        "optuna_trial.number": 3,
        "logger.tracking_uri": "sqlite:///x.db",
        "algorithm.kl_beta": 0.1,
    }
    log_run_record(tracker, params, "", overrides=[], overrides_text="", sources=[])
    assert not [k for k in tracker.params if k.startswith(BOOKKEEPING)]
    assert tracker.params["algorithm.kl_beta"] == 0.1 and "logger.tracking_uri" in tracker.params
    assert is_bookkeeping("logger.tags.x") and not is_bookkeeping("logger.tags_extra")


# ------------------------------------------------------------------------------ tables, experiments
def test_completions_are_registered_as_tables_and_experiments_open_on_runs(client, monkeypatch):
    import mlflow

    from grpo.tracking.mlflow_run import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, MlflowTracker

    monkeypatch.setattr(mlflow.tracking._tracking_service.utils, "_tracking_uri", None)  # set by other tests
    monkeypatch.setenv("MLFLOW_TRACKING_URI", client.tracking_uri)  # load_table searches the global store

    tracker = MlflowTracker(logger_cfg(client), "run", {})
    rows = [
        {"prompt": "1+1", "completion": "two", "reward": 1.0},
        {"prompt": "2+2", "completion": "five", "reward": 0.0},
    ]
    tracker.log_table(rows, "completions/step_000005.json")
    tracker.log_table(rows[:1], "completions/step_000010.json")
    tags = client.get_run(tracker.run_id).data.tags
    assert json.loads(tags["mlflow.loggedArtifacts"]) == [
        {"path": "completions/step_000005.json", "type": "table"},
        {"path": "completions/step_000010.json", "type": "table"},
    ]
    # MLflow reads it back as a table (what the UI's table view and the experiment's artifact view use)
    table = client.load_table(tracker.experiment_id, "completions/step_000005.json", run_ids=[tracker.run_id])
    assert list(table["completion"]) == ["two", "five"] and list(table["reward"]) == [1.0, 0.0]
    # the file is the same {"columns", "data"} JSON as before
    text = Path(client.download_artifacts(tracker.run_id, "completions/step_000010.json")).read_text()
    assert json.loads(text) == {"columns": ["prompt", "completion", "reward"], "data": [["1+1", "two", 1.0]]}
    experiment = client.get_experiment(tracker.experiment_id)
    assert experiment.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND == "custom_model_development"


def test_the_table_tag_stays_within_mlflows_limit():
    from grpo.tracking.mlflow_run import MAX_TAG_LEN, register_tables

    registered: list[dict] = []
    for step in range(400):
        value = register_tables(registered, f"completions/step_{step:06d}.json")
    assert len(value) <= MAX_TAG_LEN and registered[-1]["path"] == "completions/step_000399.json"
    assert len(registered) > 100


def test_an_existing_experiment_gets_the_kind_unless_it_has_one(client):
    from grpo.tracking.mlflow_run import EXPERIMENT_KIND_TAG, experiment_id

    old = client.create_experiment("old")
    chosen = client.create_experiment("chosen", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    assert experiment_id(client, client.tracking_uri, "old") == old
    assert client.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    experiment_id(client, client.tracking_uri, "chosen")
    assert client.get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "genai_development"


# ------------------------------------------------------------------------------ the study and its parent
def test_the_study_is_named_after_the_optimized_metric():
    import optuna

    from grpo.sweep.study import open_study

    kw = dict(storage_url="sqlite://", sampler=None, pruner=None, load_if_exists=True)
    study, _ = open_study(
        "one", optuna.storages.InMemoryStorage(), directions=["maximize"], metric_names="val/accuracy", **kw
    )
    assert study.metric_names == ["val/accuracy"]
    two, _ = open_study(
        "two", optuna.storages.InMemoryStorage(), directions=["maximize", "minimize"], metric_names="val/accuracy", **kw
    )
    assert two.metric_names is None  # one name cannot name two objectives


def test_the_parent_run_has_the_best_params_and_links_the_best_child(client):
    import optuna

    from grpo.sweep.mlflow_parent import MlflowParentRun
    from grpo.tracking.mlflow_run import experiment_id

    exp = experiment_id(client, client.tracking_uri, "view")
    parent = client.create_run(exp, run_name="study").info.run_id
    study = optuna.create_study(direction="maximize")
    for x in (0.1, 0.7, 0.4):
        trial = study.ask({"algorithm.kl_beta": optuna.distributions.FloatDistribution(0, 1)})
        child = client.create_run(exp, run_name=f"#{trial.number}", tags={"mlflow.parentRunId": parent})
        trial.set_user_attr("mlflow_run_id", child.info.run_id)
        study.tell(trial, x)
    best = study.best_trial
    results = {"best_trial": best.number, "best_value": best.value, "best_params": best.params}
    MlflowParentRun(client, parent).log_results(study, results, "python -m grpo.run ...", "FINISHED")
    run = client.get_run(parent)
    assert run.data.params == {"algorithm.kl_beta": str(best.params["algorithm.kl_beta"])}
    assert run.data.tags["best_run_id"] == best.user_attrs["mlflow_run_id"]
    assert f"(#/experiments/{exp}/runs/{best.user_attrs['mlflow_run_id']})" in run.data.tags["mlflow.note.content"]
    # a resumed study with another best keeps the params (MLflow cannot change them) and updates the tags
    results["best_params"] = {"algorithm.kl_beta": 0.99}
    MlflowParentRun(client, parent).log_results(study, results, None, "FINISHED")
    run = client.get_run(parent)
    assert run.data.tags["best_params.algorithm.kl_beta"] == "0.99"
    assert run.data.params["algorithm.kl_beta"] == str(best.params["algorithm.kl_beta"])


# ------------------------------------------------------------------------------ eval runs
def test_eval_runs_nest_under_their_source_run_in_its_experiment(tmp_path, client):
    from grpo.compose import compose
    from grpo.eval import log_to_mlflow
    from grpo.tracking.mlflow_run import experiment_id

    source_exp = experiment_id(client, client.tracking_uri, "where-it-trained")
    source = client.create_run(source_exp, run_name="trained").info.run_id
    comp = compose([f"logger.tracking_uri={client.tracking_uri}", "logger.experiment=elsewhere"])
    state = {"step": 3, "run_name": "trained", "mlflow_run_id": source}
    logged = log_to_mlflow(comp, {"eval/val/accuracy": 0.5}, "t", split="val", checkpoint="c", state=state, run_id=None)
    run = client.get_run(logged)
    assert run.data.tags["mlflow.parentRunId"] == source and run.info.experiment_id == source_exp
    assert run.data.tags["eval"] == "true" and run.data.tags["source_run_id"] == source
    # a source run not in this store: a top-level run in the configured experiment
    state["mlflow_run_id"] = "0" * 32
    orphan = client.get_run(log_to_mlflow(comp, {}, "t", split="val", checkpoint="c", state=state, run_id=None))
    assert "mlflow.parentRunId" not in orphan.data.tags
    assert orphan.info.experiment_id == client.get_experiment_by_name("elsewhere").experiment_id


def test_compare_leaves_eval_runs_and_study_parents_out_unless_asked():
    from types import SimpleNamespace

    from grpo.analysis.runs import is_training_run

    def run(params, **tags):
        return SimpleNamespace(data=SimpleNamespace(params=params, tags=tags))

    assert is_training_run(run({"a": "1"}))
    assert not is_training_run(run({"checkpoint": "c"}, eval="true"))
    assert is_training_run(run({"checkpoint": "c"}, eval="true"), with_eval=True)
    assert not is_training_run(run({"algorithm.kl_beta": "0.1"}, study_name="s"))  # a parent with best params
    assert not is_training_run(run({}))


def test_legends_name_trials_by_number_and_differing_params_and_mark_pruned_ones():
    from types import SimpleNamespace

    from grpo.analysis.run_plots import legend_label, trial_state
    from grpo.analysis.run_table import RunRow

    def row(trial, state, kl):
        info = SimpleNamespace(run_id="f" * 32, status="KILLED" if state == "PRUNED" else "FINISHED", run_name="x")
        tags = {"optuna_trial": str(trial), "optuna_state": state}
        run = SimpleNamespace(info=info, data=SimpleNamespace(params={}, tags=tags))
        return RunRow(run, {"algorithm.kl_beta": kl, "derived.rce_steps": 150}, {})

    keys = ["algorithm.kl_beta", "derived.rce_steps"]
    assert legend_label(row(3, "COMPLETE", 0.20880081501089318), keys) == "#3 kl_beta=0.21"
    assert legend_label(row(4, "PRUNED", 0.055), keys) == "#4 kl_beta=0.055 (pruned)"
    assert trial_state(row(4, "PRUNED", 0.1)) == "PRUNED"


# ------------------------------------------------------------------------------ a real sweep
@pytest.mark.slow
def test_a_sweep_in_mlflow_and_optuna_terms(tmp_path):
    import optuna
    from mlflow.tracking import MlflowClient

    from tests.test_sweeps_main_app import run_sweep

    run_sweep(tmp_path, "rce_grpo", 2, "hydra.sweeper.pruner.n_startup_trials=100")
    study = optuna.load_study(study_name="rce_grpo", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert study.metric_names == ["val/accuracy"]  # the dashboard's label, not "Objective 0"

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("grpo-suite")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2
    names = [c.info.run_name for c in children]
    assert len(set(names)) == 2 and all(n.startswith("#") and "kl_beta=" in n for n in names)
    for child in children:
        assert not [k for k in child.data.params if k.startswith(BOOKKEEPING)]
        tables = json.loads(child.data.tags["mlflow.loggedArtifacts"])
        assert tables and all(t["type"] == "table" and t["path"].startswith("completions/") for t in tables)
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "reward")]
        assert min(steps) <= 4 < max(steps)  # one reward series over RCE (steps 1-4) and GRPO (5-6)
    best = study.best_trial
    assert parent.data.params == {k: str(v) for k, v in best.params.items()}
    assert parent.data.tags["best_run_id"] == best.user_attrs["mlflow_run_id"]
