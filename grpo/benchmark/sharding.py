"""`python -m grpo.bench --parallel`: DDP against FSDP2 in full fine-tuning, per-rank memory and step time.

One launch of 2 gloo processes (`python -m torch.distributed.run --standalone --nproc_per_node 2 -m
grpo.benchmark.sharding ...`) builds each model twice: data-parallel (accelerate's `prepare`,
grpo/parallel/data_parallel.py) and sharded (grpo/parallel/fsdp.py: `fully_shard` per decoder layer
and the root, plus the whole sampler copy a rollout engine reads). Each copy gets its own AdamW;
both train on the same fixed random token batches (each rank its own), a step of one and then a step
of the other, so the machine's drift hits both alike. A step: forward with the LM loss, backward,
clip to norm 1, AdamW step. FSDP's sampler refresh (one gather of the trained weights, after every
update in a run) is timed apart from the step.

Per rank it counts the bytes of parameters, gradients and optimizer state that rank holds (a DTensor
counts its local shard), the sampler copy apart, and the median step time. The parent (`run_parallel`)
starts the launch, reads rank 0's JSON and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

QWEN2_100M = "qwen2_100m"  # a ~100M-parameter Qwen2 built from a config (the project's tokenizer)
MODELS = ("tiny", "small", QWEN2_100M)
STRATEGIES = ("ddp", "fsdp")
MEMORY = ("params_bytes", "grads_bytes", "optimizer_bytes", "trained_bytes", "sampler_bytes", "total_bytes")


# ---------------------------------------------------------------------------------------- worker
def model_config(name: str, seq_len: int):
    """conf/model/<name>.yaml's architecture (tiny, small), or the ~100M Qwen2; context >= seq_len."""
    from dataclasses import asdict

    from omegaconf import OmegaConf

    from grpo.compose import CONF_DIR
    from grpo.config.schema import ModelConfig, TinyArchConfig

    if name == QWEN2_100M:
        arch = dict(hidden_size=768, num_layers=16, num_heads=12, num_kv_heads=2, intermediate_size=2048)
    else:
        arch = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "model" / f"{name}.yaml").get("tiny", {}))
    arch = {**asdict(TinyArchConfig()), **arch}
    arch["max_position_embeddings"] = max(arch["max_position_embeddings"], seq_len)
    return ModelConfig(name=name, tiny=TinyArchConfig(**arch))


def nbytes(tensors) -> int:
    """Bytes held by this process: a DTensor (FSDP2's shards) counts its local shard only."""
    total = 0
    for t in tensors:
        local = t.to_local() if hasattr(t, "to_local") else t
        total += local.numel() * local.element_size()
    return total


def held(policy, optimizer, sampler) -> dict:
    """What this rank holds after a step (gradients not yet cleared); the sampler copy apart."""
    import torch

    params = list(policy.parameters())
    own = {id(p) for p in params}  # DDP's sampler is the unwrapped policy: the same parameters, no copy
    state = [v for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    out = {
        "params_bytes": nbytes(params),
        "grads_bytes": nbytes(p.grad for p in params if p.grad is not None),
        "optimizer_bytes": nbytes(state),
        # The whole copy a rollout engine samples from, when it is not the policy itself (FSDP).
        "sampler_bytes": nbytes(p for p in sampler.parameters() if id(p) not in own),
    }
    out["trained_bytes"] = out["params_bytes"] + out["grads_bytes"] + out["optimizer_bytes"]
    out["total_bytes"] = out["trained_bytes"] + out["sampler_bytes"]
    return out


def build(name: str, strategy_name: str, accelerator, seq_len: int, lr: float):
    """The model as `trainer.parallel=<strategy_name>` prepares it for `lora=none`, and its AdamW."""
    import torch

    from grpo.config.schema import TrainerConfig
    from grpo.models.load import load_model
    from grpo.parallel.data_parallel import DataParallel
    from grpo.parallel.fsdp import FullyShardedDataParallel

    model, tokenizer = load_model(model_config(name, seq_len), init_seed=0)
    if strategy_name == "fsdp":
        strategy = FullyShardedDataParallel(accelerator, TrainerConfig(parallel="fsdp"), lora=False)
    else:
        strategy = DataParallel(accelerator)
    policy = strategy.prepare(model)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=lr)
    return strategy, policy, optimizer, len(tokenizer)


def train_step(strategy, policy, optimizer, batch) -> float:
    optimizer.zero_grad(set_to_none=True)
    loss = policy(input_ids=batch, labels=batch).loss
    loss.backward()
    strategy.clip_grad_norm(policy, 1.0)
    optimizer.step()
    return float(loss.detach())


def timed(fn, *args) -> tuple[object, float]:
    import torch.distributed as dist

    dist.barrier()  # both ranks start together: a step's time is the slower rank's work and the waits
    start = time.perf_counter()
    value = fn(*args)
    return value, time.perf_counter() - start


def bench_model(name: str, args: argparse.Namespace, accelerator) -> dict:
    """Both strategies on one model, steps interleaved; this rank's figures."""
    import torch

    built = {s: build(name, s, accelerator, args.seq_len, args.lr) for s in STRATEGIES}
    vocab = built["ddp"][3]
    generator = torch.Generator().manual_seed(1000 + accelerator.process_index)  # each rank its own batches
    batches = [torch.randint(0, vocab, (args.batch, args.seq_len), generator=generator) for _ in range(4)]
    times = {s: {"step": [], "refresh": []} for s in STRATEGIES}
    losses = {s: [] for s in STRATEGIES}
    for i in range(args.warmup + args.steps):
        for s in STRATEGIES:
            strategy, policy, optimizer, _ = built[s]
            loss, took = timed(train_step, strategy, policy, optimizer, batches[i % len(batches)])
            _, refresh = timed(strategy.after_update, policy)  # FSDP: the sampler copy gathered
            losses[s].append(loss)
            if i >= args.warmup:
                times[s]["step"].append(took)
                times[s]["refresh"].append(refresh)
    result = {"rank": accelerator.process_index}
    for s in STRATEGIES:
        strategy, policy, optimizer, _ = built[s]
        result[s] = {
            **held(policy, optimizer, strategy.sampler_model(policy)),
            "step_time_s": statistics.median(times[s]["step"]),
            "step_times_s": times[s]["step"],
            "refresh_time_s": statistics.median(times[s]["refresh"]) if s == "fsdp" else 0.0,
            "losses": losses[s],
        }
    result["parameters"] = sum(p.numel() for p in built["ddp"][1].parameters())
    return result


