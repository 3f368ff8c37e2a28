"""PNG plots for `grpo.compare`: metric curves across runs (a band for runs of one configuration
over several seeds), and a sweep's params against its objective.

matplotlib is imported inside the functions (Agg backend, no display): `grpo.compare`
without `--plot` should not pay for it. Runs are told apart by colour, marker and line style
together, so curves that lie on top of each other (a flat accuracy of 0) stay readable, and
the legend sits under the axes where it cannot cover a line.

The bottom layer: it imports nothing from `grpo`; `grpo.analysis.run_plots` decides what to draw.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", "-.", ":")


@dataclass
class Series:
    label: str
    steps: list[int]
    values: list[float]


@dataclass
class Band:
    """Repeated runs of one configuration: the mean by step, ± one sd, and the min and max."""

    label: str
    steps: list[int]
    mean: list[float]
    sd: list[float]
    lo: list[float]
    hi: list[float]
    n: int  # runs


@dataclass
class Point:
    x: float
    y: float
    label: str  # annotation (a trial number or a short run id)
    state: str = "COMPLETE"  # PRUNED (y: its value when pruned) or FAIL draw differently


def slug(text: str) -> str:
    """A file-name part: `val/accuracy` -> `val_accuracy`."""
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_") or "plot"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def colours(n: int) -> list:
    """Distinct colours: tab10 up to 10 runs, tab20 up to 20, then evenly spaced viridis."""
    import matplotlib

    if n <= 10:
        return [matplotlib.colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [matplotlib.colormaps["tab20"](i) for i in range(n)]
    cmap = matplotlib.colormaps["viridis"]
    return [cmap(i / max(1, n - 1)) for i in range(n)]


def is_fraction(metric: str) -> bool:
    """Accuracies live in [0, 1]: a fixed axis keeps a flat 0 from looking like a big swing."""
    return "accuracy" in metric


LEGEND_WIDTH = 110  # characters of a small-font legend line across a 9-inch figure, about


def legend_lines(labels: Sequence[str]) -> int:
    """Lines the legend takes under the axes (one column: long labels wrap)."""
    return sum(len(textwrap.wrap(lb, LEGEND_WIDTH)) or 1 for lb in labels)


def _legend(fig, handles, labels) -> None:
    """Under the axes, as many columns as the label lengths allow at this figure width; a label
    longer than the figure is wide wraps, so none is cut at the edge."""
    longest = max((len(lb) for lb in labels), default=0)
    fit = 4 if longest <= 25 else 2 if longest <= 45 else 1
    fig.legend(
        handles,
        [textwrap.fill(lb, LEGEND_WIDTH) for lb in labels],
        loc="outside lower center",
        ncols=max(1, min(fit, len(labels))),
        frameon=False,
        fontsize="small",
    )


def curves(
    series: Sequence[Series],
    metric: str,
    path: Path,
    subtitle: str = "",
    stage_boundary: int | None = None,
    bands: Sequence[Band] = (),
) -> Path:
    """One line per run of `metric` by step, one band per repeated configuration; saved as a PNG at `path`."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    lines = len(series) + len(bands)
    texts = [s.label for s in series] + [f"{b.label}: mean ± sd of {b.n} runs, thin: min/max" for b in bands]
    fig, ax = plt.subplots(figsize=(9, 4.8 + 0.22 * legend_lines(texts)), layout="constrained")
    palette = colours(lines)
    for i, (b, colour) in enumerate(zip(bands, palette)):
        _band(ax, b, colour, MARKERS[i % len(MARKERS)])
    for i, (s, colour) in enumerate(zip(series, palette[len(bands) :]), start=len(bands)):
        # Shrinking markers and varied dashes: runs with identical values still show through.
        ax.plot(
            s.steps,
            s.values,
            color=colour,
            marker=MARKERS[i % len(MARKERS)],
            linestyle=LINESTYLES[i % len(LINESTYLES)],
            markersize=max(4.0, 9.0 - 1.2 * i) if len(series) <= 5 else 5.0,
            linewidth=1.6,
            alpha=0.9,
            label=s.label,
        )
    if stage_boundary:
        ax.axvline(stage_boundary, color="0.5", linestyle=":", linewidth=1)
        ax.annotate(
            "RCE | GRPO",
            (stage_boundary, 1),
            xycoords=("data", "axes fraction"),
            xytext=(3, -12),
            textcoords="offset points",
            fontsize="small",
            color="0.4",
        )
    if is_fraction(metric):
        ax.set_ylim(-0.03, 1.03)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    runs = len(series) + sum(b.n for b in bands)
    ax.set_title(f"{metric} by step, {runs} run{'s' if runs != 1 else ''}" + (f"\n{subtitle}" if subtitle else ""))
    ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    _legend(fig, handles, labels)
    return _save(fig, path)


