"""The shipped sweep files (sweeps/rce_grpo.yaml, sweeps/kl_lr_grid.yaml) on the main app.

Fast: both files compose through the real config tree (schema and checks included), their
search spaces parse into the intended Optuna distributions, and every corner of the search
space is a valid run configuration. Slow (@pytest.mark.slow): a real `python -m grpo.run -m
+sweep=...` with tiny trials against a temporary study and MLflow store, resumed once.
"""

from __future__ import annotations

import itertools
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.helpers.subprocess_env import child_env  # noqa: E402  (after the path insert)

SEARCHED = {
    "algorithm.kl_beta",
    "schedule.rce_lr",
    "schedule.grpo_lr",
    "reward.alpha",
    "reward.beta",
    "schedule.rce_steps",
    "trainer.max_steps",
}


def hydra_cfg(*overrides: str):
    """The full composition (hydra node included), as `python -m grpo.run` sees it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import hydra_plugins.grpo_optuna_sweeper  # noqa: F401 - registers hydra/sweeper=optuna
    from grpo.compose import CONF_DIR, register

    register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def space_of(cfg):
    from omegaconf import OmegaConf

    from grpo.sweep.search_space import parse_search_space

    return parse_search_space(OmegaConf.to_container(cfg.hydra.sweeper.params), [])


def corners(dist):
    """The extreme values of a distribution (both ends; every choice of a categorical)."""
    from optuna.distributions import CategoricalDistribution

    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    return [dist.low, dist.high]


# --------------------------------------------------------------------------- fast
def test_rce_grpo_composes_on_numgame_tiny_with_the_lever_reward():
    from grpo.compose import compose

    comp = compose(["+sweep=rce_grpo"])
    cfg = comp.cfg
    assert comp.choices["sweep"] == "rce_grpo"
    assert comp.choices["experiment"] == "numgame_tiny"  # tags and run names name the experiment
    assert comp.choices["reward"] == "lever"
    assert cfg.task.name == "numgame" and cfg.model.name == "tiny"
    assert not cfg.lora.enabled  # numgame_tiny's full fine-tuning is kept
    assert cfg.algorithm.rce.candidates == "task"
    # alpha/beta act through the lever reward; the objective stays the verifiable accuracy
    assert (cfg.reward.type, cfg.reward.quality_source) == ("lever", "policy")
    assert cfg.optimized_metric == "val/accuracy"
    # small enough for minutes on 2 cores, with several reports per trial for the pruner
    assert cfg.generation.max_new_tokens == 2
    assert cfg.eval.num_samples == 50 and cfg.eval.eval_every == 100
    assert cfg.trainer.threads == 1
    assert not hasattr(cfg, "optuna_trial")  # a trial reaches its job through GRPO_OPTUNA_TRIAL


def test_rce_grpo_sweeper_settings_and_search_space():
    from optuna.distributions import FloatDistribution, IntDistribution

    cfg = hydra_cfg("+sweep=rce_grpo")
    assert cfg.hydra.mode.name == "MULTIRUN"
    sw = cfg.hydra.sweeper
    assert sw._target_ == "hydra_plugins.grpo_optuna_sweeper.OptunaSweeper"
    assert (sw.direction, sw.study_name, sw.n_jobs) == ("maximize", "rce_grpo", 1)
    outputs = Path(cfg.paths.outputs)
    assert outputs.is_absolute()
    assert sw.storage == f"sqlite:///{outputs}/optuna.db"
    assert sw.sampler._target_ == "optuna.samplers.TPESampler" and sw.sampler.seed is not None
    assert sw.pruner._target_ == "optuna.pruners.MedianPruner"
    # pruning can start after two trials, at the second validation (step 200) of a trial
    assert sw.pruner.n_startup_trials <= 2
    assert sw.pruner.n_warmup_steps < 2 * cfg.eval.eval_every

    space = space_of(cfg)
    d = space.distributions
    assert set(d) == SEARCHED
    assert not space.fixed_overrides()
    assert d["algorithm.kl_beta"] == FloatDistribution(0.02, 0.3, log=True)
    assert d["schedule.rce_lr"].log and d["schedule.grpo_lr"].log
    assert isinstance(d["reward.alpha"], FloatDistribution) and not d["reward.alpha"].log
    assert (d["reward.alpha"].low, d["reward.alpha"].high) == (0.2, 0.5)  # seed values 0.2 .. 0.5
    assert (d["reward.beta"].low, d["reward.beta"].high) == (0.8, 1.0)  # seed values 0.8 .. 1.0
    # the seed's KL values lie inside the searched interval
    assert all(d["algorithm.kl_beta"].low <= v <= d["algorithm.kl_beta"].high for v in (0.05, 0.1, 0.2, 0.3))
    # stage lengths stand for RCE_EPOCHS 3..10 and GRPO_EPOCHS 5..15
    assert d["schedule.rce_steps"] == IntDistribution(150, 500, step=50)
    assert d["trainer.max_steps"] == IntDistribution(10, 30, step=2)


def test_kl_lr_grid_is_the_seed_kl_grid_times_two_grpo_lrs():
    from optuna.distributions import CategoricalDistribution

    from grpo.sweep.search_space import grid_size

    cfg = hydra_cfg("+sweep=kl_lr_grid")
    sw = cfg.hydra.sweeper
    assert sw.sampler._target_ == "optuna.samplers.GridSampler"
    assert sw.pruner._target_ == "optuna.pruners.NopPruner"
    assert (sw.direction, sw.study_name, sw.n_trials) == ("maximize", "kl_lr_grid", 6)
    d = space_of(cfg).distributions
    assert set(d) == {"algorithm.kl_beta", "schedule.grpo_lr"}
    assert d["algorithm.kl_beta"] == CategoricalDistribution([0.05, 0.1, 0.2])
    assert len(d["schedule.grpo_lr"].choices) == 2
    assert grid_size(d) == 6

    from grpo.compose import compose

    comp = compose(["+sweep=kl_lr_grid"])
    assert comp.choices["experiment"] == "numgame_tiny" and comp.cfg.reward.type == "lever"
    assert comp.cfg.optimized_metric == "val/accuracy"


@pytest.mark.parametrize("sweep", ["rce_grpo", "kl_lr_grid"])
def test_every_corner_of_the_search_space_is_a_valid_run(sweep):
    """What a trial composes: the file plus one value per searched key (here the extremes,
    combined pairwise with the others at their low end) passes the schema and the checks."""
    from grpo.compose import compose
    from grpo.sweep.search_space import format_value

    d = space_of(hydra_cfg(f"+sweep={sweep}")).distributions
    lows = {k: corners(v)[0] for k, v in d.items()}
    cases = [lows] + [{**lows, k: v} for k, dist in d.items() for v in corners(dist)[1:]]
    highs = {k: corners(v)[-1] for k, v in d.items()}
    cases.append(highs)
    for case in cases:
        comp = compose([f"+sweep={sweep}", *(f"{k}={format_value(v)}" for k, v in case.items())])
        for key, value in case.items():
            node = comp.cfg
            for part in key.split("."):
                node = getattr(node, part)
            assert node == pytest.approx(value), key


def test_the_sweep_files_compose_with_another_experiment():
    """The experiment is a default of the sweep file: `experiment=NAME` swaps the base run
    (the file's small-run settings are numgame_tiny's: lever_plan1 has 16 held-out prompts)."""
    from grpo.compose import compose

    comp = compose(["+sweep=rce_grpo", "experiment=lever_plan1", "eval.num_samples=16"])
    assert comp.choices["experiment"] == "lever_plan1"
    assert comp.cfg.task.name == "jsonl"


# --------------------------------------------------------------------------- slow
# Tiny trials: the searched lengths are fixed on the command line (the command line wins over
# `params`), the rest of the search space is still sampled.
TINY = [
    "schedule.rce_steps=4",
    "trainer.max_steps=2",
    "eval.eval_every=2",
    "eval.num_samples=8",
    "task.train_size=64",
    "task.val_size=8",
    "rollout.batch_size=8",
    "rollout.group_size=4",
]
PRUNE_EARLY = "hydra.sweeper.pruner.n_warmup_steps=0"  # rce_grpo's pruner may act at every report


def run_sweep(tmp_path: Path, sweep: str, n_trials: int, *extra: str, tag: str = "a"):
    cmd = [
        sys.executable,
        "-m",
        "grpo.run",
        "-m",
        f"+sweep={sweep}",
        f"hydra.sweeper.n_trials={n_trials}",
        f"hydra.sweeper.storage=sqlite:///{tmp_path}/optuna.db",
        f"logger.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
        f"hydra.sweep.dir={tmp_path}/multirun_{tag}",
        *TINY,
        *extra,
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"rc={proc.returncode} for {shlex.join(cmd)}\n{out[-6000:]}"
    return out


@pytest.mark.slow
def test_rce_grpo_sweep_end_to_end_with_resume(tmp_path):
    import mlflow
    import optuna

    out = run_sweep(tmp_path, "rce_grpo", 2, PRUNE_EARLY)
    assert "Best params: algorithm.kl_beta=" in out
    results = yaml.safe_load((tmp_path / "multirun_a" / "optimization_results.yaml").read_text())
    assert set(results["best_params"]) == SEARCHED - {"schedule.rce_steps", "trainer.max_steps"}
    assert results["study_name"] == "rce_grpo"
    assert results["n_trials"] == {"complete": 2, "pruned": 0, "failed": 0}
    assert "+sweep=rce_grpo" in results["command"] and "hydra.mode=RUN" in results["command"]

    # the same command with a larger target continues the study: numbers go on, nothing is redone
    run_sweep(tmp_path, "rce_grpo", 3, PRUNE_EARLY, tag="b")
    study = optuna.load_study(study_name="rce_grpo", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert [t.number for t in study.trials] == [0, 1, 2]
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials)
    assert [t.state.name for t in study.trials[:2]] == ["COMPLETE", "COMPLETE"]
    for t in study.trials:
        assert t.intermediate_values, t.number  # the run reported its validations to the trial
        assert set(t.params) == SEARCHED - {"schedule.rce_steps", "trainer.max_steps"}
    assert sorted(p.name for p in (tmp_path / "multirun_b").iterdir() if p.is_dir()) == ["2"]

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    parents = mlflow.search_runs(search_all_experiments=True, filter_string="tags.mlflow.runName = 'rce_grpo'")
    assert len(parents) == 1  # reused on resume
    parent = parents.iloc[0]
    children = mlflow.search_runs(
        search_all_experiments=True, filter_string=f"tags.mlflow.parentRunId = '{parent.run_id}'"
    )
    assert sorted(children["tags.optuna_trial"].astype(int)) == [0, 1, 2]
    assert set(children["tags.optuna_study"]) == {"rce_grpo"}
    assert set(children["tags.optuna_state"]) <= {"COMPLETE", "PRUNED"}
    assert not [c for c in children.columns if "optuna_trial" in c and not c.startswith("tags.")]  # no such param
    assert set(children["tags.sweep"]) == {"rce_grpo"}
    assert set(children["tags.experiment"]) == {"numgame_tiny"}
    assert children["metrics.val/accuracy"].notna().all()
    by_trial = {int(r["tags.optuna_trial"]): r for _, r in children.iterrows()}
    for t in study.trials:  # each MLflow run carries its trial's sampled params
        assert float(by_trial[t.number]["params.algorithm.kl_beta"]) == pytest.approx(t.params["algorithm.kl_beta"])
        assert by_trial[t.number]["params.reward.type"] == "lever"


@pytest.mark.slow
def test_kl_lr_grid_end_to_end(tmp_path):
    import optuna

    # two of the six cells (n_trials caps the grid), tiny runs
    out = run_sweep(tmp_path, "kl_lr_grid", 2)
    assert "(grid of 6)" in out
    study = optuna.load_study(study_name="kl_lr_grid", storage=f"sqlite:///{tmp_path}/optuna.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    cells = {(t.params["algorithm.kl_beta"], t.params["schedule.grpo_lr"]) for t in study.trials}
    grid = set(itertools.product([0.05, 0.1, 0.2], [1.0e-4, 1.0e-2]))
    assert len(cells) == 2 and cells <= grid
    assert (tmp_path / "multirun_a" / "optimization_results.yaml").exists()
