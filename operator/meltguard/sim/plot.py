"""``--plot``: the day at a glance, one line per strategy (matplotlib, no display needed).

One scenario gives one PNG file; ``--suite`` gives a folder with a PNG per scenario. Over
several seeds, the first seed is drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from meltguard.sim.compare import Comparison
from meltguard.sim.engine import StrategyRun

if TYPE_CHECKING:
    from matplotlib.axes import Axes

COLOURS = {"static-cap": "tab:orange", "hpa-only": "tab:red", "meltguard": "tab:blue"}

#: (series, y-axis label) of the panels under the demand panel.
PANELS = (
    ("maxTemperatureCelsius", "hottest GPU (°C)"),
    ("meanUtilization", "mean GPU utilization"),
    ("replicas", "replicas placed"),
    ("firstTierLimit", "first tier's limit"),
    ("refusedPerSecond", "refused / s"),
    ("failedPerSecond", "failed / s"),
)


def write_plot(comparison: Comparison, path: Path) -> None:
    """Write a PNG of demand vs the best possible, heat, utilization, replicas, limits,
    refusals and failures."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(len(PANELS) + 1, 1, figsize=(11, 16), sharex=True)
    try:
        _demand_panel(axes[0], comparison)
        for axis, (key, label) in zip(axes[1:], PANELS, strict=True):
            for run in comparison.runs:
                axis.plot(_hours(run), _values(run, key), label=run.name,
                          color=COLOURS.get(run.name), linewidth=1)
            axis.set_ylabel(label)
            axis.grid(alpha=0.3)
        scenario = comparison.scenario
        slowdown = scenario.gpu_profiles[scenario.fleet.gpu_profile].slowdown_celsius
        axes[1].axhline(slowdown, color="black", linestyle=":", label="slowdown (throttling)")
        axes[1].axhline(comparison.policy.spec.melt.temperature_celsius, color="grey",
                        linestyle="--", label="policy's melt temperature")
        axes[1].legend(loc="upper left", fontsize="small")
        axes[-1].set_xlabel("hour of the day")
        figure.suptitle(f"meltguard simulate: {scenario.name}, seed {comparison.seed}")
        figure.tight_layout()
        figure.savefig(path, dpi=90)
    finally:
        pyplot.close(figure)


def write_plots(results: Sequence[Sequence[Comparison]], folder: Path) -> list[Path]:
    """One PNG per scenario (its first seed) in ``folder``, created if missing."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for comparisons in results:
        path = folder / f"{comparisons[0].scenario.name}.png"
        write_plot(comparisons[0], path)
        written.append(path)
    return written


def _demand_panel(axis: Axes, comparison: Comparison) -> None:
    for run in comparison.runs:
        colour = COLOURS.get(run.name)
        axis.plot(_hours(run), _values(run, "demandPerSecond"), color=colour, alpha=0.35,
                  linewidth=1, label=f"{run.name}: asked")
        axis.plot(_hours(run), _values(run, "servedPerSecond"), color=colour, linewidth=1.2,
                  label=f"{run.name}: served")
    if comparison.runs:
        axis.plot(_hours(comparison.runs[0]), comparison.best_per_second().tolist(),
                  color="black", linestyle="--", linewidth=1, label="best possible")
    axis.set_ylabel("images / s")
    axis.set_yscale("symlog", linthresh=10)
    axis.set_ylim(bottom=0)
    axis.legend(loc="upper right", fontsize="small", ncol=2)
    axis.grid(alpha=0.3)


def _hours(run: StrategyRun) -> list[float]:
    return _values(run, "hour")


def _values(run: StrategyRun, key: str) -> list[float]:
    return [float("nan") if value is None else value for value in run.series[key]]
