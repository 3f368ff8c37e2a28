"""`python -m grpo.bench`: time GRPO steps on a fixed workload; `--vs trl` times TRL's on the same.

    python -m grpo.bench --model tiny                      # our step, 3 runs
    python -m grpo.bench --model small --vs trl --repeats 5

Ours is the real step: the components come from `Recipe.setup` on a composed config and each
step is `grpo.stages.grpo.grpo_step`. TRL's is `GRPOTrainer` on the identical workload: the same
model (built from the same config and tokenizer), LoRA, prompts x group, completion length,
KL, loss and optimizer. Every completion is forced to the full `--new-tokens` (EOS is not
sampled before then, `min_new_tokens` in both), so both generate the same number of tokens.

Each run is its own process (`--worker`), interleaved ours, TRL, ours, TRL...; the machine's
speed drifts between processes, so ratios are taken pair by pair and their median reported.
Phases of our step: generation, reference forward, policy forward (with the loss), backward,
optimizer (clip + step). Peak memory is the process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from grpo.tables import Table, to_markdown

PHASES = ("generation", "reference_forward", "policy_forward", "backward", "optimizer", "other")


# ---------------------------------------------------------------- the workload
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m grpo.bench",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model",
        nargs="+",
        default=["tiny"],
        choices=["tiny", "small"],
        help="conf/model size(s); several: all interleaved in one run, a table each (default tiny)",
    )
    p.add_argument("--prompts", type=int, default=8, help="prompts per step (default 8)")
    p.add_argument("--group", type=int, default=4, help="completions per prompt (default 4)")
    p.add_argument("--new-tokens", type=int, default=8, help="tokens generated per completion, all of them (default 8)")
    p.add_argument("--lora-rank", type=int, default=8, help="LoRA rank on q/k/v/o; alpha = 2 x rank (default 8)")
    p.add_argument("--kl", action=argparse.BooleanOptionalAction, default=True, help="k3 KL at beta 0.04 (default on)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per run (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    p.add_argument("--repeats", type=int, default=3, help="runs (processes) per implementation (default 3)")
    p.add_argument("--vs", choices=["trl"], default=None, help="also run TRL's GRPOTrainer, interleaved")
    p.add_argument(
        "--engine",
        choices=["recipe", "hf", "merged"],
        default="recipe",
        help="ours: the rollout engine Recipe.setup builds (default), or HFGenerateEngine / MergedEngine",
    )
    p.add_argument(
        "--plain-decoder",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="ours: score (and sample) on grpo/rollout/merged.py where the model allows (default on)",
    )
    p.add_argument(
        "--lora-dropout",
        type=float,
        default=None,
        help="LoRA dropout in both implementations (default: conf/lora's, 0.05)",
    )
    p.add_argument(
        "--share-prompt-dropout",
        action="store_true",
        help="ours: share a group's prompt in the policy forward under LoRA dropout too "
        "(rows of a group then share the prompt's dropout masks; off by default)",
    )
    p.add_argument(
        "--ladder",
        action="store_true",
        help="ours only: each speed change in turn, in one process, a step of each rung in turn",
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads in every run (default: torch's)")
    p.add_argument("--json", dest="json_path", default=None, help="also write the JSON result to this file")
    p.add_argument("--worker", choices=["ours", "trl"], default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def overrides(args: argparse.Namespace, out_dir: str) -> list[str]:
    """The workload as config overrides of `python -m grpo.run`."""
    return [
        f"model={args.model}",
        "task=numgame",
        "logger=none",
        "trainer.resume=never",
        f"trainer.output_dir={out_dir}",
        f"rollout.batch_size={args.prompts}",
        f"rollout.group_size={args.group}",
        f"generation.max_new_tokens={args.new_tokens}",
        "generation.temperature=1.0",
        "generation.top_p=1.0",
        "generation.top_k=0",
        f"lora.rank={args.lora_rank}",
        f"lora.alpha={2 * args.lora_rank}",
        "lora.target_modules=[q_proj,k_proj,v_proj,o_proj]",
        "algorithm.use_kl_loss=true",
        f"algorithm.kl_beta={0.04 if args.kl else 0.0}",
        "algorithm.kl_estimator=k3",
        "algorithm.clip_range=0.2",
        "algorithm.loss_agg=seq-mean-token-mean",
        "schedule.rce_epochs=0",
        "schedule.temperature.enabled=false",
        f"trainer.max_steps={args.warmup + args.steps}",
        "trainer.gradient_accumulation_steps=1",
        *([f"trainer.threads={args.threads}"] if args.threads else []),
        *([f"lora.dropout={args.lora_dropout}"] if args.lora_dropout is not None else []),
    ]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# ---------------------------------------------------------------- ours
# --ladder: each rung adds one change to the rung before it; all rungs run in one process, a step
# of each in turn, so the machine's drift hits them alike. The last rung is off by default.
LADDER = {
    "before": "HFGenerateEngine; policy/reference forwards through transformers + peft; peft disable_adapter()",
    "adapter-switch": "+ the reference switches the LoRA layers off directly (grpo/models/lora.py)",
    "plain-decoder": "+ policy and reference forwards on the plain decoder (grpo/rollout/merged.py)",
    "shared-prompts": "+ a group's prompt runs once in forwards without dropout (the reference)",
    "merged-engine": "+ MergedEngine: LoRA merged, KV-cached plain loop, prompts prefilled once (the default)",
    "share-dropout": "+ prompts shared under LoRA dropout too (not the default: rows of a group share masks)",
}


def run_ours(args: argparse.Namespace) -> dict:
    """Time `grpo_step` on components built by `Recipe.setup`; phases from the step's own timer."""
    import torch

    from grpo.compose import compose
    from grpo.optim import build_optimizer, build_scheduler
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
        opt = build_optimizer(ctx.policy.parameters(), cfg.trainer.optim, cfg.schedule.grpo_lr)
        sched = build_scheduler(
            opt,
            total_steps=recipe.derived.grpo_steps * len(rungs),
            warmup_steps=0,
            decay=cfg.schedule.lr_scheduler,
            min_ratio=cfg.schedule.min_lr_ratio,
        )
        opt, sched = acc.prepare(opt, sched)
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


