"""The simulation loop: the same users, the same fleet, one strategy at a time.

Time steps: demand, queues and heat advance every ``physicsStepSeconds`` (60 s in the built-in
scenarios: a GPU's temperature settles within seconds), and strategies decide every
``controlTickSeconds`` (60 s). The control tick is coarser than a real operator's
``intervalSeconds`` (5 s) because the meltguard strategy builds one
:class:`~meltguard.core.observation.GpuSample` per allocated GPU and runs ``decide()`` over
them, the costliest part of a run (``bench/simulate.py`` measures it); it runs in its own
process beside the two baselines (:mod:`meltguard.sim.compare`). Time-based rules of the policy
(``sustainSeconds``, ``graceSeconds``, tighten and relax intervals, HPA windows) are evaluated
on the ticks, so they round up to whole ticks. Temperatures step exactly (exponential update)
and queue waits are placed within a step, so the coarse physics step loses little.

The day starts warm (:mod:`meltguard.sim.warmup`). Figures (all strategies measured alike):

* served, refused, failed images per tier; ``shed`` = refused below the tier's baseline
  limit, i.e. only because the limit was tightened;
* ``outOfOrderSheds``: shed requests of a tier while an earlier tier (shed first) was still
  above its floor, i.e. a violation of the shed order;
* the share of admitted requests answered within the scenario's ``latencySloSeconds``;
* melting GPU-minutes (thermally throttled or at or above slowdown, see
  :mod:`meltguard.sim.fleet`), GPU-hours held;
* ``quotaChanges``: how many times each tier's limit in force changed;
* ``optimumShare``: served over the best possible (:mod:`meltguard.sim.yardstick`);
* ``safeOptimumShare``: served over the safe best, the most a fleet could serve with every GPU
  at or under the policy's melting temperature (the same module); it passes 100% for a
  strategy that serves more by overheating its GPUs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from meltguard.api.models import ImageQuotaPolicy
from meltguard.api.quota_models import TierSpec
from meltguard.sim.demand import UNLIMITED, QuotaOutcome, draw_session_arrivals, limits_array
from meltguard.sim.fleet import SimulatedFleet, StepOutcome
from meltguard.sim.scenario import Scenario
from meltguard.sim.strategies import Control, Strategy
from meltguard.sim.thermal import CoolingPlan
from meltguard.sim.warmup import WarmStart, warm_start, warm_up_steps

#: 2025-03-26T00:00:00Z, the day the surge began (seconds since the epoch).
SIMULATION_START = 1_742_947_200.0

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Progress = Callable[[int], None]

#: Names of the per-tick time series, in the order they are recorded.
SERIES_NAMES = (
    "hour", "demandPerSecond", "servedPerSecond", "refusedPerSecond", "failedPerSecond",
    "capacityPerSecond", "replicas", "desiredReplicas", "pendingReplicas", "meanUtilization",
    "meanTemperatureCelsius", "maxTemperatureCelsius", "meltingGpus", "firstTierLimit",
)


@dataclass
class StrategyRun:
    """Totals and time series of one strategy over the scenario.

    ``admitted`` holds the requests let in, step by step (all tiers): the yardstick's demand.
    """

    name: str
    tiers: list[str]
    served: FloatArray
    refused: IntArray
    shed: IntArray
    failed: FloatArray
    admitted: IntArray
    answered_within_slo: float = 0.0
    out_of_order_sheds: int = 0
    melting_gpu_minutes: float = 0.0
    gpu_hours: float = 0.0
    optimum_share: float = 0.0
    #: served over the safe best; above 1 when the strategy overheated GPUs to serve more
    safe_share: float = 0.0
    kept_baseline_limits: bool = True
    #: how many times each tier's limit in force changed (at control ticks)
    quota_changes: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    series: dict[str, list[float | None]] = field(default_factory=dict)
    phases: list[str | None] = field(default_factory=list)

    @property
    def slo_share(self) -> float:
        """Share of the admitted requests answered within the latency SLO (1 with none)."""
        total = float(self.admitted.sum())
        return self.answered_within_slo / total if total > 0 else 1.0


@dataclass(frozen=True, slots=True)
class SharedInputs:
    """What every strategy of one run shares: the scenario, its policy, users and seed."""

    scenario: Scenario
    policy: ImageQuotaPolicy
    arrivals: IntArray
    seed: int
    warm: WarmStart

    @property
    def tiers(self) -> list[TierSpec]:
        """The policy's tiers in shed order."""
        return list(self.policy.spec.quotas.tiers)

    def cooling_plan(self) -> CoolingPlan:
        """The fleet's GPUs and their profiles over the day (the same for every strategy)."""
        return CoolingPlan.of_scenario(self.scenario, seed=self.seed + 2,
                                       start=SIMULATION_START)


