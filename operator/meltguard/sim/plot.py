"""``--plot``: the day at a glance, one line per strategy (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from meltguard.sim.compare import Comparison
from meltguard.sim.engine import StrategyRun, safe_capacity_per_second

if TYPE_CHECKING:
    from matplotlib.axes import Axes

COLOURS = {"static-cap": "tab:orange", "hpa-only": "tab:red", "meltguard": "tab:blue"}

#: (series, y-axis label) of the panels under the demand panel.
PANELS = (
    ("maxTemperatureCelsius", "hottest GPU (°C)"),
    ("replicas", "replicas placed"),
    ("firstTierLimit", "first tier's limit"),
    ("refusedPerSecond", "refused / s"),
    ("failedPerSecond", "failed / s"),
)


def write_plot(comparison: Comparison, path: Path) -> None:
    """Write a PNG of demand vs capacity, temperature, replicas, limits and refusals."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(len(PANELS) + 1, 1, figsize=(11, 14), sharex=True)
    try:
        _demand_panel(axes[0], comparison)
        for axis, (key, label) in zip(axes[1:], PANELS, strict=True):
            for run in comparison.runs:
                axis.plot(_hours(run), _values(run, key), label=run.name,
                          color=COLOURS.get(run.name), linewidth=1)
            axis.set_ylabel(label)
            axis.grid(alpha=0.3)
        thermal = comparison.scenario.fleet.thermal
        axes[1].axhline(thermal.slowdown_celsius, color="black", linestyle=":",
                        label="slowdown (throttling)")
        axes[1].axhline(comparison.policy.spec.melt.temperature_celsius, color="grey",
                        linestyle="--", label="melt threshold")
        axes[1].legend(loc="upper left", fontsize="small")
        axes[-1].set_xlabel("hour of the day")
        figure.suptitle(f"meltguard simulate: {comparison.scenario.name}, seed {comparison.seed}")
        figure.tight_layout()
        figure.savefig(path, dpi=90)
    finally:
        pyplot.close(figure)


def _demand_panel(axis: Axes, comparison: Comparison) -> None:
    for run in comparison.runs:
        colour = COLOURS.get(run.name)
        axis.plot(_hours(run), _values(run, "demandPerSecond"), color=colour, alpha=0.35,
                  linewidth=1, label=f"{run.name}: asked")
        axis.plot(_hours(run), _values(run, "servedPerSecond"), color=colour, linewidth=1.2,
                  label=f"{run.name}: served")
    safe = safe_capacity_per_second(comparison.scenario, comparison.policy.spec)
    axis.axhline(safe, color="black", linestyle="--", label="safe capacity (all GPUs)")
    axis.set_ylabel("images / s")
    axis.set_yscale("symlog", linthresh=10)
    axis.set_ylim(bottom=0)
    axis.legend(loc="upper right", fontsize="small", ncol=2)
    axis.grid(alpha=0.3)


def _hours(run: StrategyRun) -> list[float]:
    return _values(run, "hour")


def _values(run: StrategyRun, key: str) -> list[float]:
    return [float("nan") if value is None else value for value in run.series[key]]