# ---------------------------------------------------------------- TRL
def run_trl(args: argparse.Namespace) -> dict:
    """TRL's GRPOTrainer on the same model, data, LoRA and loss; steps timed by a callback."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from grpo.compose import compose
    from grpo.models.load import load_model
    from grpo.rewards.components import correctness
    from grpo.tasks.registry import build_task

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="grpo-bench-trl-") as out_dir:
        cfg = compose(overrides(args, out_dir)).cfg
        torch.manual_seed(cfg.seed)
        model, tokenizer = load_model(cfg.model)
        task = build_task(cfg.task)
        data = Dataset.from_list(
            [{"prompt": ex.prompt, "answer": ex.answer, "answer_pattern": task.answer_pattern} for ex in task.train]
        )
        lora = cfg.lora
        peft_cfg = LoraConfig(
            r=lora.rank,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules),
            task_type="CAUSAL_LM",
        )
        a = cfg.algorithm
        targs = GRPOConfig(
            output_dir=out_dir,
            per_device_train_batch_size=args.prompts * args.group,
            num_generations=args.group,
            gradient_accumulation_steps=1,
            max_completion_length=args.new_tokens,
            generation_kwargs={"min_new_tokens": args.new_tokens},
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            beta=a.kl_beta,
            epsilon=a.clip_range,
            loss_type="grpo",
            scale_rewards="group",
            num_iterations=1,
            learning_rate=cfg.schedule.grpo_lr,
            lr_scheduler_type=cfg.schedule.lr_scheduler,
            warmup_steps=0,
            max_grad_norm=cfg.trainer.max_grad_norm,
            optim="adamw_torch",
            weight_decay=0.0,
            max_steps=args.warmup + args.steps,
            bf16=False,
            use_cpu=True,
            gradient_checkpointing=False,
            logging_strategy="no",
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            seed=cfg.seed,
            dataloader_num_workers=0,
        )

        def reward(prompts, completions, answer, answer_pattern, **_):
            return correctness(prompts, completions, answer=answer, answer_pattern=answer_pattern)

        trainer = GRPOTrainer(
            model=model,
            reward_funcs=reward,
            args=targs,
            train_dataset=data,
            processing_class=tokenizer,
            peft_config=peft_cfg,
        )
        spent = {"generation": 0.0}
        generate = trainer.model.generate

        def timed_generate(*a, **kw):
            t = time.perf_counter()
            out = generate(*a, **kw)
            spent["generation"] += time.perf_counter() - t
            return out

        trainer.model.generate = timed_generate

        steps: list[dict] = []

        class StepTimer(TrainerCallback):
            def on_step_begin(self, *_, **__):
                spent["generation"] = 0.0
                self.t0 = time.perf_counter()

            def on_step_end(self, _args, state, *__, **___):
                total = time.perf_counter() - self.t0
                if state.global_step > args.warmup:
                    steps.append(
                        {"step": total, "generation": spent["generation"], "other": total - spent["generation"]}
                    )

        trainer.add_callback(StepTimer())
        trainer.train()
    tokens = [args.prompts * args.group * args.new_tokens] * len(steps)
    return summarize("trl", steps, tokens)


# ---------------------------------------------------------------- results
def summarize(impl: str, steps: list[dict], tokens: list[float]) -> dict:
    med = statistics.median
    step = med(s["step"] for s in steps)
    phases = {k: med(s[k] for s in steps) for k in PHASES if k in steps[0]}
    gen_tokens = med(tokens)
    return {
        "impl": impl,
        "steps": len(steps),
        "step_time_s": step,
        "step_times_s": [s["step"] for s in steps],
        "phases_s": phases,
        "generated_tokens_per_step": gen_tokens,
        "tokens_per_s": gen_tokens / step,
        "generation_tokens_per_s": gen_tokens / phases["generation"] if phases.get("generation") else None,
        "peak_rss_mib": peak_rss_mib(),
    }


def spawn(impl: str, args: argparse.Namespace, model: str) -> dict:
    """One run in its own process; its last stdout line is the result as JSON."""
    flags = [
        "--model",
        model,
        "--prompts",
        str(args.prompts),
        "--group",
        str(args.group),
        "--new-tokens",
        str(args.new_tokens),
        "--lora-rank",
        str(args.lora_rank),
        "--kl" if args.kl else "--no-kl",
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--engine",
        args.engine,
        "--plain-decoder" if args.plain_decoder else "--no-plain-decoder",
        *(["--lora-dropout", str(args.lora_dropout)] if args.lora_dropout is not None else []),
        *(["--share-prompt-dropout"] if args.share_prompt_dropout else []),
        *(["--ladder"] if args.ladder else []),
        *(["--threads", str(args.threads)] if args.threads else []),
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "grpo.bench", *flags, "--worker", impl],
        capture_output=True,
        text=True,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )
    if proc.returncode != 0:
        raise SystemExit(f"{impl} run failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def aggregate(runs: list[dict]) -> dict:
    med = statistics.median
    phases = {k: med(r["phases_s"][k] for r in runs) for k in runs[0]["phases_s"]}
    return {
        "runs": len(runs),
        "step_time_s": med(r["step_time_s"] for r in runs),
        "run_step_times_s": [r["step_time_s"] for r in runs],
        "tokens_per_s": med(r["tokens_per_s"] for r in runs),
        "generation_tokens_per_s": med(r["generation_tokens_per_s"] for r in runs)
        if runs[0]["generation_tokens_per_s"]
        else None,
        "phases_s": phases,
        "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
        **({"engine": runs[0]["engine"]} if "engine" in runs[0] else {}),
    }


def workload_line(result: dict) -> str:
    w = result["workload"]
    return (
        f"workload: model={w['model']} prompts={w['prompts']} group={w['group']} new_tokens={w['new_tokens']} "
        f"lora_rank={w['lora_rank']} kl={w['kl']} steps={w['steps']} (+{w['warmup']} warm-up) repeats={w['repeats']} "
        f"threads={w['threads'] or 'default'} lora_dropout={'conf' if w['lora_dropout'] is None else w['lora_dropout']}"
        + (" share_prompt_dropout" if w["share_prompt_dropout"] else "")
        + (f" engine={w['engine']}" if w["engine"] != "recipe" else "")
    )


def table(result: dict) -> str:
    impls = [k for k in ("ours", "trl") if k in result]
    # One row per quantity, each in its own unit: cells are formatted here, not by column.
    md = Table(columns=["", *impls])

    def row(label, fn):
        md.rows.append([label, *(fn(result[k]) for k in impls)])

    def ms(x):
        return "-" if x is None else f"{1000 * x:.1f} ms"

    row("median step", lambda r: ms(r["step_time_s"]))
    row("generated tokens/s (step)", lambda r: f"{r['tokens_per_s']:.0f}")
    row(
        "generated tokens/s (generation)",
        lambda r: "-" if not r["generation_tokens_per_s"] else f"{r['generation_tokens_per_s']:.0f}",
    )
    for phase in PHASES:
        row(f"  {phase.replace('_', ' ')}", lambda r, phase=phase: ms(r["phases_s"].get(phase)))
    row("peak RSS", lambda r: f"{r['peak_rss_mib']:.0f} MiB")
    lines = [workload_line(result), "", to_markdown(md).rstrip("\n")]
    if "pairs" in result:
        lines += [
            "",
            "ours / trl pair by pair: " + ", ".join(f"{p['ratio']:.3f}" for p in result["pairs"]),
            f"median ratio: {result['median_ratio']:.3f}  (TRL / ours: {1 / result['median_ratio']:.2f}x)",
        ]
    return "\n".join(lines)


def ladder_table(result: dict) -> str:
    rungs = result["ladder"]
    first = next(iter(rungs.values()))["step_time_s"]
    columns = {  # column -> phase, in ms
        "generation": "generation",
        "reference": "reference_forward",
        "policy fwd": "policy_forward",
        "backward": "backward",
    }
    md = Table(columns=["rung", "median step", "vs before", *columns, "change"])
    md.formatters = {
        "median step": lambda s: f"{1000 * s:.1f} ms",
        "vs before": lambda x: f"{x:.2f}",
        **{column: (lambda s: f"{1000 * s:.1f}") for column in columns},
    }
    for rung, r in rungs.items():
        phases = [r["phases_s"][k] for k in columns.values()]
        md.rows.append([rung, r["step_time_s"], r["step_time_s"] / first, *phases, LADDER[rung]])
    return workload_line(result) + "\n\n" + to_markdown(md).rstrip("\n")


def report(args: argparse.Namespace, model: str, runs: dict[str, list[dict]]) -> dict:
    """One model's result: the workload, each implementation's medians, the ratios pair by pair."""
    workload = {
        k: getattr(args, k)
        for k in (
            "prompts",
            "group",
            "new_tokens",
            "lora_rank",
            "kl",
            "steps",
            "warmup",
            "repeats",
            "threads",
            "engine",
            "plain_decoder",
            "lora_dropout",
            "share_prompt_dropout",
            "ladder",
        )
    }
    result: dict = {"workload": {"model": model, **workload}}
    if args.ladder:
        result["ladder"] = {rung: aggregate([run["ladder"][rung] for run in runs["ours"]]) for rung in LADDER}
        return result
    for impl, impl_runs in runs.items():
        result[impl] = aggregate(impl_runs)
    if "trl" in runs:
        result["pairs"] = [
            {"ours_s": o["step_time_s"], "trl_s": t["step_time_s"], "ratio": o["step_time_s"] / t["step_time_s"]}
            for o, t in zip(runs["ours"], runs["trl"])
        ]
        result["median_ratio"] = statistics.median(p["ratio"] for p in result["pairs"])
    return result


def main(argv: list[str] | None = None) -> dict | None:
    args = parse_args(argv)
    if args.worker:
        args.model = args.model[0]
        result = run_ours(args) if args.worker == "ours" else run_trl(args)
        print(json.dumps(result))
        return result
    if args.ladder and args.vs:
        raise SystemExit("--ladder compares our own variants; run --vs trl separately")
    impls = ["ours", "trl"] if args.vs == "trl" else ["ours"]
    runs = {model: {impl: [] for impl in impls} for model in args.model}
    for i in range(args.repeats):  # interleaved: each model, ours then trl, then the next repeat
        for model in args.model:
            for impl in impls:
                run = spawn(impl, args, model)
                runs[model][impl].append(run)
                took = (
                    run["step_time_s"] if "ladder" not in run else max(r["step_time_s"] for r in run["ladder"].values())
                )
                print(f"run {i + 1}/{args.repeats} {model} {impl}: {1000 * took:.1f} ms/step", file=sys.stderr)
    results = {model: report(args, model, runs[model]) for model in args.model}
    for result in results.values():
        print((ladder_table if args.ladder else table)(result) + "\n")
    result = results[args.model[0]] if len(args.model) == 1 else {"models": results}
    print(json.dumps(result))
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
