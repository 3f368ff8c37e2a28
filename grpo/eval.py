"""`python -m grpo.eval`: evaluate a checkpoint (or the base model) on a split, per domain.

    python -m grpo.eval --checkpoint outputs/runs/DATE/TIME/checkpoints/step_5
    python -m grpo.eval --checkpoint outputs/runs/DATE/TIME --split test        # its latest checkpoint
    python -m grpo.eval --checkpoint CKPT eval.generation.greedy=false eval.generation.temperature=0.6 \
        eval.generation.top_p=0.95                                               # seed 002's val_override
    python -m grpo.eval --checkpoint CKPT eval.generation.greedy=false eval.generation.n=8   # pass@k, maj@8 ...
    python -m grpo.eval +experiment=aflow_mixed                                   # the base model, no checkpoint
    python -m grpo.eval --checkpoint CKPT --run-id RUN_ID                         # add to an MLflow run

With --checkpoint, the configuration is the run's own (`<run dir>/.hydra/config.yaml`, written
by Hydra beside `checkpoints/`), and the remaining arguments are `key=value` overrides of it.
Without, they are the usual Hydra overrides, composed like `grpo.run`. The model is the run's
base model with the checkpoint's adapter (or the full weights it saved).

Prints one table per split (accuracy and mean reward per domain; with eval.generation.n > 1
also pass@k, mean@n, best@n and maj@n, see grpo/metrics.py) and logs the metrics to MLflow as
eval/<split>/<metric>[/<domain>]: in a new run tagged `eval`, or in --run-id's run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

import torch

from grpo.checkpoint import latest_checkpoint
from grpo.compose import Composition, compose, finish, register
from grpo.config.errors import ConfigError, explain
from grpo.context import RunContext, generation_budget, make_accelerator
from grpo.metrics import metric_keys, summarize
from grpo.stages.validation import collect
from grpo.tables import Table, to_text
from grpo.tasks.base import Example
from grpo.tasks.registry import build_task

log = logging.getLogger("grpo.eval")


# ---------------------------------------------------------------------------- what to evaluate
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


def run_composition(checkpoint: str, overrides: Sequence[str]) -> Composition:
    """The run's own config (its .hydra/config.yaml), with `key=value` overrides on top."""
    from omegaconf import OmegaConf

    from grpo.config.schema import RunConfig

    run_dir = os.path.dirname(os.path.dirname(checkpoint))
    saved = os.path.join(run_dir, ".hydra", "config.yaml")
    if not os.path.isfile(saved):
        log.warning("no %s (trainer.output_dir moved the checkpoints?): composing from the overrides given", saved)
        return compose(overrides)
    register()
    bad = [o for o in overrides if "=" not in o or o.startswith("~")]
    if bad:
        raise ConfigError("overrides", " ".join(bad), "with --checkpoint, give key=value overrides of the run's config")
    cfg = OmegaConf.merge(
        OmegaConf.structured(RunConfig),
        OmegaConf.load(saved),
        OmegaConf.from_dotlist([o.lstrip("+") for o in overrides]),
    )
    hydra_yaml = os.path.join(run_dir, ".hydra", "hydra.yaml")
    choices = (
        OmegaConf.to_container(OmegaConf.load(hydra_yaml).hydra.runtime.choices) if os.path.isfile(hydra_yaml) else {}
    )
    return finish(cfg, choices)


def split_examples(comp: Composition, task, split: str) -> list[Example]:
    if split == "val":
        return list(task.val)
    if comp.cfg.task.name != "jsonl":
        raise ConfigError(
            "--split", split, f"task '{comp.cfg.task.name}' has a val split only (test splits come from task.test_path)"
        )
    from grpo.tasks.jsonl import load_split

    return load_split(comp.cfg.task, "test")


def build_context(comp: Composition, checkpoint: str | None, task, examples: Sequence[Example]) -> RunContext:
    """A RunContext for evaluation: the run's model with the checkpoint, the task, the rewards (no KL)."""
    from grpo.algorithms.kl import FixedKLController
    from grpo.models.load import load_model
    from grpo.rewards.scorer import RewardScorer
    from grpo.rollout.engine import HFGenerateEngine

    cfg = comp.cfg
    acc = make_accelerator(cfg.trainer)
    model, tokenizer = load_model(cfg.model)
    if checkpoint and os.path.isfile(os.path.join(checkpoint, "adapter_config.json")):
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, checkpoint)
    elif checkpoint:  # full fine-tuning saved the whole model
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(
            checkpoint, dtype=torch.bfloat16 if cfg.model.bf16 else torch.float32
        )
    model = model.to(acc.device).eval()
    max_new, _ = generation_budget(cfg.generation.max_new_tokens, model, tokenizer, (*task.train, *task.val, *examples))
    return RunContext(
        cfg=cfg,
        derived=comp.derived,
        accelerator=acc,
        policy=model,
        tokenizer=tokenizer,
        engine=HFGenerateEngine(tokenizer),
        scorer=RewardScorer(cfg.reward),
        task=task,
        kl_ctrl=FixedKLController(0.0),
        max_new_tokens=max_new,
    )


