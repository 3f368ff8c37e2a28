"""Every run re-creatable from its MLflow record: `grpo.rerun`, `grpo.eval --run`, data lineage.

Fast tests read records made in-process (a tracker logs what a run logs, no training); the slow
ones start real `python -m grpo.run` / `grpo.rerun` processes on the tiny model with one torch
thread, where a run's metric history is a function of its config and seed alone.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from grpo.compose import compose
from grpo.config.flatten import flat_config
from grpo.rerun import main as rerun_main
from grpo.rerun import make_plan, report, restore
from grpo.run import git_commit
from grpo.tasks.lineage import data_sources, file_digest
from grpo.tracking.run_record import log_run_record
from tests.helpers.subprocess_env import ROOT, child_env

TIMING = ("time/", "train/step_time", "train/tokens_per_s")  # wall-clock metrics differ between runs
TOL = 1e-6
NUMGAME = [
    "task=numgame",
    "task.train_size=64",
    "task.val_size=16",
    "schedule.rce_steps=4",
    "trainer.max_steps=4",
    "logger.log_every=1",
    "eval.eval_every=4",
    "eval.num_samples=16",
    "rollout.batch_size=4",
    "rollout.group_size=4",
    "generation.max_new_tokens=4",
    "trainer.threads=1",
]


# ---------------------------------------------------------------------------------- helpers
def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def all_runs(uri: str) -> list:
    c = client(uri)
    return c.search_runs([e.experiment_id for e in c.search_experiments()])


def history(uri: str, run_id: str) -> dict[str, list[tuple[int, float]]]:
    c = client(uri)
    run = c.get_run(run_id)
    return {
        key: sorted((m.step, m.value) for m in c.get_metric_history(run_id, key))
        for key in run.data.metrics
        if not key.startswith(TIMING)
    }


def same(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> bool:
    return [s for s, _ in a] == [s for s, _ in b] and all(
        (math.isnan(x) and math.isnan(y)) or abs(x - y) <= TOL for (_, x), (_, y) in zip(a, b)
    )


def start(module: str, *args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=child_env(TQDM_DISABLE="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen, timeout: int = 300) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def record(uri: str, overrides: list[str], config_overrides: list[str] | None = None, **tags: str) -> str:
    """An MLflow run recorded as `grpo.run` records one (params, data, config, overrides), no training."""
    from grpo.tracking.mlflow_run import MlflowTracker

    comp = compose([*(config_overrides or overrides), f"logger.tracking_uri={uri}"])
    tracker = MlflowTracker(
        comp.cfg.logger, comp.derived.run_name, {"git_commit": git_commit(), "overrides": " ".join(overrides), **tags}
    )
    log_run_record(
        tracker,
        {**flat_config(comp.raw), **comp.derived.as_params()},
        OmegaConf.to_yaml(comp.raw, resolve=True),
        overrides=[*overrides, f"logger.tracking_uri={uri}"],
        overrides_text=" ".join(overrides),
        sources=data_sources(comp.cfg.task),
    )
    tracker.finish("FINISHED")
    return tracker.run_id


def one_error_line(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as info:
        rerun_main(argv)
    assert info.value.code == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith(("error:", "warning:", "note:"))]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


# ---------------------------------------------------------------------------- fast: records
def test_restore_turns_one_composition_into_the_recorded_one():
    now = {"lora.rank": 8, "task.domain_ratios.qa": 1.0, "seed": 42}
    recorded = {"lora.rank": 4, "task.domain_ratios.math": 1.0, "seed": 42, "lora.gone": 1}
    overrides, lost = restore(now, recorded)
    assert overrides == ["lora.rank=4", "+task.domain_ratios.math=1.0", "~task.domain_ratios.qa"] and lost == [
        "lora.gone"
    ]


def test_a_record_that_conf_composes_differently_today_is_restored(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    # Recorded with lora.rank=4 and a math ratio that today's `task=arithmetic` alone does not give.
    run_id = record(uri, ["task=arithmetic"], ["task=arithmetic", "lora.rank=4", "+task.domain_ratios.math=1.0"])
    plan = make_plan(run_id[:8], [f"logger.tracking_uri={uri}", "seed=7"])
    assert plan.record.run_id == run_id and set(plan.restored) == {"lora.rank", "task.domain_ratios.math"}
    comp = compose([o for o in plan.overrides if not o.startswith("hydra.")])
    assert comp.cfg.lora.rank == 4 and comp.cfg.task.domain_ratios == {"math": 1.0} and comp.cfg.seed == 7
    assert comp.cfg.logger.tags["rerun_of"] == run_id and not plan.changes
    assert report(plan, strict=False) is None
    err = capsys.readouterr().err
    assert f"rerun of {run_id}" in err and "restored from its record: lora.rank, task.domain_ratios.math" in err


def test_unknown_run_unreachable_store_and_bad_keys_end_in_one_line(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run_id = record(uri, ["task=numgame"])
    line = one_error_line(capsys, ["0" * 32, f"logger.tracking_uri={uri}"])
    assert line == f"error: no run '{'0' * 32}' in {uri}"
    assert "no run with id 'ffff'" in one_error_line(capsys, ["ffff", f"logger.tracking_uri={uri}"])
    line = one_error_line(capsys, [run_id, f"logger.tracking_uri=sqlite:///{tmp_path}/none.db"])
    assert f"no MLflow store at {tmp_path}/none.db" in line and not (tmp_path / "none.db").exists()
    for typo in ("+lora.rnak=8", "+foo=1"):  # a rerun's config goes through the same checks
        assert "unknown key" in one_error_line(capsys, [run_id, typo, f"logger.tracking_uri={uri}"])
    assert len(all_runs(uri)) == 1  # nothing started


def test_changed_data_and_environment_are_reported(tmp_path, capsys, monkeypatch):
    from grpo.tracking import run_record
    from grpo.tracking.environment import environment

    data = tmp_path / "train.jsonl"
    shutil.copy(ROOT / "experiments" / "data" / "aflow" / "train.jsonl", data)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setattr(run_record, "environment", lambda: {**environment(), "env.torch": "0.0.1"})
    run_id = record(uri, ["task=jsonl", f"task.train_path={data}", "task.train_size=50"])
    monkeypatch.undo()
    recorded = client(uri).get_run(run_id).data.params["data.train.digest"]
    assert recorded == file_digest(str(data))[0]
    lines = data.read_text().splitlines(keepends=True)
    lines[4] = lines[4].replace('"domain"', '"tag": "edited", "domain"', 1)
    data.write_text("".join(lines))
    plan = make_plan(run_id, [f"logger.tracking_uri={uri}"])
    assert plan.changes == [f"train data {data} digest {recorded} -> {file_digest(str(data))[0]}"]
    assert plan.environment[0].startswith("torch 0.0.1 -> ")
    report(plan, strict=False)
    warnings = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 2 and recorded in warnings[0] and "torch 0.0.1" in warnings[1]
    # Another train file on purpose is not a difference to report.
    assert not make_plan(
        run_id, [f"logger.tracking_uri={uri}", "task.train_path=experiments/data/aflow/train.jsonl"]
    ).changes


def test_compare_shows_different_data_and_links_checkpoints(tmp_path, capsys):
    from grpo.compare import main as compare_main

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    a = record(
        uri, ["task=numgame"], best_checkpoint_uri="runs:/x/adapter_best", final_checkpoint_uri="runs:/x/adapter"
    )
    b = record(uri, ["task=numgame", "task.seed=5"])
    c = record(uri, ["task=numgame", "seed=3"])
    capsys.readouterr()
    assert compare_main(["--tracking-uri", uri, "--format", "json", "--checkpoints"]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[a]["data"] == rows[c]["data"] != rows[b]["data"]  # the task seed made other data
    assert not any(k.startswith("data.") for k in rows[a])  # the digests are summed up in one column
    assert rows[a]["best checkpoint"] == "runs:/x/adapter_best" and rows[a]["final checkpoint"] == "runs:/x/adapter"
    assert compare_main(["--tracking-uri", uri, "--runs", a, c, "--format", "json"]) == 0
    assert all("data" not in row for row in json.loads(capsys.readouterr().out))  # the same data: no column


def test_a_checkpoint_without_its_config_is_refused_in_one_line(tmp_path, capsys):
    from grpo.checkpoint import save_checkpoint
    from grpo.eval import evaluate_checkpoint
    from grpo.eval import main as eval_main
    from grpo.models.load import load_model
    from grpo.models.lora import apply_lora

    comp = compose(["+experiment=aflow_mixed", "trainer.device=cpu"])
    model, tokenizer = load_model(comp.cfg.model)
    state = {"step": 3, "mlflow_run_id": "a" * 32, "config": flat_config(comp.raw)}
    ckpt = save_checkpoint(str(tmp_path / "moved"), 3, apply_lora(model, comp.cfg.lora), tokenizer, state, {})
    with pytest.raises(SystemExit):
        eval_main(["--checkpoint", ckpt, "logger.backend=none"])
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--run {'a' * 32}" in err and "task.name='jsonl'" in err, err
    # The overrides it was trained with are accepted.
    summary, _ = evaluate_checkpoint(ckpt, ["+experiment=aflow_mixed", "logger.backend=none"], limit=2, progress=False)
    assert summary["all"]["prompts"] == 2


# ---------------------------------------------------------------------- slow: real runs
@pytest.fixture(scope="module")
def numgame(tmp_path_factory):
    """A finished short numgame run: (its directory, store URI, run id)."""
    out = tmp_path_factory.mktemp("numgame")
    uri = f"sqlite:///{out}/mlflow.db"
    finish(start("grpo.run", *NUMGAME, "seed=7", f"logger.tracking_uri={uri}", f"hydra.run.dir={out}/run", cwd=out))
    (run,) = all_runs(uri)
    return out, uri, run.info.run_id


@pytest.mark.slow
def test_the_same_seed_gives_the_same_history_and_another_seed_another(numgame, tmp_path):
    """Seeds 7 and 8 as two jobs of one `-m` process (seed 7 first, as fresh as the original's)."""
    _, uri, run_id = numgame
    other_uri = f"sqlite:///{tmp_path}/mlflow.db"
    finish(
        start(
            "grpo.run",
            "-m",
            *NUMGAME,
            "seed=7,8",
            f"logger.tracking_uri={other_uri}",
            f"hydra.sweep.dir={tmp_path}/jobs",
            cwd=tmp_path,
        )
    )
    by_seed = {r.data.params["seed"]: history(other_uri, r.info.run_id) for r in all_runs(other_uri)}
    original, again, other = history(uri, run_id), by_seed["7"], by_seed["8"]
    assert original.keys() == again.keys() and all(same(original[k], again[k]) for k in original)
    assert original.keys() == other.keys() and not all(same(original[k], other[k]) for k in original)


@pytest.mark.slow
def test_the_best_and_final_adapters_are_artifacts_linked_by_tags(numgame):
    """Validations at steps 4 (end of RCE) and 8 (the end): the best of them and the final one."""
    from peft import PeftModel

    from grpo.config.schema import ModelConfig
    from grpo.models.load import load_model

    out, uri, run_id = numgame
    c = client(uri)
    tags = c.get_run(run_id).data.tags
    val = history(uri, run_id)["val/accuracy"]
    best = min(step for step, value in val if value == max(v for _, v in val))
    assert tags["best_step"] == str(best) and tags["final_step"] == "8"
    best_path = "adapter_best" if best != 8 else "adapter"
    assert tags["best_checkpoint_uri"] == f"runs:/{run_id}/{best_path}"
    assert tags["final_checkpoint_uri"] == f"runs:/{run_id}/adapter"
    files = {a.path.split("/")[-1] for a in c.list_artifacts(run_id, "adapter")}
    assert {"adapter_config.json", "adapter_model.safetensors", "trainer_state.json"} <= files
    assert "training_state.pt" not in files  # the optimizer state stays with the local checkpoint
    local = c.download_artifacts(run_id, best_path, str(out / "downloaded"))
    assert isinstance(PeftModel.from_pretrained(load_model(ModelConfig())[0], local), PeftModel)


def rerun_of(uri: str, run_id: str):
    (run,) = [r for r in all_runs(uri) if r.data.tags.get("rerun_of") == run_id]
    return run


@pytest.mark.slow
def test_rerun_gives_the_same_history(numgame):
    out, uri, run_id = numgame
    log = finish(start("grpo.rerun", run_id[:8], f"logger.tracking_uri={uri}", f"hydra.run.dir={out}/rerun", cwd=out))
    assert f"rerun of {run_id}" in log
    new = rerun_of(uri, run_id)
    a, b = history(uri, run_id), history(uri, new.info.run_id)
    assert a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    original = client(uri).get_run(run_id).data.params
    assert {k: v for k, v in new.data.params.items() if not k.startswith("logger.tags")} == {
        k: v for k, v in original.items() if not k.startswith("logger.tags")
    }  # logger.tags holds rerun_of
    assert new.data.tags["mlflow.runName"] == client(uri).get_run(run_id).data.tags["mlflow.runName"]


@pytest.mark.slow
def test_rerun_with_an_override_differs_only_where_it_should(numgame):
    """A GRPO learning rate 1000x larger: the RCE stage (steps 1-4) is the same, GRPO's is not."""
    out, uri, run_id = numgame
    finish(
        start(
            "grpo.rerun",
            run_id,
            "schedule.grpo_lr=0.01",
            f"logger.tracking_uri={uri}",
            f"hydra.run.dir={out}/rerun_lr",
            cwd=out,
        )
    )
    new = [
        r
        for r in all_runs(uri)
        if r.data.tags.get("rerun_of") == run_id and r.data.params["schedule.grpo_lr"] == "0.01"
    ]
    a, b = history(uri, run_id), history(uri, new[0].info.run_id)
    assert a.keys() == b.keys()
    for key in a:  # everything up to the end of RCE is equal
        assert same([p for p in a[key] if p[0] <= 4], [p for p in b[key] if p[0] <= 4]), key
    assert not same(a["train/lr"], b["train/lr"])
    assert any(not same(a[k], b[k]) for k in ("train/reward", "train/kl", "train/loss/total", "val/reward"))
    params_a, params_b = client(uri).get_run(run_id).data.params, new[0].data.params
    changed = {k for k in params_a if params_a[k] != params_b.get(k) and not k.startswith("logger.tags")}
    assert changed == {"schedule.grpo_lr"}


@pytest.fixture(scope="module")
def aflow(tmp_path_factory):
    """A finished short aflow_mixed run on copies of its JSONL files: (data dir, store URI, run id)."""
    out = tmp_path_factory.mktemp("aflow")
    data = out / "data"
    shutil.copytree(ROOT / "experiments" / "data" / "aflow", data)
    uri = f"sqlite:///{out}/mlflow.db"
    finish(
        start(
            "grpo.run",
            "+experiment=aflow_mixed",
            "trainer.max_steps=2",
            "trainer.threads=1",
            *(f"task.{split}_path={data}/{split}.jsonl" for split in ("train", "val", "test")),
            f"logger.tracking_uri={uri}",
            f"hydra.run.dir={out}/run",
            cwd=out,
        )
    )
    (run,) = all_runs(uri)
    return data, uri, run.info.run_id


@pytest.mark.slow
def test_a_run_logs_each_jsonl_file_as_a_dataset_input(aflow):
    data, uri, run_id = aflow
    run = client(uri).get_run(run_id)
    inputs = {
        next(t.value for t in i.tags if t.key == "mlflow.data.context"): i.dataset for i in run.inputs.dataset_inputs
    }
    assert set(inputs) == {"train", "val", "test"}
    for split, dataset in inputs.items():
        digest, records = file_digest(str(data / f"{split}.jsonl"))
        assert dataset.digest == digest == run.data.params[f"data.{split}.digest"]
        assert json.loads(dataset.source) == {"uri": str(data / f"{split}.jsonl")} and dataset.source_type == "local"
        assert json.loads(dataset.profile)["records"] == records
    assert {"env.python", "env.torch", "env.transformers", "env.peft", "env.accelerate"} <= set(run.data.params)


@pytest.mark.slow
def test_eval_run_reports_the_mixed_domains_and_equals_the_final_validation(aflow, capsys):
    from grpo.eval import main as eval_main

    _, uri, run_id = aflow
    eval_main(["--run", run_id[:8], f"logger.tracking_uri={uri}"])
    out = capsys.readouterr().out
    rows = {
        ln.split()[0]: ln.split()[1:]
        for ln in out.splitlines()
        if ln.split()[:1] in (["code"], ["math"], ["qa"], ["all"])
    }
    assert {k: int(v[0]) for k, v in rows.items()} == {"code": 5, "math": 6, "qa": 5, "all": 16}
    assert f"runs:/{run_id}/adapter" in out  # best = final here: one validation, at the end
    final = client(uri).get_run(run_id).data.metrics
    for domain, (_, accuracy, reward) in rows.items():
        suffix = "" if domain == "all" else f"/{domain}"
        assert float(accuracy) == pytest.approx(final[f"val/accuracy{suffix}"], abs=5e-4)
        assert float(reward) == pytest.approx(final[f"val/reward{suffix}"], abs=5e-4)
    evaluated = [r for r in all_runs(uri) if r.data.tags.get("eval") == "true"]
    assert evaluated[0].data.tags["source_run_id"] == run_id


@pytest.mark.slow
def test_editing_one_line_of_a_jsonl_file_makes_rerun_report_the_changed_digest(aflow, capsys):
    data, uri, run_id = aflow
    train = data / "train.jsonl"
    before = train.read_text()
    recorded = client(uri).get_run(run_id).data.params["data.train.digest"]
    runs = len(all_runs(uri))
    try:
        train.write_text(before.replace('"answer": "down"', '"answer": "Down"', 1))
        line = one_error_line(capsys, [run_id, "--strict", f"logger.tracking_uri={uri}"])
        assert f"train data {train} digest {recorded} -> {file_digest(str(train))[0]}" in line
        assert len(all_runs(uri)) == runs  # --strict started nothing
    finally:
        train.write_text(before)
