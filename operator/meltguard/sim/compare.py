"""One comparison: every strategy against the same users, side by side.

Strategies are independent once the users are drawn, so with ``jobs > 1`` the costliest
(meltguard, which builds a sample per GPU per tick) run in forked processes while this one
runs the cheap baselines and keeps the progress bar moving. The yardstick comes last: it takes
the most demand any run admitted.
"""

from __future__ import annotations

import multiprocessing
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.sharedctypes import Synchronized

import numpy as np
import numpy.typing as npt

from meltguard.api.models import ImageQuotaPolicy
from meltguard.collector import collector_paused
from meltguard.sim.engine import Progress, SharedInputs, StrategyRun, run_strategy, shared_inputs
from meltguard.sim.scenario import Scenario
from meltguard.sim.strategies import HpaStrategy, MeltguardStrategy, Strategy
from meltguard.sim.yardstick import Yardstick, yardstick


@dataclass(frozen=True, slots=True)
class Comparison:
    """The figures of every strategy on one scenario and seed."""

    scenario: Scenario
    policy: ImageQuotaPolicy
    seed: int
    best: Yardstick
    runs: tuple[StrategyRun, ...]

    @property
    def optimum_images(self) -> float:
        """The most images any strategy could have served (the yardstick)."""
        return self.best.images

    @property
    def safe_optimum_images(self) -> float:
        """The most images a fleet could have served with no GPU above its safe limit."""
        return self.best.safe_images

    def best_per_second(self) -> npt.NDArray[np.float64]:
        """The best possible in images per second, one value per control tick."""
        timing = self.scenario.timing
        per_tick = timing.control_tick_seconds // timing.physics_step_seconds
        per_second: npt.NDArray[np.float64] = self.best.per_step.reshape(-1, per_tick) \
            .sum(axis=1) / timing.control_tick_seconds
        return per_second


def default_strategies(scenario: Scenario, policy: ImageQuotaPolicy) -> list[Strategy]:
    """``static-cap``, ``hpa-only`` and ``meltguard`` for this scenario and policy."""
    return [
        HpaStrategy("static-cap", policy.spec, dict(scenario.static_caps)),
        HpaStrategy("hpa-only", policy.spec),
        MeltguardStrategy(policy),
    ]


def total_steps(scenario: Scenario, strategies: int) -> int:
    """Physics steps of a whole comparison, for a progress bar."""
    return scenario.duration_seconds // scenario.timing.physics_step_seconds * strategies


def compare(
    scenario: Scenario,
    policy: ImageQuotaPolicy,
    seed: int,
    *,
    strategies: Sequence[Strategy] | None = None,
    jobs: int = 1,
    progress: Progress | None = None,
) -> Comparison:
    """Run every strategy on the scenario's users (drawn from ``seed``)."""
    chosen = list(strategies) if strategies is not None else default_strategies(scenario, policy)
    # no reference cycles are made: the collector would only rescan the live state, a third of
    # the run; forked workers inherit the pause
    with collector_paused():
        inputs = shared_inputs(scenario, policy, seed)
        if jobs > 1 and "fork" in multiprocessing.get_all_start_methods():
            runs = _run_forked(inputs, chosen, jobs, progress)
        else:
            runs = [run_strategy(inputs, strategy, progress) for strategy in chosen]
        best = yardstick(inputs, runs)
    for run in runs:
        run.optimum_share = _share(float(run.served.sum()), best.images)
        run.safe_share = _share(float(run.served.sum()), best.safe_images)
    return Comparison(scenario, policy, seed, best, tuple(runs))


def _share(served: float, best: float) -> float:
    return served / best if best > 0 else 0.0


def _run_forked(inputs: SharedInputs, strategies: list[Strategy], jobs: int,
                progress: Progress | None) -> list[StrategyRun]:
    """The costliest strategies (meltguard first), up to ``jobs - 1``, each in a forked
    worker; the others in this process meanwhile."""
    context = multiprocessing.get_context("fork")
    by_cost = sorted(strategies, key=lambda s: not isinstance(s, MeltguardStrategy))
    forked, local = by_cost[:jobs - 1], by_cost[jobs - 1:]
    relay = _ProgressRelay(progress, context.Value("q", 0))
    workers = []
    for strategy in forked:
        receiver, sender = context.Pipe(duplex=False)
        worker = context.Process(target=_child, daemon=True,
                                 args=(inputs, strategy, sender, relay.worker_steps))
        worker.start()
        sender.close()
        workers.append((receiver, worker))
    results = [run_strategy(inputs, strategy, relay.advance) for strategy in local]
    results += _collect([receiver for receiver, _ in workers], relay)
    for _, worker in workers:
        worker.join()
    by_name = {run.name: run for run in results}
    return [by_name[strategy.name] for strategy in strategies]


class _ProgressRelay:
    """One progress count for this process's steps plus those its workers report."""

    def __init__(self, progress: Progress | None, worker_steps: Synchronized[int]) -> None:
        self._progress = progress
        self.worker_steps = worker_steps
        self._reported = 0

    def advance(self, steps: int = 0) -> None:
        """Add ``steps`` done here and whatever the workers did since the last call."""
        if self._progress is None:
            return
        done = self.worker_steps.value
        self._progress(steps + done - self._reported)
        self._reported = done


def _collect(pipes: list[Connection], relay: _ProgressRelay) -> list[StrategyRun]:
    results: list[StrategyRun] = []
    waiting = list(pipes)
    while waiting:
        for ready in wait(waiting, timeout=0.1):
            assert isinstance(ready, Connection)
            results.append(_receive(ready))
            waiting.remove(ready)
        relay.advance()
    return results


def _receive(pipe: Connection) -> StrategyRun:
    try:
        outcome = pipe.recv()
    except EOFError:
        raise RuntimeError("a strategy's worker process died without a result") from None
    if isinstance(outcome, str):
        raise RuntimeError(f"a strategy failed in its worker process:\n{outcome}")
    assert isinstance(outcome, StrategyRun)
    return outcome


def _child(inputs: SharedInputs, strategy: Strategy, pipe: Connection,
           steps_done: Synchronized[int]) -> None:
    def count(steps: int) -> None:
        with steps_done.get_lock():
            steps_done.value += steps

    try:
        pipe.send(run_strategy(inputs, strategy, count))
    except Exception:  # any failure goes to the parent, which raises it
        pipe.send(traceback.format_exc())
    finally:
        pipe.close()
