"""The experience buffer in real GRPO steps: a flat group gets a buffered success and a spread, the
buffer lowers the share of zero-spread groups on numgame after RCE, a resumed run equals the
uninterrupted one (the buffer is checkpointed); and GRPO groups drawn from the offline candidates
file with seed 004's early/late top-k. Short in-process runs of the tiny model on one thread."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from grpo import checkpoint as ckpt
from grpo.compose import compose
from grpo.recipe import Recipe
from grpo.rollout.engine import SamplingParams
from grpo.rollout.logprobs import sequence_logprobs
from grpo.stages.grpo import Batch, _sample, grpo_step, sampler_correction
from grpo.stages.rce import rollout_from_texts
from grpo.tasks.candidates import load_candidates
from grpo.tasks.prompts import Prompts
from tests.helpers.inprocess_run import run
from tests.helpers.run_metrics import TOL

TIMING = ("time/", "train/step_time", "train/tokens_per_s")
# numgame after a short RCE warm-up: many groups are all wrong or all right; 64 prompts recur every 4 steps.
NUMGAME = [
    "+experiment=numgame_tiny",
    "logger=none",
    "trainer.threads=1",
    "task.train_size=64",
    "eval.num_samples=8",
    "eval.eval_every=0",
    "eval.before_train=false",
    "schedule.rce_steps=20",
    "algorithm=grpo",  # no dynamic sampling: the flat groups stay in the batch
    "algorithm.kl_beta=0.0",
    "rollout.batch_size=16",
    "rollout.group_size=4",
    "trainer.max_steps=12",
    "trainer.save_every=6",
    "seed=0",
]
BUFFER = "rollout.experience_buffer.buffer_size=64"


def mean(metrics: dict[int, dict[str, float]], key: str) -> float:
    return sum(m[key] for m in metrics.values()) / len(metrics)


@pytest.fixture(scope="module")
def with_buffer(tmp_path_factory):
    out = tmp_path_factory.mktemp("buffer_on")
    return (out, *run(out, *NUMGAME, BUFFER))


def test_a_flat_group_gets_a_buffered_success_and_a_spread(tmp_path):
    """One prompt, every sampled answer wrong: the buffer's success replaces the last member."""
    overrides = ["task=numgame", "lora=none", "logger=none", "schedule.rce_steps=0", "trainer.max_steps=1"]
    overrides += ["rollout.batch_size=1", "rollout.group_size=4", "algorithm.kl_beta=0.0", BUFFER]
    overrides += ["rollout.is_correction=truncate"]  # the correction must leave the replayed row alone
    recipe = Recipe(compose([*overrides, f"trainer.output_dir={tmp_path}"]), run_dir=str(tmp_path), tags={})
    recipe.setup()
    ctx = recipe.ctx
    example = ctx.task.train[0]
    wrong = next(a for a in ctx.task.answer_space if a != example.answer)

    class WrongEngine:  # samples the wrong answer every time, and reports the trainer's own log-probs
        def generate(self, model, prompts, params):
            rollout = rollout_from_texts(ctx, list(prompts), [wrong] * len(prompts))
            with torch.no_grad():
                rollout.logprobs = sequence_logprobs(ctx.policy, rollout, params.temperature)
            return rollout

    ctx.engine = WrongEngine()
    ctx.experience.add([example.prompt], [example.answer], [1.0])
    opt = torch.optim.SGD(ctx.policy.parameters(), lr=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    metrics, samples = grpo_step(ctx, [example], 0, opt, sched)

    # the importance weight of a replayed row is 1 on its tokens, whatever its (dropped) engine log-probs
    rollout = WrongEngine().generate(ctx.policy, [example.prompt] * 2, SamplingParams(max_new_tokens=2))
    rollout.logprobs[1] = 0.0  # as replace_completions leaves a replayed row
    mask = rollout.completion_mask.float()
    b = Batch([example.prompt] * 2, rollout, None, mask, 1.0, 0.0, replayed=torch.tensor([False, True]))
    with torch.no_grad():
        logp = sequence_logprobs(ctx.policy, rollout, 1.0)
    weights = sampler_correction(ctx, b, slice(0, 2), logp, record=True)
    torch.testing.assert_close(weights, mask)
    assert b.mismatch[0][1].item() == mask[0].sum().item()  # only the sampled row's tokens are compared
    recipe.cleanup()

    assert [s["completion"] for s in samples] == [wrong, wrong, wrong, example.answer]
    assert [s["reward"] for s in samples] == [0.0, 0.0, 0.0, 1.0]  # rescored: the group has a spread
    assert metrics["train/replayed"] == 1.0
    assert metrics["train/frac_zero_std_groups_sampled"] == 1.0 and metrics["train/frac_zero_std_groups"] == 0.0
    assert metrics["train/advantage/max"] > 0 > metrics["train/advantage/min"]
    # the replayed row's engine log-probs are dropped and skipped: the sampled rows match exactly
    assert metrics["rollout/logprob_diff_max"] < 1e-5


class StepPrompts(Prompts):
    """A prompt seam whose text changes every step, as AFlow's does when its best workflows change."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def for_sampling(self, examples):
        self.calls += 1
        return [f"[{self.calls}] {ex.prompt}" for ex in examples]


def test_the_buffer_is_keyed_by_the_examples_prompt_when_the_shown_prompt_changes(tmp_path):
    """Step 1 samples the right answer (buffered), step 2 only wrong ones under another shown prompt:
    the buffered success is found by the example's own prompt and replayed."""
    overrides = ["task=numgame", "lora=none", "logger=none", "schedule.rce_steps=0", "trainer.max_steps=2"]
    overrides += ["rollout.batch_size=1", "rollout.group_size=4", "algorithm.kl_beta=0.0", BUFFER]
    recipe = Recipe(compose([*overrides, f"trainer.output_dir={tmp_path}"]), run_dir=str(tmp_path), tags={})
    recipe.setup()
    ctx = recipe.ctx
    ctx.prompts = StepPrompts()
    example = ctx.task.train[0]
    wrong = next(a for a in ctx.task.answer_space if a != example.answer)

    class Engine:  # samples `answer` every time
        answer = example.answer

        def generate(self, model, prompts, params):
            return rollout_from_texts(ctx, list(prompts), [self.answer] * len(prompts))

    ctx.engine = engine = Engine()
    opt = torch.optim.SGD(ctx.policy.parameters(), lr=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    grpo_step(ctx, [example], 0, opt, sched)
    assert ctx.experience.prompts() == [example.prompt]  # not "[1] ...", the prompt step 1 showed
    engine.answer = wrong
    metrics, samples = grpo_step(ctx, [example], 1, opt, sched)
    recipe.cleanup()
    assert {s["prompt"] for s in samples} == {f"[2] {example.prompt}"}
    assert metrics["train/replayed"] == 1.0
    assert [s["completion"] for s in samples] == [wrong, wrong, wrong, example.answer]


def test_the_buffer_lowers_zero_spread_groups_on_numgame_after_rce(tmp_path, with_buffer):
    _, _, on, _ = with_buffer
    _, off, _ = run(tmp_path, *NUMGAME)
    assert "train/replayed" not in off[21]  # off: no replay metrics
    assert sum(m["train/replayed"] for m in on.values()) >= 5
    # the first step is the same sample in both runs; the buffer starts empty, so it is not lifted
    assert on[21]["train/frac_zero_std_groups"] == off[21]["train/frac_zero_std_groups"]
    lowered = mean(on, "train/frac_zero_std_groups")
    assert lowered < mean(on, "train/frac_zero_std_groups_sampled")  # replay lifted groups in this run
    assert lowered < mean(off, "train/frac_zero_std_groups") - 0.05  # and against the run without it
    assert 0 < on[32]["train/experience_rows"] == len(with_buffer[1].ctx.experience) <= 64


def test_a_resumed_run_with_the_buffer_equals_the_uninterrupted_one(tmp_path, with_buffer):
    out, whole, metrics, _ = with_buffer
    assert metrics[27]["train/replayed"] > 0  # the first step after the checkpoint replays buffered rows

    def resume_from(target: Path, keep_buffer: bool) -> dict[int, dict[str, float]]:
        shutil.copytree(out / "checkpoints" / "step_26", target / "checkpoints" / "step_26")
        if not keep_buffer:  # what a checkpoint without the buffer would resume into
            path = target / "checkpoints" / "step_26" / ckpt.TRAINING_FILE
            training = torch.load(path, weights_only=False)
            training["experience"] = None
            torch.save(training, path)
        recipe, resumed, _ = run(target, *NUMGAME, BUFFER)
        assert sorted(resumed) == list(range(27, 33))
        if keep_buffer:
            assert recipe.ctx.experience.state_dict() == whole.ctx.experience.state_dict()
        return resumed

    resumed = resume_from(tmp_path / "resumed", keep_buffer=True)
    for step in range(27, 33):
        keys = {k for k in metrics[step] if not k.startswith(TIMING)}
        assert keys == {k for k in resumed[step] if not k.startswith(TIMING)}
        for k in keys:
            assert abs(metrics[step][k] - resumed[step][k]) <= TOL, (step, k)
    forgotten = resume_from(tmp_path / "forgotten", keep_buffer=False)
    assert forgotten[27]["train/replayed"] == 0 != metrics[27]["train/replayed"]  # the test can tell


LEVER = [
    "+experiment=lever_plan1",
    "logger=none",
    "trainer.threads=1",
    "task.train_size=8",  # 2 steps per epoch at 4 prompts a step
    "eval.num_samples=4",
    "eval.eval_every=0",
    "schedule.rce_epochs=0",
    "trainer.max_steps=3",
    "trainer.save_every=0",
    "rollout.candidates=file",
    "schedule.grpo_top_k.early=1",
    "schedule.grpo_top_k.late=3",
    "schedule.grpo_top_k.switch_epoch=0.5",  # late from GRPO step 1 on
]


def test_grpo_groups_from_the_file_are_prompted_through_the_prompt_seam(tmp_path):
    """The candidates are found by the example's own prompt; the rows carry the prompt the policy is shown."""
    recipe = Recipe(compose([*LEVER, f"trainer.output_dir={tmp_path}"]), run_dir=str(tmp_path), tags={})
    recipe.setup()
    ctx = recipe.ctx
    ctx.prompts = StepPrompts()
    examples = list(ctx.task.train[:2])
    prompts, rollout, _ = _sample(ctx, examples, 1.0, top_k=2)
    recipe.cleanup()
    assert prompts == [f"[1] {ex.prompt}" for ex in examples for _ in range(4)]
    torch.testing.assert_close(rollout.prompt_ids, rollout_from_texts(ctx, prompts, rollout.texts).prompt_ids)
    found = load_candidates("experiments/data/lever/candidates.jsonl")
    for i, ex in enumerate(examples):
        assert set(rollout.texts[4 * i : 4 * i + 4]) == {c.text for c in found.top(ex.prompt, 2)}


def test_grpo_groups_draw_from_the_files_top_k_early_then_late(tmp_path):
    _, metrics, samples = run(tmp_path, *LEVER)
    found = load_candidates("experiments/data/lever/candidates.jsonl")
    assert [metrics[s]["train/grpo_top_k"] for s in (1, 2, 3)] == [1.0, 3.0, 3.0]
    for step, k in ((1, 1), (2, 3), (3, 3)):
        rows = samples[step]
        assert len(rows) == 4 * 4  # 4 prompts x G=4
        for i in range(0, len(rows), 4):
            prompt = rows[i]["prompt"]
            top = [c.text for c in found.top(prompt, k)]
            texts = [r["completion"] for r in rows[i : i + 4]]
            assert set(texts) == set(top)  # only the top k, and with G >= k every one of them
    # scored like sampled rows: Lever's reward reads the file's beam score and the correctness
    assert all(abs(m["train/reward"]) > 0 for m in metrics.values())


def test_every_process_holds_the_same_buffer_of_every_processs_rows(tmp_path):
    """Two real gloo processes offer different rows; both end with the buffer one process would build
    from all rows in rank order, so rank 0's checkpointed buffer is the whole."""
    import json
    import subprocess
    import sys

    from grpo.rollout.experience import ExperienceBuffer
    from tests.helpers.experience_worker import ROWS
    from tests.helpers.subprocess_env import child_env

    worker = str(Path(__file__).resolve().parent / "helpers" / "experience_worker.py")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", worker]
    proc = subprocess.run([*command, str(tmp_path)], capture_output=True, text=True, timeout=300, env=child_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    one = ExperienceBuffer(buffer_size=3, min_reward=0.0, per_prompt=1)
    for rank in (0, 1):
        one.add(*zip(*ROWS[rank]))
    assert rank0 == rank1 == one.state_dict()
    assert {row[0] for row in rank0["rows"]} == {"p0", "p1", "p3"}  # both ranks' prompts
