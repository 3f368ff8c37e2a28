"""Our side of the bench: `grpo_step` on the components `Recipe.setup` builds, timed by its own timer."""

from __future__ import annotations

import argparse
import tempfile

from grpo.benchmark.report import summarize
from grpo.benchmark.workload import LADDER, overrides


def run_ours(args: argparse.Namespace) -> dict:
    """Time `grpo_step` on components built by `Recipe.setup`; phases from the step's own timer."""
    import torch

    from grpo.compose import compose
    from grpo.optim import Stage, StagedSchedule
    from grpo.recipe import Recipe
    from grpo.stages.grpo import grpo_step
    from grpo.timing import StepTimer

    with tempfile.TemporaryDirectory(prefix="grpo-bench-") as out_dir:
        comp = compose(overrides(args, out_dir))
        recipe = Recipe(comp, run_dir=out_dir, tags={})
        recipe.setup()
        ctx, acc, cfg = recipe.ctx, recipe.accelerator, comp.cfg
        configure = ours_configurations(args, ctx)
        rungs = list(LADDER) if args.ladder else [None]
        opt = recipe.optimizer  # the run's one optimizer, on one GRPO schedule as long as the bench
        stage = Stage(cfg.schedule.grpo_lr, recipe.derived.grpo_steps * len(rungs), 0)
        sched = StagedSchedule(
            opt, {"grpo": stage}, decay=cfg.schedule.lr_scheduler, min_ratio=cfg.schedule.min_lr_ratio
        )
        sched.begin("grpo")
        cuda = acc.device.type == "cuda"
        ctx.timer = StepTimer(sync=torch.cuda.synchronize if cuda else None)  # a phase ends when its kernels do

        record: dict = {rung: ([], [], None) for rung in rungs}
        index = 0
        for i in range(args.warmup + args.steps):
            for rung in rungs:
                configure(rung)
                metrics, _ = grpo_step(ctx, recipe.sampler.next_batch(cfg.rollout.batch_size), index, opt, sched)
                index += 1
                if i < args.warmup:
                    continue
                steps, tokens, _ = record[rung]
                steps.append(step_phases(ctx.timer))
                tokens.append(metrics["train/completion_len/mean"] * metrics["train/num_samples"])
                record[rung] = (steps, tokens, type(ctx.engine).__name__)
        results = {
            rung: {**summarize(rung or "ours", steps, tokens), "engine": engine}
            for rung, (steps, tokens, engine) in record.items()
        }
        if cuda:
            for result in results.values():
                result["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
        return {"ladder": results} if args.ladder else results[None]


def step_phases(timer) -> dict[str, float]:
    """One step's seconds per bench phase, from the step's timer; "other" is what no phase covers."""
    phases = {
        "step": timer["step"],
        "generation": timer["generation"],
        "replay": timer["replay"],  # the experience buffer (grpo/stages/replay.py): ~0 when it is off
        "reference_forward": timer["reference_forward"] + timer["old_policy_forward"],
        "policy_forward": timer["policy_forward"],
        "backward": timer["backward"],
        "optimizer": timer["optimizer"],
    }
    phases["other"] = phases["step"] - sum(v for k, v in phases.items() if k != "step")
    return phases


def ours_configurations(args: argparse.Namespace, ctx):
    """A function that sets the engine, reference and decoder switches of a ladder rung (None: the flags)."""
    import contextlib

    from grpo.rollout import merged
    from grpo.rollout.engine import HFGenerateEngine, MergedEngine

    engines = {"recipe": ctx.engine, "hf": HFGenerateEngine(ctx.tokenizer), "merged": MergedEngine(ctx.tokenizer)}
    engines.setdefault(args.engine, ctx.engine)  # vllm: the one Recipe.setup built (rollout.engine=vllm)
    for engine in engines.values():
        if not hasattr(engine, "min_new_tokens"):
            raise SystemExit(f"{type(engine).__name__} cannot force full-length completions (no min_new_tokens)")
        engine.min_new_tokens = args.new_tokens  # fixed workload: no EOS before --new-tokens
    references = {"recipe": ctx.reference}
    if ctx.cfg.lora.enabled and ctx.reference is not None:
        policy = ctx.accelerator.unwrap_model(ctx.policy)

        @contextlib.contextmanager
        def peft_disable_adapter():
            with policy.disable_adapter():
                yield policy

        references["peft"] = peft_disable_adapter

    def configure(rung: str | None) -> None:
        if rung is None:
            ctx.engine = engines[args.engine]
            merged.configure(enabled=args.plain_decoder, share_prompt_under_dropout=args.share_prompt_dropout)
            return
        level = list(LADDER).index(rung)
        ctx.engine = engines["merged" if level >= 4 else "hf"]
        ctx.reference = references["peft" if level == 0 and "peft" in references else "recipe"]
        merged.configure(enabled=level >= 2, share_prompts=level >= 3, share_prompt_under_dropout=level >= 5)

    return configure