def shared_inputs(scenario: Scenario, policy: ImageQuotaPolicy, seed: int) -> SharedInputs:
    """Draw the users of ``seed`` (warm-up included) and warm the day's start."""
    tiers = [tier.name for tier in policy.spec.quotas.tiers]
    warm_steps = warm_up_steps(scenario)
    arrivals = draw_session_arrivals(scenario, tiers, seed, warm_up_steps=warm_steps)
    warm = warm_start(scenario, policy.spec, arrivals[:warm_steps], seed=seed + 1,
                      start=SIMULATION_START)
    return SharedInputs(scenario, policy, arrivals[warm_steps:], seed, warm)


class _Recorder:
    """Accumulates one strategy's figures step by step and tick by tick."""

    def __init__(self, inputs: SharedInputs, name: str) -> None:
        tiers = len(inputs.tiers)
        self.run = StrategyRun(
            name=name, tiers=[t.name for t in inputs.tiers],
            served=np.zeros(tiers), refused=np.zeros(tiers, dtype=np.int64),
            shed=np.zeros(tiers, dtype=np.int64), failed=np.zeros(tiers),
            admitted=np.zeros(len(inputs.arrivals), dtype=np.int64),
            series={key: [] for key in SERIES_NAMES},
            quota_changes=np.zeros(tiers, dtype=np.int64),
        )
        self._tiers = inputs.tiers
        self._baseline = self.limits = limits_array(inputs.tiers, {})
        self._out_of_order_from = self._first_shed_out_of_order(self.limits)
        self._step = inputs.scenario.timing.physics_step_seconds
        self._tick = _TickSums()

    def set_limits(self, limits: FloatArray) -> None:
        """Put ``limits`` in force (at a control tick; a step follows every tick)."""
        previous, self.limits = self.limits, limits
        if limits.tolist() == previous.tolist():
            return
        run = self.run
        run.quota_changes += previous != limits
        if run.kept_baseline_limits and not np.array_equal(limits, self._baseline):
            run.kept_baseline_limits = False
        self._out_of_order_from = self._first_shed_out_of_order(limits)

    def step(self, index: int, quota: QuotaOutcome, outcome: StepOutcome,
             melting_gpus: int) -> None:
        run = self.run
        run.served += outcome.served
        run.refused += quota.refused
        run.shed += quota.shed
        run.failed += outcome.failed
        run.out_of_order_sheds += sum(quota.shed.tolist()[self._out_of_order_from:])
        run.melting_gpu_minutes += melting_gpus * self._step / 60
        # whole requests: any order sums them exactly
        admitted, refused = sum(quota.admitted.tolist()), sum(quota.refused.tolist())
        run.admitted[index] = admitted
        self._tick.add(admitted + refused, float(outcome.served.sum()), refused,
                       float(outcome.failed.sum()))

    def _first_shed_out_of_order(self, limits: FloatArray) -> int:
        """The first tier whose sheds break the shed order under ``limits``: the one after
        the first tier above its floor (the tiers after it too)."""
        for index, tier in enumerate(self._tiers):
            if not tier.unlimited and limits[index] > tier.floor:
                return index + 1
        return len(self._tiers)

    def tick(self, now: float, fleet: SimulatedFleet, control: Control) -> None:
        limits = self.limits
        series = self.run.series
        seconds = self._tick.steps * self._step or 1
        series["hour"].append(round((now - SIMULATION_START) / 3600, 4))
        for key, total in zip(("demandPerSecond", "servedPerSecond", "refusedPerSecond",
                               "failedPerSecond"), self._tick.totals(), strict=True):
            series[key].append(round(float(total) / seconds, 3))
        temperatures = fleet.allocated_temperatures()
        held = temperatures.size
        hottest = round(float(temperatures.max()), 2) if held else None
        mean = round(float(temperatures.sum()) / held, 2) if held else None
        series["capacityPerSecond"].append(round(fleet.capacity_per_second(), 3))
        series["replicas"].append(len(fleet.replicas))
        series["desiredReplicas"].append(fleet.desired)
        series["pendingReplicas"].append(fleet.pending)
        series["meanUtilization"].append(round(fleet.mean_utilization(), 4))
        series["meanTemperatureCelsius"].append(mean)
        series["maxTemperatureCelsius"].append(hottest)
        series["meltingGpus"].append(fleet.melting_gpus)
        series["firstTierLimit"].append(None if limits[0] == UNLIMITED else float(limits[0]))
        self.run.phases.append(control.phase)
        self._tick = _TickSums()

    def finish(self, fleet: SimulatedFleet, gpu_seconds: float) -> StrategyRun:
        run = self.run
        run.answered_within_slo = fleet.queues.answered_within_slo
        run.gpu_hours = gpu_seconds / 3600
        return run


