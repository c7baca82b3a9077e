"""The day starts warm: the users and the fleet of the normal night, not an empty world."""

from __future__ import annotations

import math

import numpy as np
import pytest

from meltguard.api.models import ImageQuotaPolicy
from meltguard.sim.compare import compare
from meltguard.sim.demand import UserPopulation, limits_array
from meltguard.sim.engine import SIMULATION_START, shared_inputs
from meltguard.sim.scenario import Scenario, load_scenario, parse_scenario
from meltguard.sim.warmup import steady_replicas, warm_up_steps
from tests.sim.conftest import small_document

FIRST_STEPS = 15  # the first quarter of an hour (one-minute steps)


@pytest.fixture(scope="module")
def quiet_night() -> tuple[Scenario, ImageQuotaPolicy]:
    """normal-day's first two hours."""
    scenario, policy = load_scenario("normal-day")
    return scenario.model_copy(update={"duration_hours": 2}), policy


def test_the_day_starts_with_the_users_of_the_normal_night(
    quiet_night: tuple[Scenario, ImageQuotaPolicy]
) -> None:
    scenario, policy = quiet_night
    inputs = shared_inputs(scenario, policy, seed=2025)
    warm = inputs.warm.fresh_population()
    cold = UserPopulation(scenario, inputs.tiers, 2026, SIMULATION_START)
    limits = limits_array(inputs.tiers, {})
    step = scenario.timing.physics_step_seconds
    admitted = {name: [population.step(row, limits).admitted.sum() / step
                       for row in inputs.arrivals[:FIRST_STEPS]]
                for name, population in (("warm", warm), ("cold", cold))}
    assert np.mean(admitted["warm"]) == pytest.approx(inputs.warm.images_per_second, rel=0.15)
    assert admitted["warm"][0] == pytest.approx(inputs.warm.images_per_second, rel=0.2)
    # what the cold start got wrong: hardly anyone at midnight, then a climb
    assert admitted["cold"][0] < 0.3 * admitted["warm"][0]


def test_the_fleet_starts_sized_for_that_demand_and_stays(
    quiet_night: tuple[Scenario, ImageQuotaPolicy]
) -> None:
    scenario, policy = quiet_night
    comparison = compare(scenario, policy, seed=2025)
    inputs = shared_inputs(scenario, policy, seed=2025)
    replicas = inputs.warm.replicas
    target = policy.spec.scaling.target_utilization_percent / 100
    assert replicas == math.ceil(inputs.warm.images_per_second
                                 * scenario.fleet.gpu_seconds_per_image / target)
    assert replicas == steady_replicas(scenario, policy.spec, inputs.warm.images_per_second)
    by_name = {run.name: run for run in comparison.runs}
    for name in ("hpa-only", "meltguard"):
        series = by_name[name].series
        assert series["replicas"][0] == replicas
        assert series["meanUtilization"][0] == pytest.approx(target, abs=0.1)
        first_hour = series["desiredReplicas"][:60]
        assert min(first_hour) >= 0.85 * replicas, name  # no spurious scale-down at 00:00
    meltguard = by_name["meltguard"]
    assert "Melting" not in meltguard.phases
    assert set(meltguard.series["firstTierLimit"]) == {float(policy.spec.quotas.tiers[0].limit)}


def test_a_scenario_may_still_pin_the_first_replicas() -> None:
    scenario, policy = parse_scenario(small_document(fleet={"gpuSupply": 40,
                                                            "initialReplicas": 17}), "pinned")
    assert shared_inputs(scenario, policy, seed=1).warm.replicas == 17


def test_the_warm_up_lasts_eight_sessions_between_an_hour_and_a_day() -> None:
    brief = {"dailyUsers": 10, "imagesPerSession": 2, "thinkSeconds": 10}
    endless = {"dailyUsers": 10, "imagesPerSession": 1000, "thinkSeconds": 600}
    usual = {"dailyUsers": 10, "imagesPerSession": 30, "thinkSeconds": 30}  # 15 min
    lengths = {}
    for name, tier in (("brief", brief), ("endless", endless), ("usual", usual)):
        scenario, _ = parse_scenario(small_document(demand={"tiers": {"free": tier}}), name)
        lengths[name] = warm_up_steps(scenario) * scenario.timing.physics_step_seconds
    assert lengths == {"brief": 3600, "endless": 24 * 3600, "usual": 8 * 30 * 30}
