"""The run's one optimizer over two stages gives the numbers of a fresh optimizer and LambdaLR per stage."""

import functools

import pytest
import torch

from grpo.config.schema import OptimConfig
from grpo.optim import Stage, StagedSchedule, build_optimizer, saved_schedule
from grpo.schedules import lr_multiplier

STAGES = {"rce": Stage(1e-2, 5, 2), "grpo": Stage(3e-3, 7, 1)}


def gradients(step: int, params) -> None:
    """The same pseudo-random gradients for both recipes at each step."""
    g = torch.Generator().manual_seed(step)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g)


def two_optimizers(optim: OptimConfig) -> tuple[list[torch.Tensor], list[float]]:
    """The recipe before one optimizer: a new optimizer and LambdaLR per stage."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    lrs, step = [], 0
    for stage in STAGES.values():
        opt = build_optimizer(model.parameters(), optim, stage.lr)
        schedule = functools.partial(
            lr_multiplier, total_steps=stage.total_steps, warmup_steps=stage.warmup_steps, decay="cosine"
        )
        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        for _ in range(stage.total_steps):
            gradients(step, model.parameters())
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
            step += 1
    return [p.detach().clone() for p in model.parameters()], lrs


def one_optimizer(optim: OptimConfig) -> tuple[list[torch.Tensor], list[float]]:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = build_optimizer(model.parameters(), optim, 0.0)
    sched = StagedSchedule(opt, STAGES, decay="cosine", min_ratio=0.0)
    lrs, step = [], 0
    for name, stage in STAGES.items():
        sched.begin(name)
        for _ in range(stage.total_steps):
            gradients(step, model.parameters())
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
            step += 1
    return [p.detach().clone() for p in model.parameters()], lrs


@pytest.mark.parametrize(
    "optim",
    [OptimConfig(), OptimConfig(weight_decay=0.3), OptimConfig(name="sgd", momentum=0.9)],
    ids=["adamw", "adamw-decay", "sgd-momentum"],
)
def test_one_optimizer_equals_a_fresh_one_per_stage(optim):
    (want, want_lrs), (got, got_lrs) = two_optimizers(optim), one_optimizer(optim)
    assert got_lrs == want_lrs  # warm-up 1/2, 2/2, cosine; the GRPO stage restarts at 3e-3 x 1/1
    assert got_lrs[0] == 5e-3 and got_lrs[5] == 3e-3
    for a, b in zip(got, want):
        assert torch.equal(a, b)


def test_entering_the_same_stage_again_keeps_the_state():
    """A run resumed inside a stage continues its optimizer state and schedule."""
    model = torch.nn.Linear(2, 1)
    opt = build_optimizer(model.parameters(), OptimConfig(), 0.0)
    sched = StagedSchedule(opt, STAGES, decay="cosine", min_ratio=0.0)
    sched.begin("grpo")
    gradients(0, model.parameters())
    opt.step()
    sched.step()
    state = sched.state_dict()
    again = StagedSchedule(opt, STAGES, decay="cosine", min_ratio=0.0)
    again.load_state_dict(state)
    again.begin("grpo")
    assert again.updates == 1 and len(opt.state) == 2
    again.begin("rce")
    assert again.updates == 0 and len(opt.state) == 0 and again.get_last_lr() == [5e-3]


def test_a_checkpoint_of_the_per_stage_recipe_still_resumes():
    assert saved_schedule({"stage": "grpo", "scheduler": {"last_epoch": 3}}) == {"stage": "grpo", "updates": 3}
    assert saved_schedule({"schedule": {"stage": "rce", "updates": 1}}) == {"stage": "rce", "updates": 1}
