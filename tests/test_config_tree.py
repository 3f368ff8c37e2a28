"""Every file of the config tree composes (lightning-hydra-template's test_configs, for this tree).

Files are found by walking `conf/` (symlinks followed: conf/experiment -> experiments/,
conf/sweep -> sweeps/), so a new YAML is covered without touching this file:

- `conf/config.yaml` alone, and each option of each group: `group=option` for the groups of the
  root defaults list (`model=small`, `algorithm=dapo`), `+group=option` for the others
  (`+preset=full`, `+experiment=numgame_tiny`, `+sweep=rce_grpo`). Each composes in-process through
  `grpo.compose.compose` (the path `python -m grpo.run` takes: typed schema, range checks) and its
  job config prints as `--cfg job` prints it.
- each sweep file is also composed as a multirun composes it: the master config in MULTIRUN mode,
  its sweeper instantiated, its search space parsed, and one job config per corner of the space
  built by Hydra's `load_sweep_config`, then validated as the job validates itself.
- one subprocess, `python -m grpo.run ... --cfg job`, prints what the in-process composition holds.
- one real training step (RCE and/or GRPO, as the experiment has them) for every experiment.

Directories of `conf/` that are not Hydra groups, and options that need another value to compose,
are listed below with the reason.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from grpo.compose import CONF_DIR, compose, finish, register, without_hydra  # noqa: E402
from tests.helpers.openai_server import OpenAIServer  # noqa: E402
from tests.helpers.subprocess_env import child_env  # noqa: E402  (after the path insert)

# Directories under conf/ that Hydra never composes.
NOT_GROUPS = {
    "accelerate": "accelerate's own launcher config (`accelerate launch --config_file conf/accelerate/ddp.yaml`), "
    "read by accelerate, not a Hydra group",
}

# Folders inside a group that hold data its options read, not options (conf/experiment -> experiments/).
DATA_DIRS = {
    "experiment/data": "the experiments' data (experiments/data/: JSONL records, AFlow's operator descriptions "
    "in experiments/data/aflow/operators.yaml), read by runs, never composed",
}

# Options that cannot compose alone, for a good reason: the extra overrides that make them compose.
NEEDS = {
    "task=jsonl": (
        [
            "task.train_path=experiments/data/aflow/train.jsonl",
            "task.val_path=experiments/data/aflow/val.jsonl",
            "task.train_size=60",  # the sizes are caps that must fit the files (defaults 256 / 64)
            "task.val_size=16",
            "eval.num_samples=16",  # at most task.val_size (default 50)
        ],
        "the jsonl task reads its records from task.train_path, which has no default (null): "
        "alone it stops with a ConfigError naming task.train_path",
    ),
    "task=aflow": (
        [
            "task.train_path=experiments/data/aflow/train.jsonl",
            "task.val_path=experiments/data/aflow/val.jsonl",
            "task.train_size=60",
            "task.val_size=16",
            "eval.num_samples=16",
        ],
        "the aflow task reads jsonl records too (task.train_path has no default)",
    ),
}


def root_groups() -> set[str]:
    """The groups conf/config.yaml's defaults list chooses (`group=option` overrides them)."""
    defaults = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "config.yaml").defaults)
    return {next(iter(d)) for d in defaults if isinstance(d, dict)}


def config_files() -> list[Path]:
    """Every YAML file under conf/, symlinked directories followed."""
    out = []
    for dirpath, _dirs, files in os.walk(CONF_DIR, followlinks=True):
        out += [Path(dirpath) / f for f in files if f.endswith((".yaml", ".yml"))]
    return sorted(out)


def override_of(path: Path) -> str | None:
    """The override that selects `path` (None for conf/config.yaml itself)."""
    rel = path.relative_to(CONF_DIR)
    if len(rel.parts) == 1:
        return None
    group, option = rel.parent.as_posix(), rel.stem
    return f"{'' if group in root_groups() else '+'}{group}={option}"


