"""The simulation loop: the same users, the same fleet, one strategy at a time.

Time steps (the choice that keeps 24 hours x 1,000 GPUs x 3 strategies under 10 seconds on
two cores): demand, queue and heat advance every ``physicsStepSeconds`` (30 s in the built-in
scenario), and strategies decide every ``controlTickSeconds`` (60 s). The control tick is
coarser than a real operator's ``intervalSeconds`` (5 s) because the meltguard strategy builds
one :class:`~meltguard.core.observation.GpuSample` per allocated GPU and runs ``decide()`` over
them: about 3 us to build a sample plus 1-2 us in ``decide()`` per GPU and tick, so 1,440
ticks x 1,000 GPUs cost ~5-7 s at worst; it runs in its own process beside the two baselines
(:mod:`meltguard.sim.compare`). Time-based rules of the policy (``sustainSeconds``,
``graceSeconds``, tighten and relax intervals, HPA windows) are evaluated on the ticks, so they
round up to whole ticks. Temperatures step exactly (exponential update) and queue waits are
interpolated within a step, so the coarse physics step loses little accuracy.

Figures (all strategies measured the same way):

* served, refused, failed images per tier; ``shed`` = refused below the tier's baseline
  limit, i.e. only because the limit was tightened;
* ``outOfOrderSheds``: shed requests of a tier while an earlier tier (shed first) was still
  above its floor, i.e. a violation of the shed order;
* melting minutes (see :mod:`meltguard.sim.fleet`), p95 queue wait, GPU-hours held;
* ``optimumShare``: served / sum over steps of min(demand, safe capacity), where demand is
  what users ask within the baseline limits (a run of the same users with baseline limits and
  unbounded capacity) and safe capacity is what all GPUs the Deployment could get
  (``min(gpuSupply, maxReplicas x gpusPerReplica)``) serve at the policy's target utilization.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from meltguard.api.models import ImageQuotaPolicy, PolicySpec, TierSpec
from meltguard.sim.demand import UNLIMITED, UserPopulation, limits_array
from meltguard.sim.fleet import SimulatedFleet
from meltguard.sim.scenario import Scenario
from meltguard.sim.strategies import Control, Strategy

#: 2025-03-26T00:00:00Z, the day the surge began (seconds since the epoch).
SIMULATION_START = 1_742_947_200.0

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Progress = Callable[[int], None]

#: Names of the per-tick time series, in the order they are recorded.
SERIES_NAMES = (
    "hour", "demandPerSecond", "servedPerSecond", "refusedPerSecond", "failedPerSecond",
    "capacityPerSecond", "replicas", "desiredReplicas", "pendingReplicas",
    "meanTemperatureCelsius", "maxTemperatureCelsius", "meltingFraction", "firstTierLimit",
)


@dataclass
class StrategyRun:
    """Totals and time series of one strategy over the scenario."""

    name: str
    tiers: list[str]
    served: FloatArray
    refused: IntArray
    shed: IntArray
    failed: FloatArray
    out_of_order_sheds: int = 0
    melting_minutes: float = 0.0
    p95_wait_seconds: float = 0.0
    gpu_hours: float = 0.0
    optimum_share: float = 0.0
    series: dict[str, list[float | None]] = field(default_factory=dict)
    phases: list[str | None] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SharedInputs:
    """What every strategy of one run shares: the scenario, its policy, users and seed."""

    scenario: Scenario
    policy: ImageQuotaPolicy
    arrivals: IntArray
    seed: int

    @property
    def tiers(self) -> list[TierSpec]:
        """The policy's tiers in shed order."""
        return list(self.policy.spec.quotas.tiers)


def safe_capacity_per_second(scenario: Scenario, spec: PolicySpec) -> float:
    """Images per second all GPUs the Deployment can get serve at the target utilization."""
    gpus = min(scenario.fleet.gpu_supply, spec.max_replicas * scenario.fleet.gpus_per_replica)
    full_speed = gpus / scenario.fleet.gpu_seconds_per_image
    return full_speed * spec.scaling.target_utilization_percent / 100


def baseline_demand(inputs: SharedInputs) -> IntArray:
    """Images users ask for in each step within the baseline limits (all tiers together)."""
    population = UserPopulation(inputs.scenario, inputs.tiers, inputs.seed + 1,
                                SIMULATION_START)
    limits = limits_array(inputs.tiers, {})
    return np.array([population.step(row, limits).admitted.sum() for row in inputs.arrivals])


def optimum_images(inputs: SharedInputs) -> float:
    """The safe-capacity optimum: sum over steps of min(demand, safe capacity)."""
    demand = baseline_demand(inputs)
    per_step = safe_capacity_per_second(inputs.scenario, inputs.policy.spec) \
        * inputs.scenario.timing.physics_step_seconds
    return float(np.minimum(demand, per_step).sum())


