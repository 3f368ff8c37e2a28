"""`python -m grpo.eval`: evaluate a checkpoint (or the base model) on a split, per domain.

    python -m grpo.eval --checkpoint outputs/runs/DATE/TIME/checkpoints/step_5
    python -m grpo.eval --checkpoint outputs/runs/DATE/TIME --split test        # its latest checkpoint
    python -m grpo.eval --checkpoint CKPT eval.generation.greedy=false eval.generation.temperature=0.6 \
        eval.generation.top_p=0.95                                               # seed 002's val_override
    python -m grpo.eval --checkpoint CKPT eval.generation.greedy=false eval.generation.n=8   # pass@k, maj@8 ...
    python -m grpo.eval +experiment=aflow_mixed                                   # the base model, no checkpoint
    python -m grpo.eval --checkpoint CKPT --run-id RUN_ID                         # add to an MLflow run
    python -m grpo.eval --run RUN_ID                      # the adapter that MLflow run logged (its best)
    python -m grpo.eval --run RUN_ID --adapter final --split test

With --checkpoint, the configuration is the run's own (`<run dir>/.hydra/config.yaml`, written
by Hydra beside `checkpoints/`), and the remaining arguments are `key=value` overrides of it. A
checkpoint with no config beside it is evaluated only with overrides that agree with what it was
trained with (its trainer_state.json); otherwise one line names `--run` and the overrides to pass.
With --run, the adapter and the config are the ones that run logged to MLflow (found in the
default store, or in `logger.tracking_uri=...`). Without either, the arguments are the usual
Hydra overrides, composed like `grpo.run`. The model is the run's base model with the
checkpoint's adapter (or the full weights it saved).

Prints one table per split (accuracy and mean reward per domain; with eval.generation.n > 1
also pass@k, mean@n, best@n and maj@n, see grpo/metrics.py) and logs the metrics to MLflow as
eval/<split>/<metric>[/<domain>]: in a new run tagged `eval`, or in --run-id's run. The new run
is a child of the run that trained the checkpoint, in that run's experiment (when that run is in
the store), so the MLflow UI lists it under its source and `grpo.compare` leaves it out by default.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from collections.abc import Sequence

import torch

from grpo.compose import Composition, compose
from grpo.config.errors import ConfigError, explain
from grpo.context import RunContext, build_engine, generation_budget, make_accelerator
from grpo.eval_target import find_checkpoint, read_state, run_checkpoint, run_composition
from grpo.metrics import metric_keys, summarize
from grpo.stages.validation import collect
from grpo.tables import Table, to_text
from grpo.tasks.base import Example
from grpo.tasks.registry import build_task

log = logging.getLogger("grpo.eval")


# ---------------------------------------------------------------------------- what to evaluate
def split_examples(comp: Composition, task, split: str) -> list[Example]:
    if split == "val":
        return list(task.val)
    if comp.cfg.task.name not in ("jsonl", "aflow"):
        raise ConfigError(
            "--split", split, f"task '{comp.cfg.task.name}' has a val split only (test splits come from task.test_path)"
        )
    from grpo.tasks.jsonl import load_split

    return load_split(comp.cfg.task, "test")


def build_context(comp: Composition, checkpoint: str | None, task, examples: Sequence[Example]) -> RunContext:
    """A RunContext for evaluation: the run's model with the checkpoint, sampled by the engine the
    run names (`rollout.engine`, so a vLLM run is evaluated by vLLM), the task, the rewards (no KL)."""
    from grpo.algorithms.kl import FixedKLController
    from grpo.models.load import load_model
    from grpo.rewards.scorer import RewardScorer

    cfg = comp.cfg
    acc = make_accelerator(cfg.trainer)
    model, tokenizer = load_model(cfg.model, init_seed=comp.derived.model_init_seed)  # the run's base init
    if checkpoint and os.path.isfile(os.path.join(checkpoint, "adapter_config.json")):
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, checkpoint)
    elif checkpoint:  # full fine-tuning saved the whole model
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(
            checkpoint, dtype=torch.bfloat16 if cfg.model.bf16 else torch.float32
        )
    model = model.to(acc.device).eval()
    from grpo.tasks.aflow import as_prompted, build_prompts

    prompts = build_prompts(cfg.task, cfg.rollout, cfg.reward.executor.operator_descriptions_path)
    everything = as_prompted(prompts, (*task.train, *task.val, *examples))
    max_new, context = generation_budget(cfg.generation.max_new_tokens, model, tokenizer, everything)
    prompts.limit(context - max_new, lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"]))
    return RunContext(
        cfg=cfg,
        derived=comp.derived,
        accelerator=acc,
        policy=model,
        tokenizer=tokenizer,
        engine=build_engine(cfg, model, tokenizer, context),
        scorer=RewardScorer(cfg.reward),
        task=task,
        kl_ctrl=FixedKLController(0.0),
        max_new_tokens=max_new,
        prompts=prompts,  # AFlow's prompt (the operator descriptions when enabled; no best workflows yet)
    )


# ---------------------------------------------------------------------------- tracking
def source_run(tracking_uri: str, run_id: str) -> tuple[str | None, str | None]:
    """(the evaluated run's id, its experiment's id) when that run is in this store, else (None, None):
    an eval run nests under the run it evaluated, in that run's experiment."""
    if not run_id:
        return None, None
    from mlflow.tracking import MlflowClient

    try:
        run = MlflowClient(tracking_uri=tracking_uri).get_run(run_id)
    except Exception:  # noqa: BLE001 - another store, or deleted: a top-level run, tagged source_run_id
        return None, None
    return run.info.run_id, run.info.experiment_id


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

        from grpo.tracking.mlflow_run import RetryingClient

        client = RetryingClient(MlflowClient(tracking_uri=cfg.logger.tracking_uri))
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
    source, experiment = source_run(cfg.logger.tracking_uri, str(state.get("mlflow_run_id") or ""))
    if state.get("mlflow_run_id"):
        tags["source_run_id"] = str(state["mlflow_run_id"])
    tracker = MlflowTracker(
        cfg.logger, name, {k: v for k, v in tags.items() if v}, parent_run_id=source, in_experiment=experiment
    )
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
    run: str | None = None,
    which: str = "best",
) -> tuple[dict, str]:
    """Evaluate a checkpoint, the adapter MLflow run `run` logged (its `which` checkpoint, with
    its recorded config), or the base model; returns ({domain: metrics}, the printed table)."""
    if run:
        with tempfile.TemporaryDirectory(prefix="grpo-eval-") as tmp:
            local, comp, label = run_checkpoint(run, overrides, which, tmp)
            return evaluate(comp, local, label, split, limit, run_id, progress)
    checkpoint = find_checkpoint(checkpoint) if checkpoint else None
    comp = run_composition(checkpoint, overrides) if checkpoint else compose(overrides)
    return evaluate(comp, checkpoint, checkpoint, split, limit, run_id, progress)


