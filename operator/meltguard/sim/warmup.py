"""The warm start: the day begins in the steady state of the scenario's normal day.

* Users: before the day, the population plays the normal day's sessions (no surge: it starts
  within the day) with the baseline limits, for long enough that the sessions then begun
  have ended (:data:`SESSIONS_TO_SETTLE` mean sessions of the longest-lasting tier, between
  one hour and a day). So at 00:00 as many users are in session as on any such night, where a
  cold start would have none and its demand would climb for the first quarter of an hour.
  Quota windows are the quota service's own, aligned to the epoch: those that turn over at
  midnight start the day empty, as they would.
* Fleet: ``fleet.initialReplicas`` when the scenario sets it, else as many replicas as the
  policy's target utilization asks for the admitted demand of the warm-up's last half hour,
  already serving, their GPUs in that load's steady state (:meth:`SimulatedFleet.settle`).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np

from meltguard.api.models import PolicySpec
from meltguard.api.quota_models import TierSpec
from meltguard.sim.demand import IntArray, UserPopulation, limits_array
from meltguard.sim.scenario import Scenario

#: Mean sessions of the longest-lasting tier the warm-up lasts: e^-8 of the sessions begun at
#: its start are still going at midnight.
SESSIONS_TO_SETTLE = 8
SHORTEST_WARM_UP_SECONDS = 3600
LONGEST_WARM_UP_SECONDS = 24 * 3600
#: The demand the warm fleet is sized for: the mean over this last part of the warm-up.
RATE_WINDOW_SECONDS = 1800


def warm_up_steps(scenario: Scenario) -> int:
    """Physics steps of the warm-up before the day."""
    longest = max(tier.images_per_session * tier.think_seconds
                  for tier in scenario.demand.tiers.values())
    seconds = min(LONGEST_WARM_UP_SECONDS,
                  max(SHORTEST_WARM_UP_SECONDS, SESSIONS_TO_SETTLE * longest))
    return math.ceil(seconds / scenario.timing.physics_step_seconds)


@dataclass(frozen=True, slots=True)
class WarmStart:
    """Users in session at 00:00 and the fleet that serves them."""

    population: UserPopulation
    images_per_second: float
    replicas: int

    def fresh_population(self) -> UserPopulation:
        """A copy of the users at 00:00 (random state included) for one strategy's run."""
        return copy.deepcopy(self.population)


def steady_replicas(scenario: Scenario, spec: PolicySpec, images_per_second: float) -> int:
    """Replicas that serve ``images_per_second`` at the target utilization, within the
    policy's bounds."""
    fleet = scenario.fleet
    busy_gpus = images_per_second * fleet.gpu_seconds_per_image
    gpus = busy_gpus / (spec.scaling.target_utilization_percent / 100)
    replicas = math.ceil(gpus / fleet.gpus_per_replica)
    return min(spec.max_replicas, max(spec.min_replicas, replicas))


def warm_start(scenario: Scenario, spec: PolicySpec, arrivals: IntArray, *, seed: int,
               start: float) -> WarmStart:
    """Play the warm-up's session ``arrivals`` (one row a step, ending at ``start``) with
    the baseline limits; users drawn from ``seed``."""
    step = scenario.timing.physics_step_seconds
    tiers: list[TierSpec] = list(spec.quotas.tiers)
    population = UserPopulation(scenario, tiers, seed, start - len(arrivals) * step)
    limits = limits_array(tiers, {})
    admitted = [int(population.step(row, limits).admitted.sum()) for row in arrivals]
    last = admitted[-max(1, RATE_WINDOW_SECONDS // step):]
    rate = float(np.mean(last)) / step if last else 0.0
    replicas = scenario.fleet.initial_replicas
    if replicas is None:
        replicas = steady_replicas(scenario, spec, rate)
    return WarmStart(population=population, images_per_second=rate, replicas=replicas)