def combine(name: str, ranks: list[dict]) -> dict:
    """Every rank's figures for one model, and FSDP / DDP per rank and column."""
    for r in ranks:
        ddp, fsdp = r["ddp"], r["fsdp"]
        r["ratio"] = {k: fsdp[k] / ddp[k] if ddp[k] else None for k in (*MEMORY, "step_time_s")}
        pairs = [f / d for d, f in zip(ddp["step_times_s"], fsdp["step_times_s"])]  # steps interleaved
        r["ratio"]["step_time_pairs_median"] = statistics.median(pairs)
        r["loss_max_abs_diff"] = max(abs(a - b) for a, b in zip(ddp["losses"], fsdp["losses"]))
    return {"model": name, "parameters": ranks[0]["parameters"], "ranks": ranks}


def worker(argv: list[str] | None = None) -> None:
    import torch
    import torch.distributed as dist
    from accelerate import Accelerator

    args = worker_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    accelerator = Accelerator(cpu=True)  # under torch.distributed.run: gloo across the processes
    models = []
    for name in args.models:
        mine = bench_model(name, args, accelerator)
        ranks: list = [None] * accelerator.num_processes
        dist.all_gather_object(ranks, mine)
        models.append(combine(name, ranks))
        if accelerator.is_main_process:
            print(f"sharding bench: {name} done", file=sys.stderr, flush=True)
    if accelerator.is_main_process:
        with open(args.out, "w") as f:
            json.dump({"models": models, "processes": accelerator.num_processes}, f)
    dist.destroy_process_group()  # a gloo group left to interpreter exit can abort the process


def worker_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m grpo.benchmark.sharding")
    p.add_argument("--models", nargs="+", choices=MODELS, required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--warmup", type=int, required=True)
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--seq-len", type=int, required=True)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", required=True)
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------- parent
def run_parallel(args: argparse.Namespace, processes: int = 2) -> dict:
    """One launch of `processes` gloo processes over every model; the table; the JSON."""
    workload = {
        "models": args.model,
        "processes": processes,
        "steps": args.steps,
        "warmup": args.warmup,
        "batch": args.batch,
        "seq_len": args.seq_len,
        "threads": args.threads,
        "lora": "none",
    }
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "sharding.json")
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
        command += ["-m", "grpo.benchmark.sharding", "--models", *args.model, "--out", out]
        for flag in ("steps", "warmup", "batch", "seq_len", "threads"):
            if getattr(args, flag) is not None:
                command += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
        proc = subprocess.run(
            command, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        )
        if proc.returncode != 0 or not os.path.exists(out):
            raise SystemExit(f"sharding launch failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
        with open(out) as f:
            result = {"workload": workload, **json.load(f)}
    from grpo.benchmark.report import emit

    print(sharding_table(result) + "\n")
    return emit(result, args.json_path)


def sharding_table(result: dict) -> str:
    from grpo.tables import Table, to_markdown

    def mib(b):
        return f"{b / 2**20:.1f}"

    columns = ["model", "rank", "strategy", "params MiB", "grads MiB", "optimizer MiB", "p+g+o MiB"]
    columns += ["sampler MiB", "total MiB", "step ms", "refresh ms"]
    md = Table(columns=columns, right=set(columns[3:]))
    for m in result["models"]:
        label = f"{m['model']} ({m['parameters'] / 1e6:.1f}M)"
        for r in m["ranks"]:
            for s in STRATEGIES:
                x = r[s]
                memory = [mib(x[k]) for k in MEMORY]
                md.rows.append(
                    [
                        label,
                        r["rank"],
                        s,
                        *memory,
                        f"{1000 * x['step_time_s']:.1f}",
                        f"{1000 * x['refresh_time_s']:.1f}",
                    ]
                )
            q = r["ratio"]
            ratios = [f"{q[k]:.3f}" if q[k] is not None else "-" for k in MEMORY]
            md.rows.append([label, r["rank"], "fsdp/ddp", *ratios, f"{q['step_time_s']:.3f}", "-"])
    w = result["workload"]
    head = (
        f"workload: lora=none, {result['processes']} gloo processes, "
        f"batch {w['batch']} x {w['seq_len']} tokens per rank, "
        f"{w['steps']} steps (+{w['warmup']} warm-up) per strategy, interleaved, threads={w['threads'] or 'default'}"
    )
    diff = max(r["loss_max_abs_diff"] for m in result["models"] for r in m["ranks"])
    pairs = "; ".join(
        f"{m['model']} " + ", ".join(f"rank {r['rank']} {r['ratio']['step_time_pairs_median']:.3f}" for r in m["ranks"])
        for m in result["models"]
    )
    tail = f"step time fsdp/ddp, the median of the step-by-step ratios: {pairs}\n"
    tail += f"largest |loss ddp - loss fsdp| over every step and rank: {diff:.2e}"
    return head + "\n\n" + to_markdown(md).rstrip("\n") + "\n\n" + tail


if __name__ == "__main__":
    worker()
