"""Hydra sweep syntax -> Optuna distributions (grpo.sweep.search_space), pure and fast."""

from __future__ import annotations

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from grpo.sweep.search_space import (
    distribution_from_override,
    format_value,
    grid_choices,
    grid_size,
    params_to_overrides,
    parse_search_space,
)


def _dist(line: str):
    return distribution_from_override(OverridesParser.create().parse_override(line))


# hydra-optuna-sweeper's table (tests/test_optuna_sweeper_plugin.py), then our additions.
@pytest.mark.parametrize(
    "line, expected",
    [
        ("key=choice(1,2)", CategoricalDistribution([1, 2])),
        ("key=choice(true, false)", CategoricalDistribution([True, False])),
        ("key=choice('hello', 'world')", CategoricalDistribution(["hello", "world"])),
        ("key=shuffle(range(1,3))", CategoricalDistribution((1, 2))),
        ("key=range(1,3)", IntDistribution(1, 3)),
        ("key=interval(1, 5)", FloatDistribution(1, 5)),
        ("key=int(interval(1, 5))", IntDistribution(1, 5)),
        ("key=tag(log, interval(1, 5))", FloatDistribution(1, 5, log=True)),
        ("key=tag(log, int(interval(1, 5)))", IntDistribution(1, 5, log=True)),
        ("key=range(0.5, 5.5, step=1)", FloatDistribution(0.5, 5.5, step=1)),
        # additions
        ("key=1,2,3", CategoricalDistribution([1, 2, 3])),
        ("key=a,b", CategoricalDistribution(["a", "b"])),
        ("key=choice(a b, c)", CategoricalDistribution(["a b", "c"])),
        ("key=shuffle(choice(3, 1))", CategoricalDistribution([3, 1])),
        ("key=str(choice(1, 2))", CategoricalDistribution(["1", "2"])),
        ("key=choice(1.0, 2)", CategoricalDistribution([1.0, 2])),
        ("key=range(16, 64, step=16)", IntDistribution(16, 64, step=16)),
        ("key=range(10, 1, -3)", IntDistribution(1, 10, step=3)),
        ("key=float(range(1, 4))", FloatDistribution(1.0, 4.0, step=1.0)),
        ("key=range(-5.5, 5.5, step=0.5)", FloatDistribution(-5.5, 5.5, step=0.5)),
        ("key=tag(log, range(1, 10))", IntDistribution(1, 10, log=True)),
        ("key=interval(1e-5, 1e-2)", FloatDistribution(1e-5, 1e-2)),
        ("key=tag(log, interval(1e-6, 1e-4))", FloatDistribution(1e-6, 1e-4, log=True)),
        ("key=tag(foo, interval(0, 1))", FloatDistribution(0.0, 1.0)),
        ("key=7", None),
        ("key=abc", None),
    ],
)
def test_distribution_table(line, expected):
    got = _dist(line)
    assert got == expected
    if expected is not None:
        assert type(got) is type(expected)


def test_choice_of_lists_is_carried_as_override_strings():
    space = parse_search_space({}, ["key=choice([1,2],[3])"])
    assert space.distributions["key"] == CategoricalDistribution(["[1,2]", "[3]"])
    assert "key" in space.raw
    assert space.overrides_for({"key": "[1,2]"}) == ["key=[1,2]"]


@pytest.mark.parametrize(
    "line",
    ["key=tag(log, range(0.5, 5.5, step=1))", "key=tag(log, range(1, 10, 2))"],
)
def test_log_range_without_unit_int_step_is_refused(line):
    with pytest.raises(HydraException, match="log"):
        _dist(line)


def test_params_then_cli_merge_later_wins():
    params = {
        "x": "interval(0, 1)",
        "y": "choice(1, 2)",
        "z": "range(1, 4)",
        "fixed": 7,
        "lr": 1e-5,
        "+db.port": "choice(1, 2)",
    }
    args = ["y=3", "z=choice(a, b)", "db.port=5", "~dropped", "+new=x y"]
    space = parse_search_space(params, args)
    assert space.distributions == {
        "x": FloatDistribution(0.0, 1.0),
        "z": CategoricalDistribution(["a", "b"]),
    }
    # fixed values keep the text they were written with
    assert space.fixed == {"fixed": "7", "lr": "1e-05", "y": "3", "db.port": "5", "+new": "x y"}
    assert space.deletions == ["~dropped"]
    assert space.fixed_overrides() == ["fixed=7", "lr=1e-05", "y=3", "db.port=5", "+new=x y", "~dropped"]


def test_overrides_for_a_trial():
    space = parse_search_space({"x": "interval(0, 1)", "name": "choice('a b', c)"}, ["+s=q"])
    out = space.overrides_for({"x": 0.25, "name": "a b"})
    assert out[:2] == ["+s=q", "x=0.25"]
    parsed = OverridesParser.create().parse_overrides(out)
    assert [o.value() for o in parsed] == ["q", 0.25, "a b"]


@pytest.mark.parametrize(
    "value",
    [
        0,
        -3,
        2.5,
        1e-05,
        -1e-12,
        3.0,
        True,
        False,
        None,
        "plain",
        "a b",
        "true",
        "1",
        "1.5",
        "null",
        "x=y",
        "a,b",
        "[1]",
        "sqlite:////tmp/x y/optuna.db",
        "it's",
        "back\\slash",
        "",
        [1, "a b", None],
        {"_target_": "optuna.pruners.MedianPruner", "n": 2},
    ],
)
def test_format_value_round_trips_through_the_override_grammar(value):
    text = format_value(value)
    parsed = OverridesParser.create().parse_override(f"k={text}")
    assert not parsed.is_sweep_override()
    assert parsed.value() == value
    assert type(parsed.value()) is type(value)


def test_params_to_overrides_quotes_strings_that_would_change_type():
    assert params_to_overrides({"a": "1", "b": 1, "c": True, "d": "true"}) == ["a='1'", "b=1", "c=true", "d='true'"]


def test_grid_choices():
    assert grid_choices(CategoricalDistribution(["a", "b"])) == ["a", "b"]
    assert grid_choices(IntDistribution(16, 64, step=16)) == [16, 32, 48, 64]
    assert grid_choices(FloatDistribution(0.1, 0.5, step=0.1)) == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert grid_size({"a": IntDistribution(1, 3), "b": CategoricalDistribution([0, 1])}) == 6
    with pytest.raises(HydraException, match="grid sampler needs discrete"):
        grid_choices(FloatDistribution(0.0, 1.0), "lr")