class _Recorder:
    """Accumulates one strategy's figures step by step and tick by tick."""

    def __init__(self, inputs: SharedInputs, name: str) -> None:
        tiers = len(inputs.tiers)
        self.run = StrategyRun(
            name=name, tiers=[t.name for t in inputs.tiers],
            served=np.zeros(tiers), refused=np.zeros(tiers, dtype=np.int64),
            shed=np.zeros(tiers, dtype=np.int64), failed=np.zeros(tiers),
            series={key: [] for key in SERIES_NAMES},
        )
        self._tiers = inputs.tiers
        self._step = inputs.scenario.timing.physics_step_seconds
        self._tick = _TickSums()

    def step(self, limits: IntArray, admitted: IntArray, refused: IntArray,
             shed: IntArray, served: FloatArray, failed: FloatArray, melting: bool) -> None:
        run = self.run
        run.served += served
        run.refused += refused
        run.shed += shed
        run.failed += failed
        run.out_of_order_sheds += self._out_of_order(limits, shed)
        if melting:
            run.melting_minutes += self._step / 60
        self._tick.add(admitted.sum() + refused.sum(), served.sum(), refused.sum(), failed.sum())

    def _out_of_order(self, limits: IntArray, shed: IntArray) -> int:
        count = 0
        earlier_above_floor = False
        for index, tier in enumerate(self._tiers):
            if earlier_above_floor:
                count += int(shed[index])
            if not tier.unlimited and limits[index] > tier.floor:
                earlier_above_floor = True
        return count

    def tick(self, now: float, fleet: SimulatedFleet, control: Control, limits: IntArray
             ) -> None:
        series = self.run.series
        seconds = self._tick.steps * self._step or 1
        series["hour"].append(round((now - SIMULATION_START) / 3600, 4))
        for key, total in zip(("demandPerSecond", "servedPerSecond", "refusedPerSecond",
                               "failedPerSecond"), self._tick.totals(), strict=True):
            series[key].append(round(total / seconds, 3))
        temperatures = fleet.allocated_temperatures()
        hottest = round(float(temperatures.max()), 2) if temperatures.size else None
        mean = round(float(temperatures.mean()), 2) if temperatures.size else None
        series["capacityPerSecond"].append(round(fleet.capacity_per_second(), 3))
        series["replicas"].append(len(fleet.replicas))
        series["desiredReplicas"].append(fleet.desired)
        series["pendingReplicas"].append(fleet.pending)
        series["meanTemperatureCelsius"].append(mean)
        series["maxTemperatureCelsius"].append(hottest)
        series["meltingFraction"].append(round(fleet.melting_fraction, 4))
        series["firstTierLimit"].append(None if limits[0] == UNLIMITED else float(limits[0]))
        self.run.phases.append(control.phase)
        self._tick = _TickSums()

    def finish(self, fleet: SimulatedFleet, gpu_seconds: float) -> StrategyRun:
        self.run.p95_wait_seconds = fleet.waits.percentile(0.95)
        self.run.gpu_hours = gpu_seconds / 3600
        return self.run


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


def run_strategy(inputs: SharedInputs, strategy: Strategy, progress: Progress | None = None
                 ) -> StrategyRun:
    """Play the scenario's users against one strategy; returns its figures."""
    scenario = inputs.scenario
    step = scenario.timing.physics_step_seconds
    steps_per_tick = scenario.timing.control_tick_seconds // step
    population = UserPopulation(scenario, inputs.tiers, inputs.seed + 1, SIMULATION_START)
    fleet = SimulatedFleet(scenario.fleet, inputs.policy.spec.melt, len(inputs.tiers), step,
                           inputs.seed + 2)
    recorder = _Recorder(inputs, strategy.name)
    control = Control(fleet.desired, {t.name: t.limit for t in inputs.tiers})
    limits = limits_array(inputs.tiers, control.limits)
    gpu_seconds = 0.0
    for index, arrivals in enumerate(inputs.arrivals):
        now = SIMULATION_START + index * step
        if index % steps_per_tick == 0:
            if index:
                recorder.tick(now, fleet, control, limits)
                if progress:
                    progress(steps_per_tick)
            control = strategy.control(now, fleet)
            fleet.scale_to(control.replicas, now)
            limits = limits_array(inputs.tiers, control.limits)
        quota = population.step(arrivals, limits)
        outcome = fleet.step(now, quota.admitted)
        gpu_seconds += fleet.allocated_gpus * step
        recorder.step(limits, quota.admitted, quota.refused, quota.shed,
                      outcome.served, outcome.failed, fleet.fleet_melting)
    recorder.tick(SIMULATION_START + len(inputs.arrivals) * step, fleet, control, limits)
    if progress:
        progress(steps_per_tick)
    return recorder.finish(fleet, gpu_seconds)
