"""`python -m grpo.bench`: time GRPO steps on a fixed workload; `--vs trl` times TRL's on the same.

    python -m grpo.bench --model tiny                      # our step, 3 runs
    python -m grpo.bench --model small --vs trl --repeats 5
    python -m grpo.bench --model small tiny_vllm --engine merged hf vllm --new-tokens 8 64 256   # side by side
    python -m grpo.bench --parallel --threads 1            # DDP vs FSDP2, lora=none, 2 gloo processes

Ours is the real step: the components come from `Recipe.setup` on a composed config and each
step is `grpo.stages.grpo.grpo_step`. TRL's is `GRPOTrainer` on the identical workload: the same
model (built from the same config and tokenizer), LoRA, prompts x group, completion length,
KL, loss and optimizer. Every completion is forced to the full `--new-tokens` (EOS is not
sampled before then, `min_new_tokens` in both), so both generate the same number of tokens.

Each run is its own process (`--worker`), interleaved ours, TRL, ours, TRL...; the machine's
speed drifts between processes, so ratios are taken pair by pair and their median reported.
Phases of our step: generation, reference forward, policy forward (with the loss), backward,
optimizer (clip + step). Peak memory is the process's peak RSS.

`--parallel` is another measurement: full fine-tuning (`lora=none`) data-parallel against FSDP2 in
one launch of 2 gloo processes, per-rank bytes of parameters, gradients, optimizer state and the
sampler copy, and the step time (grpo/benchmark/sharding.py; default models small and qwen2_100m).

The work is in `grpo.benchmark` (workload, report, ours, trl_trainer, sharding); this module is the
command line: it parses the flags, spawns the `--worker` runs (or the `--parallel` launch) and prints
their report.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from grpo.benchmark.ours import run_ours
from grpo.benchmark.report import emit, grid_cell, grid_table, ladder_table, report, table
from grpo.benchmark.sharding import QWEN2_100M, run_parallel
from grpo.benchmark.trl_trainer import run_trl


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m grpo.bench",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model",
        nargs="+",
        default=None,
        choices=["tiny", "small", "tiny_vllm", QWEN2_100M],
        help=f"conf/model size(s); several: all interleaved in one run, a table each (default tiny; "
        f"--parallel: small {QWEN2_100M}, the latter ~100M parameters and for --parallel only)",
    )
    p.add_argument("--prompts", type=int, default=8, help="prompts per step (default 8)")
    p.add_argument("--group", type=int, default=4, help="completions per prompt (default 4)")
    p.add_argument(
        "--new-tokens",
        type=int,
        nargs="+",
        default=[8],
        help="tokens generated per completion, all of them; several: a side-by-side table (default 8)",
    )
    p.add_argument("--lora-rank", type=int, default=8, help="LoRA rank on q/k/v/o; alpha = 2 x rank (default 8)")
    p.add_argument("--kl", action=argparse.BooleanOptionalAction, default=True, help="k3 KL at beta 0.04 (default on)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per run (default 20; --parallel: 5)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3; --parallel: 1)")
    p.add_argument("--repeats", type=int, default=3, help="runs (processes) per implementation (default 3)")
    p.add_argument("--vs", choices=["trl"], default=None, help="also run TRL's GRPOTrainer, interleaved")
    p.add_argument(
        "--engine",
        nargs="+",
        choices=["recipe", "hf", "merged", "vllm"],
        default=["recipe"],
        help="ours: the rollout engine Recipe.setup builds (default), or rollout.engine=hf|merged|vllm; "
        "several: each in its own runs, a side-by-side table (vllm needs vLLM installed)",
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
    p.add_argument(
        "--parallel",
        action="store_true",
        help="DDP vs FSDP2 with lora=none in one launch of 2 gloo processes: per-rank memory and step time",
    )
    p.add_argument("--batch", type=int, default=4, help="--parallel: sequences per rank per step (default 4)")
    p.add_argument("--seq-len", type=int, default=64, help="--parallel: tokens per sequence (default 64)")
    p.add_argument("--threads", type=int, default=None, help="torch threads in every run (default: torch's)")
    p.add_argument("--json", dest="json_path", default=None, help="also write the JSON result to this file")
    p.add_argument("--worker", choices=["ours", "trl"], default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.model is None:
        args.model = ["small", QWEN2_100M] if args.parallel else ["tiny"]
    elif QWEN2_100M in args.model and not args.parallel:
        p.error(f"--model {QWEN2_100M} is for --parallel only")
    if args.steps is None:
        args.steps = 5 if args.parallel else 20
    if args.warmup is None:
        args.warmup = 1 if args.parallel else 3
    return args


def spawn(impl: str, args: argparse.Namespace, model: str) -> dict:  # args: one engine, one length
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


def main(argv: list[str] | None = None) -> dict | None:
    args = parse_args(argv)
    if args.worker:
        args.model, args.engine, args.new_tokens = args.model[0], args.engine[0], args.new_tokens[0]
        result = run_ours(args) if args.worker == "ours" else run_trl(args)
        print(json.dumps(result))
        return result
    if args.parallel:
        if args.ladder or args.vs:
            raise SystemExit("--parallel measures DDP against FSDP2; no --ladder or --vs")
        return run_parallel(args)
    if args.ladder and args.vs:
        raise SystemExit("--ladder compares our own variants; run --vs trl separately")
    if len(args.engine) > 1 or len(args.new_tokens) > 1:
        if args.ladder or args.vs:
            raise SystemExit("several --engine or --new-tokens: a side-by-side table of ours; no --ladder or --vs")
        return side_by_side(args)
    args.engine, args.new_tokens = args.engine[0], args.new_tokens[0]
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
    return emit(results[args.model[0]] if len(args.model) == 1 else {"models": results}, args.json_path)


def side_by_side(args: argparse.Namespace) -> dict:
    """Every engine at every length on every model, interleaved per repeat; one table."""
    cells = [(m, n, e) for m in args.model for n in args.new_tokens for e in args.engine]
    runs: dict[tuple, list[dict]] = {cell: [] for cell in cells}
    for i in range(args.repeats):
        for model, new_tokens, engine in cells:
            one = argparse.Namespace(**{**vars(args), "engine": engine, "new_tokens": new_tokens})
            run = spawn("ours", one, model)
            runs[(model, new_tokens, engine)].append(run)
            took = 1000 * run["step_time_s"]
            print(
                f"run {i + 1}/{args.repeats} {model} {new_tokens} tokens {engine}: {took:.1f} ms/step", file=sys.stderr
            )
    result = {"grid": [grid_cell(args, cell, runs[cell]) for cell in cells]}
    print(grid_table(result) + "\n")
    return emit(result, args.json_path)


if __name__ == "__main__":
    main()
