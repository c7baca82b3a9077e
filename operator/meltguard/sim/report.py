"""The comparison as a table for people and as JSON for programs.

The tables read their figures out of the JSON (:func:`rows` and :func:`suite_columns` name
paths into a strategy's JSON object), so the JSON carries every figure a table shows. Over
several seeds a cell reads ``median (min-max)``.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from meltguard.sim.compare import Comparison
from meltguard.sim.engine import StrategyRun

Style = Literal["count", "share", "decimal"]
JsonDict = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Row:
    """One figure: its label in a table, its path in a strategy's JSON, how it is written."""

    label: str
    path: tuple[str, ...]
    style: Style


def rows(tiers: Sequence[str], slo_seconds: float) -> list[Row]:
    """Every figure a table shows, in order."""
    return [
        *(Row(f"served {tier}", ("served", tier), "count") for tier in tiers),
        *(Row(f"refused {tier}", ("refused", tier), "count") for tier in tiers),
        Row("  of which shed (below baseline)", ("shedTotal",), "count"),
        Row("failed (timed out)", ("failedTotal",), "count"),
        Row(f"answered within {slo_seconds:g} s", ("withinSloShare",), "share"),
        Row("melting GPU-minutes", ("meltingGpuMinutes",), "decimal"),
        Row("GPU-hours", ("gpuHours",), "count"),
        Row("shed out of order", ("outOfOrderSheds",), "count"),
        Row("quota changes (most of a tier)", ("mostQuotaChanges",), "count"),
        Row("served / best possible", ("optimumShare",), "share"),
        Row("served / safe best", ("safeOptimumShare",), "share"),
    ]


def _every_figure(tiers: Sequence[str], slo_seconds: float) -> list[Row]:
    """The figures of both tables, each once."""
    by_path = {row.path: row for row in [*rows(tiers, slo_seconds), *suite_columns(tiers)]}
    return list(by_path.values())


def figure(strategy: JsonDict, path: tuple[str, ...]) -> float:
    """The figure at ``path`` of a strategy's JSON object."""
    value: Any = strategy
    for key in path:
        value = value[key]
    return float(value)


def write(value: float, style: Style, *, compact: bool = False) -> str:
    """A figure as a table shows it (``compact``: 12.35M, 123.4k)."""
    if style == "share":
        return f"{value:.1%}"
    if style == "decimal" and abs(value) < 1e4:
        return f"{value:,.1f}"
    if compact and abs(value) >= 1e6:
        return f"{value / 1e6:.2f}M"
    if compact and abs(value) >= 1e4:
        return f"{value / 1e3:.1f}k"
    return f"{value:,.0f}"


def spread(values: Sequence[float], style: Style, *, compact: bool = False) -> str:
    """One value as is; several as ``median (min-max)``."""
    if len(values) == 1:
        return write(values[0], style, compact=compact)
    low, middle, high = min(values), statistics.median(values), max(values)
    return (f"{write(middle, style, compact=compact)}"
            f" ({write(low, style, compact=compact)}-{write(high, style, compact=compact)})")


def _per_tier(tiers: list[str], values: list[float]) -> dict[str, float]:
    return {tier: round(value, 1) for tier, value in zip(tiers, values, strict=True)}


def run_json(run: StrategyRun) -> JsonDict:
    """One strategy's totals and time series, camelCase keys."""
    return {
        "served": _per_tier(run.tiers, run.served.tolist()),
        "refused": _per_tier(run.tiers, run.refused.tolist()),
        "shed": _per_tier(run.tiers, run.shed.tolist()),
        "failed": _per_tier(run.tiers, run.failed.tolist()),
        "servedTotal": round(float(run.served.sum()), 1),
        "refusedTotal": int(run.refused.sum()),
        "shedTotal": int(run.shed.sum()),
        "failedTotal": round(float(run.failed.sum()), 1),
        "admittedTotal": int(run.admitted.sum()),
        "withinSloShare": round(run.slo_share, 4),
        "outOfOrderSheds": run.out_of_order_sheds,
        "quotaChanges": {tier: int(count) for tier, count in
                         zip(run.tiers, run.quota_changes.tolist(), strict=True)},
        "mostQuotaChanges": int(run.quota_changes.max(initial=0)),
        "meltingGpuMinutes": round(run.melting_gpu_minutes, 1),
        "gpuHours": round(run.gpu_hours, 2),
        "optimumShare": round(run.optimum_share, 4),
        "safeOptimumShare": round(run.safe_share, 4),
        "series": {**run.series, "phase": run.phases},
    }


def comparison_json(comparison: Comparison) -> JsonDict:
    """One scenario and seed: what was run, the best possible, every strategy's figures."""
    scenario, policy = comparison.scenario, comparison.policy
    return {
        "scenario": scenario.name,
        "seed": comparison.seed,
        "durationHours": scenario.duration_seconds / 3600,
        "gpuSupply": scenario.fleet.gpu_supply,
        "physicsStepSeconds": scenario.timing.physics_step_seconds,
        "controlTickSeconds": scenario.timing.control_tick_seconds,
        "latencySloSeconds": scenario.latency_slo_seconds,
        "policy": f"{policy.metadata.namespace or 'default'}/{policy.metadata.name}",
        "optimumImages": round(comparison.optimum_images, 1),
        "safeOptimumImages": round(comparison.safe_optimum_images, 1),
        "bestPossiblePerSecond": np.round(comparison.best_per_second(), 3).tolist(),
        "strategies": {run.name: run_json(run) for run in comparison.runs},
    }