def evaluate(
    comp: Composition,
    checkpoint: str | None,
    label: str | None,
    split: str,
    limit: int | None,
    run_id: str | None,
    progress: bool,
) -> tuple[dict, str]:
    from tqdm.auto import tqdm

    task = build_task(comp.cfg.task)
    examples = split_examples(comp, task, split)[:limit]
    ctx = build_context(comp, checkpoint, task, examples)
    try:
        with tqdm(total=len(examples), desc=f"eval {split}", disable=not progress, file=sys.stderr) as bar:
            samples = collect(ctx, examples, progress=bar)
    finally:
        if hasattr(ctx.engine, "close"):  # vLLM: its memory back before the next evaluation
            ctx.engine.close()
    n = comp.cfg.eval.generation.n
    summary = summarize(samples.domains, samples.correct, samples.reward, samples.answers, n)
    gen = comp.cfg.eval.generation
    how = "greedy" if gen.greedy else f"sampled: temperature {gen.temperature:g}, top_p {gen.top_p:g}, n {n}"
    title = f"{split}: {label or 'base model (' + comp.cfg.model.name + ')'}  [{how}; {comp.cfg.rollout.engine} engine]"
    table = to_text(summary_table(summary, title)).rstrip("\n")
    logged = log_to_mlflow(
        comp,
        metric_keys(summary, f"eval/{split}"),
        table,
        split=split,
        checkpoint=label,
        state=read_state(checkpoint) if checkpoint else {},
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
    parser.add_argument(
        "--run", metavar="RUN_ID", help="the adapter this MLflow run logged, with its recorded task and generation"
    )
    parser.add_argument(
        "--adapter",
        choices=("best", "final"),
        default="best",
        help="with --run: its best (default) or final checkpoint",
    )
    parser.add_argument("--split", choices=("val", "test"), default="val")
    parser.add_argument("--limit", type=int, default=None, help="evaluate the first N prompts of the split")
    parser.add_argument("--run-id", help="log into this MLflow run instead of a new one tagged eval")
    args, overrides = parser.parse_known_args(argv)
    flags = [o for o in overrides if o.startswith("-")]
    if flags:
        parser.error(f"unknown option(s): {' '.join(flags)}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.run and args.checkpoint:
        parser.error("--run evaluates the adapter that run logged: drop --checkpoint")
    from grpo.tracking.lookup import RecordError

    try:
        _, table = evaluate_checkpoint(
            args.checkpoint,
            overrides,
            split=args.split,
            limit=args.limit,
            run_id=args.run_id,
            run=args.run,
            which=args.adapter,
        )
    except (ConfigError, RecordError) as exc:
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