# ---------------------------------------------------------------------------- tracking
def log_to_mlflow(
    comp: Composition,
    metrics: dict[str, float],
    table: str,
    *,
    split: str,
    checkpoint: str | None,
    state: dict,
    run_id: str | None,
) -> str | None:
    cfg = comp.cfg
    if cfg.logger.backend == "none":
        return None
    step = int(state.get("step", 0))
    if run_id:  # add to an existing run (e.g. the training run: its id is in trainer_state.json)
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=cfg.logger.tracking_uri)
        client.log_batch(run_id, metrics=[Metric(k, float(v), 0, step) for k, v in metrics.items()])
        client.log_text(run_id, table + "\n", f"eval/{split}_step_{step}.txt")
        return run_id
    from grpo.tracking.mlflow_run import MlflowTracker

    name = f"eval-{split}-{state.get('run_name') or comp.derived.run_name}" + (
        f"-step{step}" if checkpoint else "-base"
    )
    tags = {
        "eval": "true",
        "split": split,
        "checkpoint": checkpoint or "base model",
        "experiment": str(comp.choices.get("experiment") or ""),
        "preset": str(comp.choices.get("preset") or ""),
    }
    if state.get("mlflow_run_id"):
        tags["source_run_id"] = str(state["mlflow_run_id"])
    tracker = MlflowTracker(cfg.logger, name, {k: v for k, v in tags.items() if v})
    gen = cfg.eval.generation
    tracker.log_params(
        {
            "checkpoint": checkpoint or "base",
            "split": split,
            "model.name": cfg.model.name,
            "eval.generation.greedy": gen.greedy,
            "eval.generation.temperature": gen.temperature,
            "eval.generation.top_p": gen.top_p,
            "eval.generation.n": gen.n,
        }
    )
    tracker.log_metrics(metrics, step)
    tracker.log_text(table + "\n", f"eval/{split}.txt")
    tracker.finish("FINISHED")
    return tracker.run_id


# ---------------------------------------------------------------------------- the table
def summary_table(summary: dict[str, dict[str, float]], title: str = "") -> Table:
    """One row per domain, then "all" under a rule: the prompt count, each metric to 3 decimals."""
    columns = list(next(iter(summary.values())))
    table = Table(columns=["domain", *columns], title=title or None, right=set(columns))
    table.formatters = {c: (lambda v: f"{v:.0f}") if c == "prompts" else (lambda v: f"{v:.3f}") for c in columns}
    table.rows = [[name, *(m[c] for c in columns)] for name, m in summary.items()]
    table.sections = {len(table.rows) - 2}  # the rule above "all"
    return table


# ---------------------------------------------------------------------------- entry point
def evaluate_checkpoint(
    checkpoint: str | None,
    overrides: Sequence[str],
    split: str = "val",
    limit: int | None = None,
    run_id: str | None = None,
    progress: bool = True,
) -> tuple[dict, str]:
    """Evaluate; returns ({domain: metrics}, the printed table)."""
    from tqdm.auto import tqdm

    checkpoint = find_checkpoint(checkpoint) if checkpoint else None
    comp = run_composition(checkpoint, overrides) if checkpoint else compose(overrides)
    task = build_task(comp.cfg.task)
    examples = split_examples(comp, task, split)[:limit]
    ctx = build_context(comp, checkpoint, task, examples)
    with tqdm(total=len(examples), desc=f"eval {split}", disable=not progress, file=sys.stderr) as bar:
        samples = collect(ctx, examples, progress=bar)
    n = comp.cfg.eval.generation.n
    summary = summarize(samples.domains, samples.correct, samples.reward, samples.answers, n)
    gen = comp.cfg.eval.generation
    how = "greedy" if gen.greedy else f"sampled: temperature {gen.temperature:g}, top_p {gen.top_p:g}, n {n}"
    title = f"{split}: {checkpoint or 'base model (' + comp.cfg.model.name + ')'}  [{how}]"
    table = to_text(summary_table(summary, title)).rstrip("\n")
    state = {}
    if checkpoint and os.path.isfile(os.path.join(checkpoint, "trainer_state.json")):
        with open(os.path.join(checkpoint, "trainer_state.json")) as f:
            state = json.load(f)
    logged = log_to_mlflow(
        comp,
        metric_keys(summary, f"eval/{split}"),
        table,
        split=split,
        checkpoint=checkpoint,
        state=state,
        run_id=run_id,
    )
    if logged:
        table += f"\nmlflow: run {logged} in {comp.cfg.logger.tracking_uri}"
    return summary, table


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m grpo.eval",
        description=__doc__.split("\n\n")[0],
        epilog="Other arguments are config overrides (key=value).",
    )
    parser.add_argument(
        "--checkpoint",
        help="a checkpoint dir (checkpoints/step_N) or a run dir (its latest); omit to evaluate the base model",
    )
    parser.add_argument("--split", choices=("val", "test"), default="val")
    parser.add_argument("--limit", type=int, default=None, help="evaluate the first N prompts of the split")
    parser.add_argument("--run-id", help="log into this MLflow run instead of a new one tagged eval")
    args, overrides = parser.parse_known_args(argv)
    flags = [o for o in overrides if o.startswith("-")]
    if flags:
        parser.error(f"unknown option(s): {' '.join(flags)}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        _, table = evaluate_checkpoint(
            args.checkpoint, overrides, split=args.split, limit=args.limit, run_id=args.run_id
        )
    except ConfigError as exc:
        print(f"error: {explain(exc)}", file=sys.stderr)
        sys.exit(2)
    except Exception as exc:  # composition failures arrive as Hydra/OmegaConf errors: one line too
        from omegaconf.errors import OmegaConfBaseException

        if isinstance(exc, OmegaConfBaseException) or type(exc).__module__.startswith("hydra"):
            print(f"error: {explain(exc)}", file=sys.stderr)
            sys.exit(2)
        raise
    print(table)


if __name__ == "__main__":
    main()
