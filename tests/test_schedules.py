"""Schedules at their edges, values worked out by hand."""

import pytest

from grpo.schedules import linear_schedule, lr_multiplier, step_schedule, warmup_steps_from_ratio


@pytest.mark.parametrize(
    "step, decay, min_ratio, expected",
    [
        (0, "cosine", 0.0, 0.1),  # warm-up (0+1)/10
        (4, "cosine", 0.0, 0.5),
        (9, "cosine", 0.0, 1.0),  # last warm-up step reaches 1
        (10, "cosine", 0.0, 1.0),  # decay starts at 1
        (28, "cosine", 0.0, 0.9045085),  # progress 18/90 = 0.2: (1 + cos 0.2pi) / 2
        (55, "cosine", 0.0, 0.5),  # progress 1/2
        (55, "cosine", 0.1, 0.55),  # 0.1 + 0.9 * 0.5
        (28, "linear", 0.0, 0.8),
        (55, "linear", 0.1, 0.55),
        (99, "constant", 0.0, 1.0),
        (100, "cosine", 0.1, 0.1),  # floor at total_steps
        (150, "linear", 0.1, 0.1),  # and after
        (150, "constant", 0.1, 1.0),
    ],
)
def test_lr_multiplier(step, decay, min_ratio, expected):
    got = lr_multiplier(step, total_steps=100, warmup_steps=10, decay=decay, min_ratio=min_ratio)
    assert got == pytest.approx(expected, abs=1e-7)


def test_lr_multiplier_edges():
    # seed config: 500 steps, 100 warm-up
    assert lr_multiplier(0, total_steps=500, warmup_steps=100) == pytest.approx(0.01)
    assert lr_multiplier(99, total_steps=500, warmup_steps=100) == 1.0
    # no warm-up: full rate at step 0
    assert lr_multiplier(0, total_steps=10, warmup_steps=0) == 1.0
    # warm-up as long as the stage: no decay phase, floor after it
    assert lr_multiplier(9, total_steps=10, warmup_steps=10) == 1.0
    assert lr_multiplier(10, total_steps=10, warmup_steps=10, min_ratio=0.2) == 0.2


def test_lr_multiplier_rejects_bad_options():
    with pytest.raises(ValueError, match="unknown lr decay 'step'"):
        lr_multiplier(0, total_steps=10, warmup_steps=0, decay="step")
    with pytest.raises(ValueError, match="min_ratio must be in"):
        lr_multiplier(0, total_steps=10, warmup_steps=0, min_ratio=1.5)


@pytest.mark.parametrize(
    "total, ratio, expected",
    [
        (500, 0.2, 100),
        (10, 0.2, 2),
        (15, 0.2, 3),  # 0.2 * 15 = 3.0000000000000004 in binary floats
        (100, 0.07, 7),  # 7.000000000000001 in binary floats
        (1, 0.2, 0),  # nearest, not ceil
        (5, 0.1, 1),  # 0.5 rounds half up
        (25, 0.1, 3),  # 2.5 -> 3 (Python's round would give 2)
        (7, 0.3, 2),
        (0, 0.2, 0),
        (10, 0.0, 0),
        (10, 1.0, 10),
    ],
)
def test_warmup_steps_from_ratio(total, ratio, expected):
    assert warmup_steps_from_ratio(total, ratio) == expected


def test_warmup_steps_from_ratio_rejects_bad_values():
    with pytest.raises(ValueError, match="ratio in"):
        warmup_steps_from_ratio(10, 1.5)
    with pytest.raises(ValueError, match="total_steps >= 0"):
        warmup_steps_from_ratio(-1, 0.2)


@pytest.mark.parametrize("step, expected", [(0, 0.5), (75, 0.325), (150, 0.15), (1000, 0.15)])
def test_linear_temperature_schedule(step, expected):
    assert linear_schedule(step, initial=0.5, final=0.15, decay_steps=150) == pytest.approx(expected)


def test_linear_schedule_without_decay_is_final():
    assert linear_schedule(0, initial=0.5, final=0.15, decay_steps=0) == 0.15


def test_step_schedule_top_k():
    assert step_schedule(9, early=3, late=5, switch_step=10) == 3
    assert step_schedule(10, early=3, late=5, switch_step=10) == 5
