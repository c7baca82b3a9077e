"""The yardstick: the most images any strategy could serve under the same physics and demand.

It is an upper bound by construction, so ``served / optimum`` never passes 100%:

* Capacity: every GPU the Deployment may hold (``min(gpuSupply, maxReplicas x
  gpusPerReplica)``, in whole replicas; the best ones when the cluster has more) serves from
  the first second of the day, with no start-up and nothing Pending, each at the most its
  profile allows from the coolest temperature it could be at.
* Demand: in each step, the most requests any run admitted: the demand of users all kept to
  the baseline limits (nobody shed), and each compared strategy's own admitted requests (users
  who are refused behave differently afterwards, so a strategy's users are not quite the
  same; a strategy cannot serve what it did not admit).
* Service: one queue in front of all those GPUs, oldest first, with the fleet's timeout rule
  (:func:`~meltguard.sim.queues.max_age_steps`). When every request costs the same, serving
  the oldest first serves the most in time (swapping a younger one in never lets more
  through), and pooling the GPUs' queues only adds choices.

A strategy's GPUs are some of these, none faster, and its requests some of these, none more
patient: it cannot serve more. It can serve less, and does, by needing time to scale, by
spreading requests evenly over slow and fast GPUs, and by refusing or failing requests.

The safe best is the second figure: the most a fleet could serve while keeping every GPU at or
under the temperature the policy calls melting. Where cooling fails, the best possible counts
the overheating GPUs as if they ran flat out, which only a fleet that melts them approaches;
the safe best does not. It takes the same demand and the same pooled queue, oldest first; only
the capacity of each step differs:

* Each reachable GPU's steady share: the largest work share whose steady-state temperature
  stays at or under ``min(its profile's slowdownCelsius, spec.melt.temperatureCelsius)``
  (:meth:`~meltguard.sim.thermal.ThermalConstants.steady_max_work`).
* The fleet spreads requests evenly over its serving GPUs (:mod:`meltguard.sim.fleet`), so
  ``n`` GPUs held do at most ``n`` times the lowest share among them; the best ``n`` are those
  with the highest shares, and the best count is the one whose ``n x`` (the ``n``-th highest
  share) is largest, up to every reachable GPU. Holding fewer can win: on cooling-failure,
  the 752 well-cooled GPUs at full load serve more than all 1,000 held to the 72% that the
  hottest ones can keep up under 85 C.
* The safe capacity of a step is the lower of that and the best possible's capacity.

Where no GPU's steady full load passes the limit (an h200 settles at 59.5 C, far under 85 C)
the two are equal. A strategy that does overheat its GPUs can serve more than the safe best:
its share of it may pass 100%.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from meltguard.sim.demand import limits_array
from meltguard.sim.engine import SIMULATION_START, SharedInputs, StrategyRun
from meltguard.sim.queues import max_age_steps
from meltguard.sim.thermal import ThermalConstants

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Yardstick:
    """The best possible (images in all, and per physics step) and the safe best (images in
    all)."""

    images: float
    per_step: FloatArray
    safe_images: float


def reachable_gpus(inputs: SharedInputs) -> int:
    """GPUs the Deployment could hold at most: whole replicas within supply and maxReplicas."""
    fleet, spec = inputs.scenario.fleet, inputs.policy.spec
    per_replica = fleet.gpus_per_replica
    return min(spec.max_replicas, fleet.gpu_supply // per_replica) * per_replica


def capacity_per_step(inputs: SharedInputs) -> FloatArray:
    """Images the reachable GPUs could make in each physics step, at best."""
    step = inputs.scenario.timing.physics_step_seconds
    coolest = inputs.cooling_plan().coolest_celsius()
    gpus = reachable_gpus(inputs)

    def best_shares(constants: ThermalConstants) -> float:
        shares = np.sort(constants.max_work(coolest, step))[::-1]
        return float(shares[:gpus].sum())

    return _per_step(inputs, best_shares)


def safe_capacity_per_step(inputs: SharedInputs, capacity: FloatArray) -> FloatArray:
    """Images the reachable GPUs could make in each physics step with none of them ever
    above its safe limit (see the module docstring), at most ``capacity`` (the best
    possible's, per step)."""
    melt = inputs.policy.spec.melt.temperature_celsius
    gpus = reachable_gpus(inputs)

    def safe_shares(constants: ThermalConstants) -> float:
        limit = np.minimum(constants.slowdown_celsius, melt)
        shares = np.sort(constants.steady_max_work(limit))[::-1][:gpus]
        held = np.arange(1, len(shares) + 1)
        return float((held * shares).max(initial=0.0))

    return np.minimum(capacity, _per_step(inputs, safe_shares))


def _per_step(inputs: SharedInputs, shares: Callable[[ThermalConstants], float]) -> FloatArray:
    """Images per physics step of ``shares`` (full-speed GPUs' worth, from the constants in
    force), worked out once per set of cooling failures under way."""
    scenario = inputs.scenario
    step = scenario.timing.physics_step_seconds
    plan = inputs.cooling_plan()
    full_speed = step / scenario.fleet.gpu_seconds_per_image
    by_failures: dict[tuple[bool, ...], float] = {}
    capacity = np.empty(len(inputs.arrivals))
    for index in range(len(capacity)):
        now = SIMULATION_START + index * step
        active = plan.active(now)
        if active not in by_failures:
            by_failures[active] = shares(plan.at(now)) * full_speed
        capacity[index] = by_failures[active]
    return capacity


def best_served(demand: Sequence[float], capacity: Sequence[float], oldest: int) -> FloatArray:
    """Images served per step by one pooled queue, oldest first, each request served at
    most ``oldest`` steps after its arrival step (the fleet's own rule)."""
    waiting = [0.0] * (oldest + 1)  # by age in steps, newest first
    served = np.zeros(len(demand))
    for index, (arriving, room) in enumerate(zip(demand, capacity, strict=True)):
        waiting = [float(arriving), *waiting[:-1]]
        for age in range(oldest, -1, -1):
            taken = min(waiting[age], room)
            waiting[age] -= taken
            room -= taken
            served[index] += taken
        waiting[oldest] = 0.0
    return served


def unshed_demand(inputs: SharedInputs) -> IntArray:
    """Requests admitted in each step when every tier keeps its baseline limit all day."""
    population = inputs.warm.fresh_population()
    limits = limits_array(inputs.tiers, {})
    return np.array([population.step(row, limits).admitted.sum() for row in inputs.arrivals],
                    dtype=np.int64)


def yardstick(inputs: SharedInputs, runs: Sequence[StrategyRun]) -> Yardstick:
    """The best possible and the safe best for these inputs and runs (see the module
    docstring)."""
    # a run that kept the baseline limits all day met exactly the unshed demand (same users,
    # same random draws), so it need not be played again
    streams = [run.admitted for run in runs]
    if not any(run.kept_baseline_limits for run in runs):
        streams.append(unshed_demand(inputs))
    demand = np.max(streams, axis=0) if streams else np.zeros(len(inputs.arrivals))
    scenario = inputs.scenario
    oldest = max_age_steps(scenario.fleet.request_timeout_seconds,
                           scenario.timing.physics_step_seconds)
    capacity = capacity_per_step(inputs)
    served = best_served(demand.tolist(), capacity.tolist(), oldest)
    safe = best_served(demand.tolist(), safe_capacity_per_step(inputs, capacity).tolist(),
                       oldest)
    return Yardstick(images=float(served.sum()), per_step=served, safe_images=float(safe.sum()))
