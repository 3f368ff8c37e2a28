"""`grpo.compare` on a temp MLflow store filled by real `python -m grpo.run` runs.

Three runs of the number game differ only in algorithm.kl_beta and hang under one parent run
tagged as a study, the way the Optuna sweeper nests its trials; the module fixture makes
them once (about 40 s on two cores).
"""

import csv
import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from grpo.analysis.run_plots import short_keys
from grpo.analysis.run_table import MetricSpec, is_noisy, parse_metric
from grpo.analysis.runs import run_filter
from grpo.compare import main
from grpo.plots import spans_decades

REPO = Path(__file__).resolve().parents[1]
KL_BETAS = ("0.01", "0.1", "1.0")
STUDY = "kl-test"
DEFAULT_COLUMNS = ["val/accuracy", "val/accuracy (best)", "val/reward", "train/reward", "train/kl", "time/total"]


@dataclass
class Store:
    uri: str
    root: Path
    parent_id: str


def run_overrides(root: Path, uri: str, parent_id: str, kl_beta: str) -> list[str]:
    return [
        "task=numgame",
        "trainer.max_steps=4",
        "eval.eval_every=2",
        "schedule.rce_steps=0",
        "rollout.batch_size=4",
        "rollout.group_size=2",
        "eval.num_samples=8",
        "trainer.threads=1",
        f"logger.tracking_uri={uri}",
        f"hydra.run.dir={root}/run_{kl_beta}",
        f"algorithm.kl_beta={kl_beta}",
        f"logger.parent_run_id={parent_id}",
        f"++logger.tags.optuna_study={STUDY}",
    ]