def cases() -> list:
    params = []
    for path in config_files():
        rel = path.relative_to(CONF_DIR).as_posix()
        top = path.relative_to(CONF_DIR).parts[0]
        if top in NOT_GROUPS:
            params.append(pytest.param([], id=rel, marks=pytest.mark.skip(reason=f"{rel}: {NOT_GROUPS[top]}")))
            continue
        data = next((d for d in DATA_DIRS if rel.startswith(d + "/")), None)
        if data is not None:
            params.append(pytest.param([], id=rel, marks=pytest.mark.skip(reason=f"{rel}: {DATA_DIRS[data]}")))
            continue
        override = override_of(path)
        if override is None:
            params.append(pytest.param([], id=rel))
            continue
        extra, _why = NEEDS.get(override, ([], ""))
        params.append(pytest.param([override, *extra], id=rel))
    return params


def names_in(directory: str) -> list[str]:
    return sorted(p.stem for p in (ROOT / directory).glob("*.yaml"))


EXPERIMENTS = names_in("experiments")
SWEEPS = names_in("sweeps")


# --------------------------------------------------------------------------- the tree
def test_the_walk_sees_experiments_and_sweeps_through_conf():
    """conf/experiment and conf/sweep are the top-level experiments/ and sweeps/ folders."""
    assert (CONF_DIR / "experiment").resolve() == ROOT / "experiments"
    assert (CONF_DIR / "sweep").resolve() == ROOT / "sweeps"
    seen = {override_of(p) for p in config_files()}
    assert EXPERIMENTS and SWEEPS
    assert {f"+experiment={n}" for n in EXPERIMENTS} <= seen
    assert {f"+sweep={n}" for n in SWEEPS} <= seen
    assert {"model=small", "algorithm=dapo", "+preset=full"} <= seen


def test_no_yml_files():
    """Hydra reads `.yaml` only: a `.yml` option would be silently unreachable."""
    assert not [p for p in config_files() if p.suffix == ".yml"]


def test_the_explicit_lists_are_still_needed():
    """Every NOT_GROUPS directory exists and is no group; every NEEDS option still fails alone."""
    from grpo.config.errors import ConfigError

    for name in NOT_GROUPS:
        assert (CONF_DIR / name).is_dir(), name
        assert name not in root_groups(), name
    for override, (extra, _why) in NEEDS.items():
        key = extra[0].split("=")[0]
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            compose([override])


def test_accelerate_configs_are_accelerate_yaml():
    """The skipped directory still holds valid YAML that accelerate can read."""
    for path in (CONF_DIR / "accelerate").glob("*.yaml"):
        cfg = yaml.safe_load(path.read_text())
        assert {"compute_environment", "distributed_type", "num_processes"} <= set(cfg), path


@pytest.mark.parametrize("overrides", cases())
def test_file_composes(overrides):
    """`python -m grpo.run <override> --cfg job`, in-process: typed, checked, printable."""
    comp = compose(overrides)
    text = OmegaConf.to_yaml(comp.raw)  # what --cfg job prints
    assert yaml.safe_load(text) == OmegaConf.to_container(comp.raw)
    OmegaConf.to_yaml(comp.raw, resolve=True)  # every interpolation resolves
    if overrides:
        group, option = overrides[0].lstrip("+").split("=")
        assert comp.choices[group] == option  # the file itself was chosen


