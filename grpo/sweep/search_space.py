"""Hydra sweep overrides -> Optuna distributions (pure: no I/O, no study).

The mapping follows hydra-optuna-sweeper's test table, so sweep files written for it keep
their meaning:

=====================================  ==============================================
override                               distribution
=====================================  ==============================================
``key=choice(1, 2)`` / ``key=1,2``     ``CategoricalDistribution([1, 2])``
``key=choice('a', 'b')``               ``CategoricalDistribution(["a", "b"])``
``key=shuffle(range(1, 3))``           ``CategoricalDistribution([1, 2])``
``key=range(1, 3)``                    ``IntDistribution(1, 3)``  (stop is *inclusive*)
``key=range(16, 64, step=16)``         ``IntDistribution(16, 64, step=16)``
``key=range(0.5, 5.5, step=1)``        ``FloatDistribution(0.5, 5.5, step=1)``
``key=interval(1, 5)``                 ``FloatDistribution(1, 5)``
``key=int(interval(1, 5))``            ``IntDistribution(1, 5)``
``key=tag(log, interval(1, 5))``       ``FloatDistribution(1, 5, log=True)``
``key=tag(log, int(interval(1, 5)))``  ``IntDistribution(1, 5, log=True)``
``key=7`` (no sweep)                   fixed: passed to every trial as ``key=7``
``~key``                               deletion: passed to every trial as is
=====================================  ==============================================

Two things differ from Hydra's basic sweeper and are kept on purpose, as in the official
plugin: ``range(a, b)`` becomes an Optuna range whose upper bound ``b`` is included, and the
order of ``shuffle(...)`` is irrelevant (a categorical has no order). Extensions over the
official plugin: ``tag(log, range(a, b))`` gives a log-scaled int range, negative steps are
normalised, and choices of lists/dicts (``choice([1,2],[3])``) are carried as their override
strings and passed back verbatim.
"""

from __future__ import annotations

import decimal
import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    Quote,
    QuotedString,
    RangeSweep,
    Transformer,
)
from hydra.errors import HydraException
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

__all__ = [
    "SearchSpace",
    "distribution_from_override",
    "format_value",
    "grid_choices",
    "grid_size",
    "parse_search_space",
    "params_to_overrides",
    "suggest_all",
]


@functools.lru_cache(maxsize=1)
def _parser() -> OverridesParser:
    return OverridesParser.create()


