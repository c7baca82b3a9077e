"""The yardstick: the best possible, worked out by hand, and never beaten."""

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
from meltguard.sim.scenario import Scenario, parse_scenario
from meltguard.sim.strategies import Control, HpaStrategy, Strategy, baseline_limits
from meltguard.sim.yardstick import best_served, capacity_per_step, reachable_gpus, unshed_demand
from tests.sim.conftest import small_document


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
    return document


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=scenarios(), seed=st.integers(0, 2**20))
def test_no_strategy_serves_more_than_the_best_possible(document: dict[str, Any],
                                                       seed: int) -> None:
    scenario, policy = parse_scenario(document, "drawn")
    comparison = compare(scenario, policy, seed, strategies=strategies_to_try(scenario, policy))
    for run in comparison.runs:
        assert run.served.sum() <= comparison.optimum_images * (1 + 1e-9), run.name
        assert run.optimum_share <= 1 + 1e-9


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