@dataclass
class _TickSums:
    steps: int = 0
    demand: float = 0.0
    served: float = 0.0
    refused: float = 0.0
    failed: float = 0.0

    def add(self, demand: float, served: float, refused: float, failed: float) -> None:
        self.steps += 1
        self.demand += demand
        self.served += served
        self.refused += refused
        self.failed += failed

    def totals(self) -> tuple[float, float, float, float]:
        return self.demand, self.served, self.refused, self.failed


def warm_fleet(inputs: SharedInputs) -> SimulatedFleet:
    """The fleet at 00:00: the warm start's replicas serving the normal night's load."""
    scenario = inputs.scenario
    fleet = SimulatedFleet(scenario.fleet, inputs.cooling_plan(), tier_count=len(inputs.tiers),
                           step_seconds=scenario.timing.physics_step_seconds,
                           initial_replicas=inputs.warm.replicas,
                           slo_seconds=scenario.latency_slo_seconds)
    fleet.settle(inputs.warm.images_per_second)
    return fleet


def run_strategy(inputs: SharedInputs, strategy: Strategy, progress: Progress | None = None
                 ) -> StrategyRun:
    """Play the scenario's users against one strategy; returns its figures."""
    scenario = inputs.scenario
    step = scenario.timing.physics_step_seconds
    steps_per_tick = scenario.timing.control_tick_seconds // step
    population = inputs.warm.fresh_population()
    fleet = warm_fleet(inputs)
    recorder = _Recorder(inputs, strategy.name)
    control = Control(fleet.desired, {t.name: t.limit for t in inputs.tiers})
    gpu_seconds = 0.0
    for index, arrivals in enumerate(inputs.arrivals):
        now = SIMULATION_START + index * step
        if index % steps_per_tick == 0:
            if index:
                recorder.tick(now, fleet, control)
                if progress:
                    progress(steps_per_tick)
            control = strategy.control(now, fleet, population.demand_signal(now))
            fleet.scale_to(control.replicas, now)
            recorder.set_limits(limits_array(inputs.tiers, control.limits))
        quota = population.step(arrivals, recorder.limits)
        outcome = fleet.step(now, quota.admitted)
        gpu_seconds += fleet.allocated_gpus * step
        recorder.step(index, quota, outcome, fleet.melting_gpus)
    recorder.tick(SIMULATION_START + len(inputs.arrivals) * step, fleet, control)
    if progress:
        progress(steps_per_tick)
    return recorder.finish(fleet, gpu_seconds)
