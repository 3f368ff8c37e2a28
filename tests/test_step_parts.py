"""The parts a step is built from: the optimizer choice, the KL controller, the reference decision
and the step's phase timer (what grpo.bench reads instead of patching the step)."""

import pytest
import torch

from grpo.algorithms.kl import AdaptiveKLController, FixedKLController, kl_controller
from grpo.compose import compose
from grpo.config.errors import ConfigError
from grpo.config.schema import OptimConfig
from grpo.context import needs_reference
from grpo.optim import build_optimizer
from grpo.recipe import Recipe
from grpo.timing import StepTimer


def _trained(name: str, steps: int = 3, **optim) -> torch.Tensor:
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 2)
    opt = build_optimizer(layer.parameters(), OptimConfig(name=name, **optim), lr=0.1)
    x = torch.randn(8, 4)
    for _ in range(steps):
        layer(x).square().mean().backward()
        opt.step()
        opt.zero_grad()
    return layer.weight.detach().clone()


def test_adamw_fused_takes_adamw_steps():
    torch.testing.assert_close(_trained("adamw_fused"), _trained("adamw"))


def test_sgd_steps_by_lr_times_gradient():
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 2)
    before = layer.weight.detach().clone()
    opt = build_optimizer(layer.parameters(), OptimConfig(name="sgd"), lr=0.1)
    assert isinstance(opt, torch.optim.SGD)
    layer(torch.ones(1, 4)).sum().backward()
    grad = layer.weight.grad.clone()
    opt.step()
    torch.testing.assert_close(layer.weight.detach(), before - 0.1 * grad)
    assert not torch.equal(_trained("sgd", momentum=0.9), _trained("sgd"))


def test_unknown_optimizer_is_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"trainer.optim.name='lion': must be one of adamw, adamw_fused, sgd"):
        compose(["trainer.optim.name=lion"])


def test_kl_controller_kinds():
    fixed = kl_controller("fixed", 0.05, target_kl=6.0, horizon=100)
    assert isinstance(fixed, FixedKLController) and fixed.value == 0.05
    fixed.update(100.0, 1)
    assert fixed.value == 0.05  # fixed never moves
    adaptive = kl_controller("adaptive", 0.05, target_kl=6.0, horizon=100)
    assert isinstance(adaptive, AdaptiveKLController)
    with pytest.raises(ValueError, match="unknown KL controller"):
        kl_controller("pid", 0.05, 6.0, 100)


def test_the_reference_is_needed_only_for_a_kl_term():
    assert needs_reference(compose(["algorithm.kl_beta=0.04"]).cfg.algorithm)
    assert not needs_reference(compose(["algorithm=dapo"]).cfg.algorithm)  # DAPO: no KL


def test_step_timer_adds_up_repeated_phases():
    timer = StepTimer()
    for _ in range(2):
        with timer.phase("backward"):
            pass
    assert timer["backward"] > 0 and timer["never"] == 0.0
    timer.reset()
    assert timer["backward"] == 0.0


SMALL = [
    "task=numgame",
    "schedule.rce_steps=0",
    "trainer.max_steps=1",
    "rollout.batch_size=2",
    "rollout.group_size=2",
    "generation.max_new_tokens=3",
    "eval.num_samples=2",
    "logger=none",
]


@pytest.mark.parametrize("kl_beta", [0.04, 0.0])
def test_step_phases_are_timed_and_the_reference_runs_only_when_needed(tmp_path, kl_beta):
    recipe = Recipe(compose([*SMALL, f"algorithm.kl_beta={kl_beta}"]), run_dir=str(tmp_path), tags={})
    recipe.setup()
    assert (recipe.ctx.reference is not None) == (kl_beta > 0)
    recipe.train()
    recipe.cleanup()
    timer = recipe.ctx.timer  # the last GRPO step's phases
    for phase in ("step", "generation", "policy_forward", "backward", "optimizer"):
        assert timer[phase] > 0, phase
    assert (timer["reference_forward"] > 0) == (kl_beta > 0)
    inner = sum(timer[p] for p in ("generation", "reference_forward", "policy_forward", "backward", "optimizer"))
    assert inner <= timer["step"]
