"""The yardstick: the best possible and the safe best, worked out by hand, and never beaten."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meltguard.api.models import ImageQuotaPolicy
from meltguard.core.demand import DemandSignal
from meltguard.sim.compare import compare, default_strategies
from meltguard.sim.engine import shared_inputs
from meltguard.sim.fleet import SimulatedFleet
from meltguard.sim.scenario import (
    Scenario,
    built_in_names,
    defaults_only,
    load_scenario,
    parse_scenario,
)
from meltguard.sim.strategies import (
    Control,
    HpaStrategy,
    MeltguardStrategy,
    Strategy,
    baseline_limits,
)
from meltguard.sim.thermal import ThermalConstants
from meltguard.sim.yardstick import (
    best_served,
    capacity_per_step,
    reachable_gpus,
    safe_capacity_per_step,
    unshed_demand,
    yardstick,
)
from tests.sim.conftest import PROFILES, small_document


def test_one_queue_serves_oldest_first_within_the_timeout() -> None:
    # 10 at once, 2 a step, served up to 2 steps after arrival: 6 served, 4 fail
    assert best_served([10, 0, 0, 0], [2, 2, 2, 2], oldest=2).tolist() == [2, 2, 2, 0]
    # the old ones first: the 4 of step 0 go before any of the 4 of step 1, and with no step
    # to wait the 2 left of step 0 fail
    assert best_served([4, 4], [2, 6], oldest=0).tolist() == [2, 4]
    assert best_served([4, 4], [2, 6], oldest=1).tolist() == [2, 6]


def spread_free(document: dict[str, Any]) -> dict[str, Any]:
    for profile in document["gpuProfiles"].values():
        profile["spreadCelsius"] = 0
    return document


def test_capacity_is_every_reachable_gpu_at_the_most_its_profile_allows() -> None:
    # 40 GPUs on 5 nodes, maxReplicas 36; node 3 (of 0-4) on degraded cooling from 00:30 to
    # 01:00: 8 GPUs at 80.85% (see test_gpu_profiles). 30 s steps, 3 s an image: 10 a step.
    document = spread_free(small_document(
        coolingFailures=[{"profile": "degraded-cooling", "nodeShare": 0.25, "startHour": 0.5,
                          "endHour": 1}]))
    document["policy"]["spec"]["maxReplicas"] = 36
    scenario, policy = parse_scenario(document, "small")
    inputs = shared_inputs(scenario, policy, 1)
    assert reachable_gpus(inputs) == 36
    capacity = capacity_per_step(inputs)
    assert capacity[:60].tolist() == pytest.approx([360] * 60)  # 36 full GPUs
    # the best 36 of 40: the 32 well-cooled ones and 4 degraded
    assert capacity[60:120].tolist() == pytest.approx([(32 + 4 * 0.80852) * 10] * 60, abs=0.01)
    assert capacity[120:].tolist() == pytest.approx([360] * 120)


def steady_share_by_hand(profile_name: str, limit_celsius: float) -> float:
    """The work share whose steady temperature is ``limit_celsius``, from the profile's two
    operating points: inlet + c/W x watts = limit."""
    profile = PROFILES[profile_name]
    per_watt = (profile.full_load_celsius - profile.idle_celsius) \
        / (profile.full_load_watts - profile.idle_watts)
    inlet = profile.idle_celsius - per_watt * profile.idle_watts
    watts = (limit_celsius - inlet) / per_watt
    return (watts - profile.idle_watts) / (profile.full_load_watts - profile.idle_watts)


def test_the_steady_share_is_where_the_profile_line_meets_the_limit() -> None:
    h200 = PROFILES["h200"]
    one = ThermalConstants.of([h200], np.zeros(1, dtype=np.int64), np.zeros(1))
    halfway = (h200.idle_celsius + h200.full_load_celsius) / 2
    shares = one.steady_max_work(np.array([h200.idle_celsius - 1, h200.idle_celsius, halfway,
                                           h200.full_load_celsius, 85.0]))
    assert shares.tolist() == pytest.approx([0, 0, 0.5, 1, 1])
    # the transient bound over a long enough step is the steady bound at the slowdown
    degraded = ThermalConstants.of([PROFILES["degraded-cooling"]], np.zeros(1, dtype=np.int64),
                                   np.zeros(1))
    assert degraded.max_work(np.array([40.0]), 3600).tolist() == pytest.approx(
        degraded.steady_max_work(degraded.slowdown_celsius).tolist())
    assert degraded.steady_max_work(89.0)[0] == pytest.approx(
        steady_share_by_hand("degraded-cooling", 89))


@pytest.mark.parametrize(("node_share", "during"), [
    # every GPU on degraded cooling: the 36 held at the share that keeps them at 80 C
    (1.0, 36 * steady_share_by_hand("degraded-cooling", 80) * 10),
    # one node in four: the 32 well-cooled GPUs at full load serve more than all 36 at the
    # degraded ones' share (about 62%), so the best safe fleet holds only those
    (0.25, 32 * 10),
])
def test_the_safe_capacity_keeps_every_gpu_at_or_under_the_melting_temperature(
    node_share: float, during: float
) -> None:
    # 40 GPUs on 5 nodes, maxReplicas 36, melting at 80 C (below the 89 C slowdown); the
    # failure from 00:30 to 01:00. 30 s steps, 3 s an image: 10 a step at full speed.
    document = spread_free(small_document(
        coolingFailures=[{"profile": "degraded-cooling", "nodeShare": node_share,
                          "startHour": 0.5, "endHour": 1}]))
    spec = document["policy"]["spec"]
    spec["maxReplicas"] = 36
    spec["melt"] = {"temperatureCelsius": 80, "cool": {"temperatureCelsius": 70}}
    scenario, policy = parse_scenario(document, "small")
    inputs = shared_inputs(scenario, policy, 1)
    capacity = capacity_per_step(inputs)
    safe = safe_capacity_per_step(inputs, capacity)
    assert safe[:60].tolist() == pytest.approx([360] * 60)  # h200s settle at 59.5 C
    assert safe[60:120].tolist() == pytest.approx([during] * 60)
    assert safe[120:].tolist() == pytest.approx([360] * 120)
    assert (safe[60:120] < capacity[60:120]).all()


@pytest.mark.parametrize("name", [name for name in built_in_names()
                                  if not load_scenario(name)[0].cooling_failures])
def test_without_cooling_failures_the_safe_best_is_the_best_possible(name: str) -> None:
    scenario, policy = load_scenario(name)
    inputs = shared_inputs(scenario, policy, 1)
    # no well-cooled GPU's steady full load comes near the melting temperature
    constants = inputs.cooling_plan().at(inputs.cooling_plan().start)
    hottest = constants.steady_celsius(constants.full_load_watts).max()
    assert hottest < policy.spec.melt.temperature_celsius - 20
    capacity = capacity_per_step(inputs)
    assert np.array_equal(safe_capacity_per_step(inputs, capacity), capacity)
    best = yardstick(inputs, [])
    assert best.safe_images == best.images > 0


def test_on_cooling_failure_the_safe_best_is_below_the_best_possible_and_meltguard_nearer_it(
) -> None:
    scenario, policy = load_scenario("cooling-failure")
    policy = defaults_only(policy)
    comparison = compare(scenario, policy, 1, strategies=[MeltguardStrategy(policy)])
    assert comparison.safe_optimum_images < 0.95 * comparison.optimum_images
    run = comparison.runs[0]
    assert run.safe_share > run.optimum_share
    assert run.safe_share == pytest.approx(run.served.sum() / comparison.safe_optimum_images)


def test_a_run_keeping_the_baseline_limits_met_exactly_the_unshed_demand(
    small: tuple[Scenario, ImageQuotaPolicy]
) -> None:
    scenario, policy = small
    hpa = compare(scenario, policy, seed=3, strategies=[HpaStrategy("hpa-only", policy.spec)])
    assert hpa.runs[0].kept_baseline_limits
    assert np.array_equal(hpa.runs[0].admitted,
                          unshed_demand(shared_inputs(scenario, policy, seed=3)))


@dataclass
class AllIn:
    """Every GPU it may have, all day, and the baseline limits: the most a fleet can serve."""

    name: str
    replicas: int
    limits: dict[str, int | None]

    def control(self, now: float, fleet: SimulatedFleet, demand: DemandSignal | None
                ) -> Control:
        return Control(self.replicas, self.limits)


def strategies_to_try(scenario: Scenario, policy: ImageQuotaPolicy) -> list[Strategy]:
    spec = policy.spec
    return [
        *default_strategies(scenario, policy),
        AllIn("all-in", spec.max_replicas, baseline_limits(spec)),
        AllIn("all-in, free cut to 1", spec.max_replicas, {**baseline_limits(spec), "free": 1}),
    ]


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    """One-hour scenarios: fleets, speeds, timeouts, surges and cooling failures of all sizes."""
    step = draw(st.sampled_from([10, 20, 30, 60]))
    document = small_document(
        durationHours=1,
        timing={"physicsStepSeconds": step, "controlTickSeconds": 60},
        fleet={"gpuSupply": draw(st.integers(2, 50)),
               "gpusPerReplica": draw(st.sampled_from([1, 2])),
               "gpusPerNode": draw(st.sampled_from([1, 4, 8])),
               "gpuSecondsPerImage": draw(st.sampled_from([0.5, 2, 6])),
               "startupSeconds": draw(st.sampled_from([0, 120])),
               "requestTimeoutSeconds": draw(st.sampled_from([20, 60, 120, 300]))},
    )
    document["demand"]["surge"].update(startHour=draw(st.sampled_from([0, 0.2])),
                                       newUsers=draw(st.sampled_from([0, 20000, 80000])))
    if draw(st.booleans()):
        document["coolingFailures"] = [{"profile": "degraded-cooling", "startHour": 0.1,
                                        "nodeShare": draw(st.sampled_from([0.25, 1.0]))}]
    policy = document["policy"]
    policy["spec"]["maxReplicas"] = draw(st.integers(1, 60))
    policy["spec"]["minReplicas"] = 1
    melt = draw(st.sampled_from([50, 70, 85, 95]))
    policy["spec"]["melt"] = {"temperatureCelsius": melt, "cool": {"temperatureCelsius": 40}}
    return document


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=scenarios(), seed=st.integers(0, 2**20))
def test_no_strategy_serves_more_than_the_best_possible(document: dict[str, Any],
                                                       seed: int) -> None:
    scenario, policy = parse_scenario(document, "drawn")
    comparison = compare(scenario, policy, seed, strategies=strategies_to_try(scenario, policy))
    assert comparison.safe_optimum_images <= comparison.optimum_images
    for run in comparison.runs:
        assert run.served.sum() <= comparison.optimum_images * (1 + 1e-9), run.name
        assert run.optimum_share <= 1 + 1e-9
        assert run.safe_share >= run.optimum_share


def test_the_best_possible_is_reached_when_nothing_stands_in_the_way() -> None:
    # every GPU from the start, no start-up, and far more than the demand needs: the all-in
    # strategy serves everything, and that is exactly the best possible
    document = small_document(fleet={"gpuSupply": 60, "startupSeconds": 0,
                                     "initialReplicas": 60})
    del document["demand"]["surge"]
    scenario, policy = parse_scenario(document, "roomy")
    all_in = AllIn("all-in", 60, baseline_limits(policy.spec))
    comparison = compare(scenario, policy, 5, strategies=[all_in])
    assert comparison.runs[0].failed.sum() == 0
    assert comparison.runs[0].optimum_share == pytest.approx(1.0)