def make_parent(uri: str, root: Path) -> str:
    """The sweep's parent run, as the sweeper makes it: tags, no params, artifacts beside the store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("grpo-suite", artifact_location=str(root / "mlartifacts" / "grpo-suite"))
    return client.create_run(exp, run_name=STUDY, tags={"study_name": STUDY}).info.run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    root = tmp_path_factory.mktemp("compare")
    uri = f"sqlite:///{root}/mlflow.db"
    parent_id = make_parent(uri, root)
    env = {**os.environ, "TQDM_DISABLE": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "grpo.run", *run_overrides(root, uri, parent_id, b)],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for b in KL_BETAS
    ]
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-3000:]
    return Store(uri, root, parent_id)


def compare(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def as_json(capsys, store: Store, *args: str) -> list[dict]:
    code, out, err = compare(capsys, "--tracking-uri", store.uri, "--format", "json", *args)
    assert code == 0, err
    return json.loads(out)


# ------------------------------------------------------------------------------ no store needed
def test_metric_specs():
    assert parse_metric("val/accuracy") == MetricSpec("val/accuracy", "final")
    assert parse_metric("val/accuracy:best").label == "val/accuracy (best)"
    assert parse_metric("train/kl:min") == MetricSpec("train/kl", "min")


def test_noise_and_labels():
    assert is_noisy("logger.tags.optuna_study") and is_noisy("paths.outputs") and is_noisy("trainer.output_dir")
    assert is_noisy("optuna_trial") and not is_noisy("algorithm.kl_beta")
    assert short_keys(["algorithm.kl_beta", "schedule.grpo_lr", "lora.rank"]) == {
        "algorithm.kl_beta": "kl_beta",
        "schedule.grpo_lr": "grpo_lr",
        "lora.rank": "rank",
    }
    assert short_keys(["reward.alpha", "lora.alpha"]) == {"reward.alpha": "reward.alpha", "lora.alpha": "lora.alpha"}
    assert run_filter("abc", ["model=tiny"]) == "tags.`mlflow.parentRunId` = 'abc' and tags.`model` = 'tiny'"
    assert spans_decades([0.01, 0.1, 1.0]) and not spans_decades([0.05, 0.1, 0.2]) and not spans_decades([0, 1])


def test_missing_store_is_named(tmp_path, capsys):
    code, out, err = compare(capsys, "--tracking-uri", f"sqlite:///{tmp_path}/none.db")
    assert code == 2 and out == ""
    assert (
        err.strip() == f"error: no MLflow store at {tmp_path}/none.db: nothing has been tracked there yet "
        "(run `python -m grpo.run ...` first, or pass --tracking-uri)"
    )
    assert not (tmp_path / "none.db").exists()  # reporting it must not create it


def test_empty_store(tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    MlflowClient(tracking_uri=uri).search_experiments()  # creates the tables, no runs
    capsys.readouterr()  # MLflow's own log lines about creating them
    code, _, err = compare(capsys, "--tracking-uri", uri)
    assert code == 2 and err.strip() == f"error: the store {uri} has no runs yet (run `python -m grpo.run ...` first)"


# ---------------------------------------------------------------------------- real runs
@pytest.mark.slow
def test_one_row_per_run_with_the_differing_param(store, capsys):
    rows = as_json(capsys, store)
    assert len(rows) == 3
    assert sorted(r["algorithm.kl_beta"] for r in rows) == [0.01, 0.1, 1.0]
    # kl_beta is the only param that differs; equal params and bookkeeping are left out.
    assert list(rows[0]) == ["run", "id", "status", "algorithm.kl_beta", *DEFAULT_COLUMNS]
    assert all(r["status"] == "FINISHED" and len(r["id"]) == 32 for r in rows)
    assert all(0.0 <= r["val/accuracy"] <= r["val/accuracy (best)"] <= 1.0 for r in rows)
    assert all(r["time/total"] > 0 for r in rows)
    values = [r["val/accuracy"] for r in rows]
    assert values == sorted(values, reverse=True)  # default sort: the first metric, highest first


@pytest.mark.slow
def test_terminal_and_markdown_and_csv(store, capsys):
    code, out, _ = compare(capsys, "--tracking-uri", store.uri)
    assert code == 0
    assert "algorithm.kl_beta" in out and out.count("FINISHED") == 3
    assert "lora.rank" not in out and "trainer.max_steps" not in out and "optuna_study" not in out
    assert "params equal on all runs are not shown" in out

    code, out, _ = compare(capsys, "--tracking-uri", store.uri, "--format", "markdown", "--metrics", "val/accuracy")
    lines = out.splitlines()
    assert lines[0] == "| run | id | status | algorithm.kl_beta | val/accuracy |"
    assert lines[1] == "|---|---|---|---|---:|"
    assert len([ln for ln in lines if "FINISHED" in ln]) == 3

    code, out, _ = compare(capsys, "--tracking-uri", store.uri, "--format", "csv")
    records = list(csv.DictReader(io.StringIO(out)))
    assert len(records) == 3 and {r["algorithm.kl_beta"] for r in records} == set(KL_BETAS)


@pytest.mark.slow
def test_selection_by_parent_tag_and_ids(store, capsys):
    children = as_json(capsys, store, "--parent", store.parent_id[:8])
    assert len(children) == 3
    assert len(as_json(capsys, store, "--tag", f"optuna_study={STUDY}", "--tag", "model=tiny")) == 3
    two = [r["id"] for r in children[:2]]
    assert {r["id"] for r in as_json(capsys, store, "--runs", two[0], two[1][:8])} == set(two)  # full id or prefix
    assert len(as_json(capsys, store, "--last", "1")) == 1


@pytest.mark.slow
def test_sort_and_chosen_metrics(store, capsys):
    rows = as_json(capsys, store, "--metrics", "train/kl:min", "time/total", "--sort", "time/total", "--ascending")
    assert list(rows[0])[-2:] == ["train/kl (min)", "time/total"]
    times = [r["time/total"] for r in rows]
    assert times == sorted(times)


@pytest.mark.slow
def test_plots(store, capsys, tmp_path):
    code, out, _ = compare(capsys, "--tracking-uri", store.uri, "--plot", str(tmp_path / "plots"))
    assert code == 0
    expected = ["val_accuracy.png", "train_reward.png", f"sweep_{STUDY}_algorithm.kl_beta.png"]
    for name in expected:
        path = tmp_path / "plots" / name
        assert f"wrote {path}" in out
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(expected)


@pytest.mark.slow
def test_error_messages(store, capsys):
    code, _, err = compare(capsys, "--tracking-uri", store.uri, "--experiment", "nope")
    assert code == 2
    assert err.strip() == f"error: no experiment 'nope' in {store.uri} (existing: Default, grpo-suite)"

    code, _, err = compare(capsys, "--tracking-uri", store.uri, "--metrics", "val/acuracy")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "unknown metric 'val/acuracy' (did you mean 'val/accuracy'?)" in err and "train/kl" in err

    code, _, err = compare(capsys, "--tracking-uri", store.uri, "--plot", "--curves", "nope")
    assert code == 2 and "unknown metric 'nope'" in err

    code, _, err = compare(capsys, "--tracking-uri", store.uri, "--tag", "model=big")
    assert (
        code == 2 and err.strip() == f"error: no runs matched --tag model=big in experiment 'grpo-suite' of {store.uri}"
    )

    code, _, err = compare(capsys, "--tracking-uri", store.uri, "--runs", "ffffffff")
    assert code == 2 and "no run with id 'ffffffff'" in err