def _is_plain(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def format_value(value: Any) -> str:
    """Render a Python value as the value part of a Hydra override, so that it parses back
    to the same value (strings that would read as numbers, bools or contain grammar
    characters are quoted)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        try:
            parsed = _parser().parse_override(f"k={value}")
            if not parsed.is_sweep_override() and parsed.value() == value and isinstance(parsed.value(), str):
                return value
        except Exception:  # noqa: BLE001 - anything that does not parse gets quoted
            pass
        return QuotedString(text=value, quote=Quote.single).with_quotes()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        items = ",".join(f"{format_value(str(k))}:{format_value(v)}" for k, v in value.items())
        return "{" + items + "}"
    return format_value(str(value))


def _range_distribution(value: RangeSweep) -> BaseDistribution:
    assert value.start is not None and value.stop is not None
    start, stop, step = value.start, value.stop, value.step
    if step is None:
        step = 1
    if step == 0:
        raise HydraException(f"range() step must not be 0: {value}")
    low, high = (start, stop) if step > 0 else (stop, start)
    step = abs(step)
    log = "log" in value.tags
    is_float = any(isinstance(v, float) for v in (start, stop, step))
    if is_float:
        if log:
            raise HydraException(
                "tag(log, range(...)) with float bounds is not supported: Optuna has no "
                "stepped log-float distribution; use tag(log, interval(low, high))"
            )
        return FloatDistribution(float(low), float(high), step=float(step))
    if log and step != 1:
        raise HydraException("tag(log, range(...)) needs step=1: Optuna's log-scaled ints take no step")
    if log:
        return IntDistribution(int(low), int(high), log=True)
    return IntDistribution(int(low), int(high), step=int(step))


def _interval_distribution(value: IntervalSweep) -> BaseDistribution:
    assert value.start is not None and value.end is not None
    log = "log" in value.tags
    if isinstance(value.start, int) and isinstance(value.end, int):
        return IntDistribution(int(value.start), int(value.end), log=log)
    return FloatDistribution(float(value.start), float(value.end), log=log)


def _choice_values(override: Override) -> tuple[list[Any], bool]:
    """Values of a choice or shuffled range, in written order (shuffle is irrelevant to a
    categorical); (values, raw). raw=True means the values are override strings (some choice
    was a list or dict) to be passed back verbatim."""
    value = override.value()
    if isinstance(value, RangeSweep):
        values: list[Any] = list(value.range())
    elif isinstance(value, ChoiceSweep):
        values = list(value.list)
    else:  # glob(...) over a config group: needs the config loader
        values = list(override.sweep_iterator(transformer=Transformer.identity))
    plain = [v.text if isinstance(v, QuotedString) else v for v in values]
    if all(_is_plain(v) for v in plain):
        return plain, False
    return [Transformer.str(v) for v in values], True


def distribution_from_override(override: Override) -> BaseDistribution | None:
    """The Optuna distribution of a sweep override, or None for a plain (fixed) override."""
    if not override.is_sweep_override():
        return None
    value = override.value()
    if override.is_choice_sweep() or (isinstance(value, RangeSweep) and value.shuffle):
        choices, _ = _choice_values(override)
        return CategoricalDistribution(choices)
    if isinstance(value, RangeSweep):
        return _range_distribution(value)
    if isinstance(value, IntervalSweep):
        return _interval_distribution(value)
    raise HydraException(f"{override.input_line}: this sweep type is not supported by the Optuna sweeper")


@dataclass
class SearchSpace:
    """What the sweeper suggests per trial and what it passes to every trial unchanged.

    Keys are Hydra key elements as written (``x``, ``+db.port``, ``model``), so an override
    is always ``f"{key}={value}"``.
    """

    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    fixed: dict[str, str] = field(default_factory=dict)
    deletions: list[str] = field(default_factory=list)
    raw: set[str] = field(default_factory=set)

    def fixed_overrides(self) -> list[str]:
        return [f"{k}={v}" for k, v in self.fixed.items()] + list(self.deletions)

    def overrides_for(self, params: Mapping[str, Any]) -> list[str]:
        """The overrides of one trial: fixed values, deletions, then the trial's params."""
        return self.fixed_overrides() + params_to_overrides(params, raw=self.raw)


def params_to_overrides(params: Mapping[str, Any], raw: Iterable[str] = ()) -> list[str]:
    raw = set(raw)
    return [f"{k}={v if k in raw else format_value(v)}" for k, v in params.items()]


def _param_value_string(value: Any) -> str:
    """A `params:` entry from YAML: strings are sweep syntax; other scalars are values."""
    if isinstance(value, str):
        return value
    return format_value(value)


def _raw_value(ov: Override) -> str:
    """The value as written (it parsed once, so it parses again to the same value)."""
    try:
        return ov.get_value_string().strip()
    except (AssertionError, ValueError):
        return ov.get_value_element_as_str()


def parse_search_space(
    params: Mapping[str, Any] | None,
    arguments: Sequence[str] = (),
    config_loader: Any = None,
) -> SearchSpace:
    """Merge ``hydra.sweeper.params`` with the command-line overrides (which come after and
    win, key by key) and split them into distributions, fixed values and deletions."""
    lines = [f"{k}={_param_value_string(v)}" for k, v in (params or {}).items()]
    lines += list(arguments)
    parser = OverridesParser.create(config_loader=config_loader)
    overrides = parser.parse_overrides(lines)

    # One entry per config key; a later override of the same key replaces an earlier one,
    # whatever its prefix (+, ++) or kind (sweep or fixed).
    merged: dict[str, Override] = {}
    for ov in overrides:
        ident = ov.key_or_group if ov.package is None else f"{ov.key_or_group}@{ov.package}"
        merged.pop(ident, None)
        merged[ident] = ov

    space = SearchSpace()
    for ov in merged.values():
        name = ov.get_key_element()
        if ov.is_delete():
            tail = "" if ov.value_type is None else f"={_raw_value(ov)}"
            space.deletions.append(f"{name}{tail}")
            continue
        dist = distribution_from_override(ov)
        if dist is None:
            space.fixed[name] = _raw_value(ov)
        else:
            space.distributions[name] = dist
            if isinstance(dist, CategoricalDistribution) and _choice_values(ov)[1]:
                space.raw.add(name)
    return space


def _float_grid(low: float, high: float, step: float) -> list[float]:
    lo, hi, st = (decimal.Decimal(repr(v)) for v in (low, high, step))
    out = []
    cur = lo
    while cur <= hi:
        out.append(float(cur))
        cur += st
    return out


def grid_choices(distribution: BaseDistribution, name: str = "?") -> list[Any]:
    """The values GridSampler walks for one distribution (discrete ones only)."""
    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    if isinstance(distribution, IntDistribution):
        if distribution.log:
            return list(range(distribution.low, distribution.high + 1))
        return list(range(distribution.low, distribution.high + 1, distribution.step))
    if isinstance(distribution, FloatDistribution) and distribution.step is not None:
        return _float_grid(distribution.low, distribution.high, distribution.step)
    raise HydraException(
        f"The grid sampler needs discrete parameters; '{name}' is {distribution}. "
        "Use choice(...) or range(..., step=...)."
    )


def grid_size(distributions: Mapping[str, BaseDistribution]) -> int:
    n = 1
    for k, d in distributions.items():
        n *= len(grid_choices(d, k))
    return n


def suggest_all(trial: Any, distributions: Mapping[str, BaseDistribution]) -> None:
    """Suggest every distribution on `trial` (what ``study.ask(fixed_distributions)`` does,
    through the public API), with whatever sampler the study holds now."""
    for name, d in distributions.items():
        if isinstance(d, FloatDistribution):
            trial.suggest_float(name, d.low, d.high, step=d.step, log=d.log)
        elif isinstance(d, IntDistribution):
            trial.suggest_int(name, d.low, d.high, step=d.step, log=d.log)
        elif isinstance(d, CategoricalDistribution):
            trial.suggest_categorical(name, d.choices)
        else:  # pragma: no cover - parse_search_space makes only these three
            raise TypeError(f"{name}: unsupported distribution {d!r}")
