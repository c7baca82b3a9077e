"""Several comparisons at once: scenarios times seeds, spread over processes.

Each (scenario, seed) comparison is independent, so with ``jobs > 1`` they run in a pool of
forked processes, the costliest first (the longest days with the most GPUs), each comparison
in one process. Results come back in the order asked for.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from meltguard.api.models import ImageQuotaPolicy
from meltguard.collector import collector_paused
from meltguard.sim.compare import Comparison, compare, default_strategies, total_steps
from meltguard.sim.scenario import Scenario

Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class Case:
    """One scenario with the policy to run and the seeds to run it with."""

    scenario: Scenario
    policy: ImageQuotaPolicy
    seeds: tuple[int, ...]


def seeds_from(first: int, count: int) -> tuple[int, ...]:
    """``count`` seeds from ``first`` on."""
    return tuple(range(first, first + count))


def case_steps(case: Case) -> int:
    """Physics steps of all of a case's comparisons, for a progress bar."""
    strategies = len(default_strategies(case.scenario, case.policy))
    return total_steps(case.scenario, strategies) * len(case.seeds)


def _cost(task: tuple[Scenario, ImageQuotaPolicy, int]) -> float:
    scenario = task[0]
    return scenario.duration_seconds * scenario.fleet.gpu_supply


def _compare(task: tuple[Scenario, ImageQuotaPolicy, int]) -> Comparison:
    scenario, policy, seed = task
    return compare(scenario, policy, seed)


def run_cases(cases: Sequence[Case], *, jobs: int, progress: Progress | None = None
              ) -> list[list[Comparison]]:
    """Every case's comparisons (one per seed, in seed order), in the order of ``cases``."""
    tasks = [(case.scenario, case.policy, seed) for case in cases for seed in case.seeds]
    if jobs > 1 and len(tasks) > 1 and "fork" in multiprocessing.get_all_start_methods():
        results = _run_pooled(tasks, jobs, progress)
    else:
        results = []
        for task in tasks:
            results.append(_compare(task))
            if progress:
                progress(_steps(results[-1]))
    grouped: list[list[Comparison]] = []
    position = 0
    for case in cases:
        grouped.append(results[position:position + len(case.seeds)])
        position += len(case.seeds)
    return grouped


def _steps(comparison: Comparison) -> int:
    return total_steps(comparison.scenario, len(comparison.runs))


def _run_pooled(tasks: list[tuple[Scenario, ImageQuotaPolicy, int]], jobs: int,
                progress: Progress | None) -> list[Comparison]:
    order = sorted(range(len(tasks)), key=lambda index: -_cost(tasks[index]))
    results: list[Comparison | None] = [None] * len(tasks)
    context = multiprocessing.get_context("fork")
    with collector_paused(), context.Pool(min(jobs, len(tasks))) as pool:
        done = pool.imap(_compare, [tasks[index] for index in order])
        for index, comparison in zip(order, done, strict=True):
            results[index] = comparison
            if progress:
                progress(_steps(comparison))
    return [comparison for comparison in results if comparison is not None]
