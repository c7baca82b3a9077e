"""The comparison as a table for people and as JSON for programs (same figures)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from meltguard.sim.compare import Comparison
from meltguard.sim.engine import StrategyRun

Cell = Callable[[StrategyRun], str]


def _tier_cell(values: Callable[[StrategyRun], list[float]], index: int) -> Cell:
    return lambda run: f"{values(run)[index]:,.0f}"


def _tier_rows(label: str, values: Callable[[StrategyRun], list[float]],
               tiers: list[str]) -> list[tuple[str, Cell]]:
    return [(f"{label} {tier}", _tier_cell(values, index)) for index, tier in enumerate(tiers)]


def _rows(tiers: list[str]) -> list[tuple[str, Cell]]:
    return [
        *_tier_rows("served", lambda run: run.served.tolist(), tiers),
        *_tier_rows("refused", lambda run: run.refused.tolist(), tiers),
        ("  of which shed (below baseline)", lambda run: f"{run.shed.sum():,.0f}"),
        ("failed (timed out)", lambda run: f"{run.failed.sum():,.0f}"),
        ("minutes melting", lambda run: f"{run.melting_minutes:,.1f}"),
        ("p95 queue wait (s)", lambda run: f"{run.p95_wait_seconds:,.0f}"),
        ("GPU-hours", lambda run: f"{run.gpu_hours:,.0f}"),
        ("served / safe optimum", lambda run: f"{run.optimum_share:.1%}"),
    ]


def format_table(comparison: Comparison) -> str:
    """A fixed-width table: one column per strategy, one row per figure."""
    runs = comparison.runs
    tiers = runs[0].tiers if runs else []
    rows = [(label, [cell(run) for run in runs]) for label, cell in _rows(tiers)]
    label_width = max(len(label) for label, _ in rows)
    widths = [max(len(run.name), *(len(cells[i]) for _, cells in rows))
              for i, run in enumerate(runs)]
    header = " " * label_width + "".join(f"  {run.name:>{w}}" for run, w in
                                         zip(runs, widths, strict=True))
    lines = [_title(comparison), "", header]
    lines += [f"{label:<{label_width}}" + "".join(f"  {c:>{w}}" for c, w in
                                                  zip(cells, widths, strict=True))
              for label, cells in rows]
    lines.append(f"\nsafe-capacity optimum: {comparison.optimum_images:,.0f} images"
                 " (min(demand, all reachable GPUs at the target utilization), step by step)")
    return "\n".join(lines)


def _title(comparison: Comparison) -> str:
    scenario, policy = comparison.scenario, comparison.policy
    name = f"{policy.metadata.namespace or 'default'}/{policy.metadata.name}"
    return (f"meltguard simulate: {scenario.name}, seed {comparison.seed},"
            f" {scenario.duration_seconds / 3600:g} h, at most {scenario.fleet.gpu_supply:,}"
            f" GPUs, policy {name}")


def _per_tier(tiers: list[str], values: list[float]) -> dict[str, float]:
    return {tier: round(value, 1) for tier, value in zip(tiers, values, strict=True)}


def run_json(run: StrategyRun) -> dict[str, Any]:
    """One strategy's totals and time series, camelCase keys."""
    return {
        "served": _per_tier(run.tiers, run.served.tolist()),
        "refused": _per_tier(run.tiers, run.refused.tolist()),
        "shed": _per_tier(run.tiers, run.shed.tolist()),
        "failed": _per_tier(run.tiers, run.failed.tolist()),
        "servedTotal": round(float(run.served.sum()), 1),
        "failedTotal": round(float(run.failed.sum()), 1),
        "outOfOrderSheds": run.out_of_order_sheds,
        "meltingMinutes": run.melting_minutes,
        "p95QueueWaitSeconds": run.p95_wait_seconds,
        "gpuHours": round(run.gpu_hours, 2),
        "optimumShare": round(run.optimum_share, 4),
        "series": {**run.series, "phase": run.phases},
    }


def comparison_json(comparison: Comparison) -> dict[str, Any]:
    """The whole comparison: what was run, the optimum, and every strategy's figures."""
    scenario, policy = comparison.scenario, comparison.policy
    return {
        "scenario": scenario.name,
        "seed": comparison.seed,
        "durationHours": scenario.duration_seconds / 3600,
        "gpuSupply": scenario.fleet.gpu_supply,
        "physicsStepSeconds": scenario.timing.physics_step_seconds,
        "controlTickSeconds": scenario.timing.control_tick_seconds,
        "policy": f"{policy.metadata.namespace or 'default'}/{policy.metadata.name}",
        "optimumImages": round(comparison.optimum_images, 1),
        "strategies": {run.name: run_json(run) for run in comparison.runs},
    }