@pytest.mark.parametrize("name", SWEEPS)
def test_sweep_composes_as_a_multirun(name):
    """What `python -m grpo.run -m +sweep=NAME` composes before and for each of its jobs."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode
    from hydra.utils import instantiate

    import hydra_plugins.grpo_optuna_sweeper  # noqa: F401 - registers hydra/sweeper=optuna
    from grpo.sweep.search_space import parse_search_space

    register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        hydra_app = GlobalHydra.instance().hydra
        loader = hydra_app.config_loader
        master = hydra_app.compose_config("config", [f"+sweep={name}"], run_mode=RunMode.MULTIRUN)
        assert master.hydra.mode == RunMode.MULTIRUN
        assert master.hydra.runtime.choices.sweep == name
        sweeper = instantiate(master.hydra.sweeper)  # sampler and pruner arguments included
        assert type(sweeper).__name__ == "OptunaSweeper"

        space = parse_search_space(
            OmegaConf.to_container(master.hydra.sweeper.params), list(master.hydra.overrides.task), loader
        )
        assert space.distributions, "a sweep file with nothing to search"
        lows = {k: corner(d, 0) for k, d in space.distributions.items()}
        highs = {k: corner(d, -1) for k, d in space.distributions.items()}
        for point in (lows, highs):
            job = loader.load_sweep_config(master, space.overrides_for(point))
            comp = finish(job, OmegaConf.to_container(job.hydra.runtime.choices))
            OmegaConf.to_yaml(without_hydra(job))
            for key, value in point.items():
                if key in comp.choices:  # a config group (algorithm: choice(grpo, dapo)): the option chosen
                    assert comp.choices[key] == value, key
                    continue
                assert OmegaConf.select(comp.raw, key) == pytest.approx(value), key
    GlobalHydra.instance().clear()


def corner(dist, end: int):
    from optuna.distributions import CategoricalDistribution

    if isinstance(dist, CategoricalDistribution):
        return dist.choices[end]
    return (dist.low, dist.high)[end]


@pytest.mark.parametrize("overrides", [["+experiment=numgame_tiny"], ["+sweep=rce_grpo"]], ids=" ".join)
def test_cli_cfg_job_prints_the_in_process_composition(tmp_path, overrides):
    """The real CLI path once per kind of file (a sweep file sets hydra.mode=MULTIRUN itself)."""
    cmd = [sys.executable, "-m", "grpo.run", *overrides, "--cfg", "job"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = yaml.safe_load(proc.stdout)
    assert printed == OmegaConf.to_container(compose(overrides).raw)
    assert not list(tmp_path.iterdir())  # --cfg job runs nothing and writes nothing


# --------------------------------------------------------------------------- one real step
# Sizes only: the experiment's task, reward, algorithm, model and candidates stay as they are.
SHRINK = [
    "logger=none",
    "trainer.resume=never",
    "trainer.save_every=0",
    "eval.before_train=false",
    "eval.eval_every=0",
    "eval.num_samples=2",
    "rollout.batch_size=2",
]
MAX_NEW_TOKENS = 8  # completions are capped at this; shorter settings are kept


def needs_executor(cfg) -> bool:
    """Whether a component the run weighs calls the executor LLM."""
    from grpo.checks.aflow import scored_components
    from grpo.rewards.components import resolve

    custom = dict(cfg.reward.custom)
    return any(getattr(resolve(n, custom), "needs_executor", False) for n in scored_components(cfg))


@pytest.fixture
def stack():
    with contextlib.ExitStack() as s:
        yield s


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_one_real_step_per_experiment(tmp_path, name, stack):
    from grpo.recipe import Recipe

    full = compose([f"+experiment={name}"])
    overrides = [f"+experiment={name}", *SHRINK, f"trainer.output_dir={tmp_path}"]
    if full.cfg.model.name_or_path is not None:  # aflow_full / aflow_minimal name the 7B: the step runs on tiny
        overrides.append("model=tiny")
    if needs_executor(full.cfg):  # the executor LLM (AFlow's operators) is our test server on 127.0.0.1
        executor = stack.enter_context(OpenAIServer())
        overrides.append(f"reward.executor.base_url={executor.url}")
    # one step of each stage the experiment has, none of a stage it has not (lever_rce_only: no GRPO)
    if full.derived.rce_steps:
        overrides.append("schedule.rce_steps=1")
    if full.derived.grpo_steps:
        overrides.append("trainer.max_steps=1")
    if full.cfg.generation.max_new_tokens > MAX_NEW_TOKENS:  # easyr1_numgame: 128, bounded by the context
        overrides.append(f"generation.max_new_tokens={MAX_NEW_TOKENS}")
    comp = compose(overrides)
    assert comp.derived.rce_steps == min(full.derived.rce_steps, 1)
    assert comp.derived.grpo_steps == min(full.derived.grpo_steps, 1)

    recipe = Recipe(comp, run_dir=str(tmp_path), tags={})
    recipe.setup()
    try:
        metrics = recipe.train()
    finally:
        recipe.cleanup()
    assert recipe.step == comp.derived.rce_steps + comp.derived.grpo_steps
    assert comp.cfg.optimized_metric in metrics, sorted(metrics)
    assert all(math.isfinite(v) for v in metrics.values()), metrics

    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [r[k] for r in rows for k in ("rce/loss", "train/loss/total") if k in r]
    assert len(losses) == comp.derived.rce_steps + comp.derived.grpo_steps, rows
    assert all(math.isfinite(x) for x in losses), losses