def _band(ax, band: Band, colour, marker: str) -> None:
    """The mean as a line, ± sd shaded, the min and max as thin lines of the same colour."""
    below = [m - d for m, d in zip(band.mean, band.sd)]
    above = [m + d for m, d in zip(band.mean, band.sd)]
    ax.fill_between(band.steps, below, above, color=colour, alpha=0.22, linewidth=0)
    for extreme in (band.lo, band.hi):
        ax.plot(band.steps, extreme, color=colour, linewidth=0.7, alpha=0.7)
    ax.plot(
        band.steps,
        band.mean,
        color=colour,
        marker=marker,
        markersize=4.5,
        linewidth=1.8,
        label=f"{band.label}: mean ± sd of {band.n} runs, thin: min/max",
    )


def spans_decades(values: Sequence[float], decades: float = 2.0) -> bool:
    """True when positive values span >= `decades` orders of magnitude: use a log axis."""
    positive = [v for v in values if v > 0]
    if len(positive) != len(values) or not positive:
        return False
    return math.log10(max(positive) / min(positive)) >= decades


STATE_STYLE = {  # marker, face colour, legend text
    "PRUNED": ("o", "none", "pruned (value when pruned)"),
    "FAIL": ("X", "tab:gray", "failed"),
}


def scatter(
    points: Sequence[Point],
    param: str,
    objective: str,
    path: Path,
    title: str,
    maximize: bool = True,
    log_x: bool | None = None,
) -> Path:
    """`objective` against one varied `param`, best point starred, pruned trials hollow and failed ones
    crossed; a log x axis when `log_x` (the param was searched on a log scale), or, when None, when
    the values span 2 decades. Labels of coinciding points are joined, near ones moved apart."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.8), layout="constrained")
    xs = [p.x for p in points]
    colour = colours(1)[0]
    done = [p for p in points if p.state not in STATE_STYLE]
    if done:
        ax.scatter([p.x for p in done], [p.y for p in done], s=40, color=colour, alpha=0.85, label="complete")
    for state, (marker, face, text) in STATE_STYLE.items():
        these = [p for p in points if p.state == state]
        if these:
            edge = colour if face == "none" else face
            ax.scatter(
                [p.x for p in these], [p.y for p in these], s=40, marker=marker, facecolors=face, edgecolors=edge
            )
            ax.scatter([], [], s=40, marker=marker, facecolors=face, edgecolors=edge, label=f"{text}: {len(these)}")
    ranked = done or points
    best_y = (max if maximize else min)(p.y for p in ranked)
    best = [p for p in ranked if p.y == best_y]
    label = f"best ({best[0].label})" if len(best) == 1 else f"best ({len(best)} tied)"
    ax.scatter([p.x for p in best], [p.y for p in best], s=160, marker="*", color="tab:red", zorder=3, label=label)
    ax.margins(x=0.08)
    log = spans_decades(xs) if log_x is None else log_x and all(x > 0 for x in xs)
    if log:
        ax.set_xscale("log")
    if is_fraction(objective):
        ax.set_ylim(-0.03, 1.03)
    _annotate(fig, ax, points)
    ax.set_xlabel(param + (" (log scale)" if log else ""))
    ax.set_ylabel(objective)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return _save(fig, path)


def _annotate(fig, ax, points: Sequence[Point]) -> None:
    """One label per position (`#3, #5` for points on top of each other), each placed at the first
    offset (right, above, below, left) where it overlaps no label placed before it."""
    at: dict[tuple[float, float], list[str]] = {}
    for p in points:
        at.setdefault((p.x, p.y), []).append(p.label)
    fig.canvas.draw()  # fixes the limits, so data positions map to pixels
    placed: list[tuple[float, float, float, float]] = []
    height = 10.0  # px of an x-small label at 120 dpi, about
    for (x, y), labels in sorted(at.items(), key=lambda item: (item[0][1], item[0][0])):
        text = ", ".join(labels)
        width = 5.5 * len(text)
        px, py = ax.transData.transform((x, y))
        for dx, dy in ((4, 3), (4, 13), (4, -13), (-width - 4, 3), (4, 23), (4, -23), (-width - 4, -13)):
            box = (px + dx * 1.67, py + dy * 1.67, width, height)  # offset points -> px at 120 dpi
            if not any(_overlap(box, other) for other in placed):
                break
        placed.append(box)
        ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize="x-small", color="0.35")


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
