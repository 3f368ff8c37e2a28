"""What `python -m grpo.eval` evaluates: a checkpoint with its run's config, or the adapter an MLflow run logged.

- `--checkpoint DIR`: the checkpoint (or a run directory's latest) with the run's own config,
  `<run dir>/.hydra/config.yaml`. A checkpoint without it (moved, or downloaded on its own) is
  composed from the overrides given only when they agree with what it was trained with (the
  config in its trainer_state.json); otherwise one line names `--run` and the overrides to pass.
- `--run RUN_ID`: the run's best (or final) adapter artifact and its recorded config/config.yaml.

Either way the overrides go on top and the result is checked like a run's (grpo.compose.finish).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from grpo.checkpoint import latest_checkpoint
from grpo.compose import Composition, compose, finish, register
from grpo.config.errors import ConfigError

# What decides an evaluation: a checkpoint without its config must agree with its training on these.
EVAL_RELEVANT = ("model.", "task.", "reward.", "generation.", "eval.generation.")


def find_checkpoint(path: str) -> str:
    """A checkpoint directory: `path` itself, or the latest checkpoints/step_N of a run directory."""
    if any(os.path.isfile(os.path.join(path, f)) for f in ("adapter_config.json", "config.json")):
        return os.path.abspath(path)
    latest = latest_checkpoint(os.path.join(path, "checkpoints"))
    if latest is None:
        raise ConfigError(
            "--checkpoint",
            path,
            "neither a checkpoint (adapter_config.json or config.json) nor a run directory with checkpoints/step_N",
        )
    return os.path.abspath(latest)


def saved_composition(saved, choices: dict, overrides: Sequence[str]) -> Composition:
    """A run's saved config (an OmegaConf node) with `key=value` overrides on top, checked like a run's."""
    from omegaconf import OmegaConf

    from grpo.config.schema import RunConfig

    register()
    bad = [o for o in overrides if "=" not in o or o.startswith("~")]
    if bad:
        raise ConfigError(
            "overrides", " ".join(bad), "on a run's own config (--checkpoint, --run), give key=value overrides of it"
        )
    cfg = OmegaConf.merge(
        OmegaConf.structured(RunConfig), saved, OmegaConf.from_dotlist([o.lstrip("+") for o in overrides])
    )
    return finish(cfg, choices, list(overrides))


def read_state(checkpoint: str) -> dict:
    path = os.path.join(checkpoint, "trainer_state.json")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def trained_with(state: dict, comp: Composition) -> list[str]:
    """`key=value` overrides that would make `comp` evaluate as the checkpoint was trained (its
    trainer_state.json config): the model, task, reward and generation keys that differ."""
    from grpo.compose import override_value
    from grpo.config.flatten import flat_config

    recorded = state.get("config") or {}
    now = flat_config(comp.raw)
    return [
        f"{k}={override_value(v)}"
        for k, v in recorded.items()
        if k.startswith(EVAL_RELEVANT) and now.get(k) != v and not (isinstance(v, dict) and not v)
    ]


def unconfigured(checkpoint: str, overrides: Sequence[str], saved: str) -> Composition:
    """A checkpoint without its run's config beside it: composed from the overrides given, if they
    agree with what it was trained with; otherwise refused in one line that says what to pass."""
    state = read_state(checkpoint)
    run = f"--run {state['mlflow_run_id']}" if state.get("mlflow_run_id") else "--run RUN_ID (its MLflow run)"
    if not overrides and not state.get("config"):
        raise ConfigError(
            "--checkpoint",
            checkpoint,
            f"no run config beside it ({saved}): evaluate it with {run}, or pass the overrides it was trained "
            "with (+experiment=NAME, task=..., key=value ...)",
        )
    comp = compose(overrides)
    wanted = trained_with(state, comp)
    if wanted:
        shown = " ".join(wanted[:12]) + (f" (+{len(wanted) - 12} more)" if len(wanted) > 12 else "")
        given = "the overrides given compose" if overrides else "the defaults are"
        raise ConfigError(
            "--checkpoint",
            checkpoint,
            f"no run config beside it ({saved}) and {given} another run than it was trained with: "
            f"evaluate it with {run}, or pass {shown}",
        )
    return comp


def run_composition(checkpoint: str, overrides: Sequence[str]) -> Composition:
    """The run's own config (its .hydra/config.yaml), with `key=value` overrides on top."""
    from omegaconf import OmegaConf

    run_dir = os.path.dirname(os.path.dirname(checkpoint))
    saved = os.path.join(run_dir, ".hydra", "config.yaml")
    if not os.path.isfile(saved):
        return unconfigured(checkpoint, overrides, saved)
    hydra_yaml = os.path.join(run_dir, ".hydra", "hydra.yaml")
    choices = (
        OmegaConf.to_container(OmegaConf.load(hydra_yaml).hydra.runtime.choices) if os.path.isfile(hydra_yaml) else {}
    )
    return saved_composition(OmegaConf.load(saved), choices, overrides)


def run_checkpoint(run_id: str, overrides: Sequence[str], which: str, dst: str) -> tuple[str, Composition, str]:
    """(the adapter run `run_id` logged, downloaded into `dst`; its recorded config with the
    overrides on top; the adapter's `runs:/` URI)."""
    from omegaconf import OmegaConf

    from grpo.compose import tracking_uri_of
    from grpo.tracking.lookup import RecordError, open_record

    record = open_record(run_id, tracking_uri_of(overrides))
    text = record.config_yaml()
    if text is None:
        raise RecordError(f"run {record.run_id} logged no config/config.yaml: evaluate it with --checkpoint RUN_DIR")
    path = record.adapter_artifact(which)
    local = record.download(path, dst)
    choices = {g: record.tags[g] for g in ("experiment", "preset") if record.tags.get(g)}
    return local, saved_composition(OmegaConf.create(text), choices, overrides), f"runs:/{record.run_id}/{path}"