def seeds_json(comparisons: Sequence[Comparison]) -> JsonDict:
    """One scenario over several seeds: each seed's comparison, and per strategy and figure
    the median, min and max over the seeds."""
    runs = [comparison_json(comparison) for comparison in comparisons]
    first = comparisons[0]
    tiers = first.runs[0].tiers if first.runs else []
    summary: JsonDict = {}
    for name in runs[0]["strategies"]:
        figures: JsonDict = summary.setdefault(name, {})
        for row in _every_figure(tiers, first.scenario.latency_slo_seconds):
            values = [figure(run["strategies"][name], row.path) for run in runs]
            place = figures
            for key in row.path[:-1]:
                place = place.setdefault(key, {})
            place[row.path[-1]] = {"median": statistics.median(values), "min": min(values),
                                   "max": max(values)}
    return {"scenario": first.scenario.name, "seeds": [c.seed for c in comparisons],
            "summary": summary, "runs": runs}


def format_table(comparisons: Sequence[Comparison]) -> str:
    """One scenario: a column per strategy, a row per figure (over seeds: median (min-max))."""
    runs = [comparison_json(comparison) for comparison in comparisons]
    first = comparisons[0]
    names = list(runs[0]["strategies"])
    tiers = first.runs[0].tiers if first.runs else []
    table = [(row.label, [spread([figure(run["strategies"][name], row.path) for run in runs],
                                 row.style) for name in names])
             for row in rows(tiers, first.scenario.latency_slo_seconds)]
    label_width = max(len(label) for label, _ in table)
    widths = [max(len(name), *(len(cells[i]) for _, cells in table))
              for i, name in enumerate(names)]
    header = " " * label_width + "".join(f"  {name:>{w}}" for name, w in
                                         zip(names, widths, strict=True))
    lines = [_title(comparisons), "", header]
    lines += [f"{label:<{label_width}}" + "".join(f"  {c:>{w}}" for c, w in
                                                  zip(cells, widths, strict=True))
              for label, cells in table]
    best = spread([c.optimum_images for c in comparisons], "count")
    lines.append(f"\nbest possible: {best} images (every reachable GPU from the first second,"
                 " the most demand any run admitted, one queue served oldest first)")
    safe = spread([c.safe_optimum_images for c in comparisons], "count")
    melt = first.policy.spec.melt.temperature_celsius
    lines.append(f"safe best: {safe} images (the same, with every GPU kept at or under"
                 f" {melt:g} C and its slowdown threshold)")
    return "\n".join(lines)


def _title(comparisons: Sequence[Comparison]) -> str:
    first = comparisons[0]
    scenario, policy = first.scenario, first.policy
    name = f"{policy.metadata.namespace or 'default'}/{policy.metadata.name}"
    seeds = [c.seed for c in comparisons]
    seed_text = f"seed {seeds[0]}" if len(seeds) == 1 else \
        f"seeds {seeds[0]}-{seeds[-1]} (median (min-max))"
    return (f"meltguard simulate: {scenario.name}, {seed_text},"
            f" {scenario.duration_seconds / 3600:g} h, at most {scenario.fleet.gpu_supply:,}"
            f" GPUs, policy {name}")


def suite_columns(tiers: Sequence[str]) -> list[Row]:
    """The figures of the suite table, one column each."""
    return [
        Row("served", ("servedTotal",), "count"),
        *(Row(f"refused {tier}", ("refused", tier), "count") for tier in tiers),
        Row("failed", ("failedTotal",), "count"),
        Row("in SLO", ("withinSloShare",), "share"),
        Row("melting GPU-min", ("meltingGpuMinutes",), "decimal"),
        Row("GPU-hours", ("gpuHours",), "count"),
        Row("quota changes", ("mostQuotaChanges",), "count"),
        Row("served/best", ("optimumShare",), "share"),
        Row("served/safe", ("safeOptimumShare",), "share"),
    ]


def format_suite(results: Sequence[Sequence[Comparison]]) -> str:
    """All scenarios in one table: a row per scenario and strategy, a column per figure."""
    tiers = results[0][0].runs[0].tiers
    columns = suite_columns(tiers)
    lines: list[list[str]] = [["scenario", "strategy", *(column.label for column in columns)]]
    for comparisons in results:
        runs = [comparison_json(comparison) for comparison in comparisons]
        for name in runs[0]["strategies"]:
            cells = [spread([figure(run["strategies"][name], column.path) for run in runs],
                            column.style, compact=True) for column in columns]
            lines.append([comparisons[0].scenario.name, name, *cells])
    widths = [max(len(line[index]) for line in lines) for index in range(len(lines[0]))]
    seeds = len(results[0])
    title = ("meltguard simulate --suite: seed " + str(results[0][0].seed) if seeds == 1 else
             f"meltguard simulate --suite: {seeds} seeds each, median (min-max)")
    text = [title, ""]
    for line in lines:
        text.append("  ".join(cell.ljust(width) if index < 2 else cell.rjust(width)
                              for index, (cell, width) in enumerate(zip(line, widths,
                                                                         strict=True))))
    return "\n".join(text)


def suite_json(results: Sequence[Sequence[Comparison]]) -> JsonDict:
    """Every scenario's seeds, summaries and runs (series included)."""
    return {"suite": [seeds_json(comparisons) for comparisons in results]}
