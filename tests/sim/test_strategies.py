"""The strategies drive the simulated fleet with the operator's own code."""

from __future__ import annotations

import dataclasses
import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import meltguard.core.decide as decision_core
import meltguard.core.replicas as replica_core
from meltguard.api.models import ImageQuotaPolicy, PolicySpec
from meltguard.api.state import ControllerState
from meltguard.core.demand import DemandSignal
from meltguard.core.observation import Observation
from meltguard.sim import strategies
from meltguard.sim.compare import compare, total_steps
from meltguard.sim.engine import shared_inputs
from meltguard.sim.scenario import Scenario


def test_the_simulator_calls_the_decide_function_the_operator_calls(
    small: tuple[Scenario, ImageQuotaPolicy], monkeypatch: pytest.MonkeyPatch
) -> None:
    from meltguard.k8s import reconcile

    assert vars(reconcile)["decide"] is decision_core.decide  # what the operator calls
    scenario, policy = small
    real_decide = decision_core.decide
    calls: list[tuple[Observation, float, Any]] = []
    signals: list[DemandSignal | None] = []

    def spy(spec: PolicySpec, state: ControllerState, observation: Observation, *,
            now: float, demand: DemandSignal | None) -> decision_core.Decision:
        assert spec is policy.spec
        decision: decision_core.Decision = real_decide(spec, state, observation, now=now,
                                                       demand=demand)
        calls.append((observation, now, decision))
        signals.append(demand)
        # mark the decision so we can see the simulator applied this very object
        return dataclasses.replace(decision, desired_replicas=7)

    monkeypatch.setattr(decision_core, "decide", spy)
    meltguard_only = [strategies.MeltguardStrategy(policy)]
    run = compare(scenario, policy, seed=1, strategies=meltguard_only).runs[0]
    ticks = scenario.duration_seconds // scenario.timing.control_tick_seconds
    assert len(calls) == ticks
    assert [now for _, now, _ in calls] == sorted({now for _, now, _ in calls})
    # every allocated GPU is observed, and the marked replica count was applied
    assert all(len(obs.samples) == obs.current_replicas for obs, _, _ in calls[1:])
    assert set(run.series["desiredReplicas"][1:]) == {7}
    # the users' attempts reach decide() as the quota service would report them
    assert all(signal is not None and signal.observed_at == now
               for signal, (_, now, _) in zip(signals[1:], calls[1:], strict=True))


def test_state_goes_back_to_decide_through_its_status_form(
    small: tuple[Scenario, ImageQuotaPolicy], monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario, policy = small
    real_decide = decision_core.decide
    seen: list[tuple[ControllerState, ControllerState]] = []

    def spy(spec: PolicySpec, state: ControllerState, observation: Observation, *,
            now: float, demand: DemandSignal | None) -> decision_core.Decision:
        decision = real_decide(spec, state, observation, now=now, demand=demand)
        seen.append((state, decision.state))
        return decision

    monkeypatch.setattr(decision_core, "decide", spy)
    compare(scenario, policy, seed=1, strategies=[strategies.MeltguardStrategy(policy)])
    assert seen[0][0] == ControllerState.initial()
    for (_, produced), (given, _) in itertools.pairwise(seen):
        assert given == produced


def test_the_baselines_use_the_cores_hpa_arithmetic(
    small: tuple[Scenario, ImageQuotaPolicy], monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario, policy = small
    assert vars(strategies)["hpa_sync"] is replica_core.hpa_sync  # not a copy
    calls = []
    real = replica_core.hpa_sync

    def spy(*args: Any, **kwargs: Any) -> replica_core.HpaSync:
        calls.append(args)
        sync: replica_core.HpaSync = real(*args, **kwargs)
        return sync

    monkeypatch.setattr(strategies, "hpa_sync", spy)
    hpa = strategies.HpaStrategy("hpa-only", policy.spec)
    compare(scenario, policy, seed=1, strategies=[hpa])
    assert len(calls) == scenario.duration_seconds // scenario.timing.control_tick_seconds


def test_static_cap_holds_its_limit_all_day_and_hpa_only_keeps_baselines(
    small: tuple[Scenario, ImageQuotaPolicy]
) -> None:
    scenario, policy = small
    result = compare(scenario, policy, seed=1)
    by_name = {run.name: run for run in result.runs}
    assert set(by_name["static-cap"].series["firstTierLimit"]) == {3.0}
    assert set(by_name["hpa-only"].series["firstTierLimit"]) == {6.0}
    assert by_name["hpa-only"].shed.sum() == 0


def test_same_seed_same_figures_in_one_process_or_several(
    small: tuple[Scenario, ImageQuotaPolicy]
) -> None:
    scenario, policy = small
    alone = compare(scenario, policy, seed=5, jobs=1)
    other = compare(scenario, policy, seed=6, jobs=1)
    for jobs in (2, 3):
        forked = compare(scenario, policy, seed=5, jobs=jobs)
        for one, two in zip(alone.runs, forked.runs, strict=True):
            assert one.name == two.name
            assert np.array_equal(one.served, two.served)
            assert one.series == two.series
        assert alone.optimum_images == forked.optimum_images
    assert not np.array_equal(alone.runs[0].served, other.runs[0].served)


def test_a_paused_policy_observes_but_changes_nothing(
    small: tuple[Scenario, ImageQuotaPolicy]
) -> None:
    scenario, policy = small
    paused = policy.model_copy(update={"spec": policy.spec.model_copy(update={"paused": True})})
    run = compare(scenario, paused, seed=1,
                  strategies=[strategies.MeltguardStrategy(paused)]).runs[0]
    warm_replicas = shared_inputs(scenario, paused, seed=1).warm.replicas
    assert set(run.series["desiredReplicas"]) == {warm_replicas}
    assert set(run.series["firstTierLimit"]) == {6.0}
    assert "Melting" in run.phases or "Hot" in run.phases  # it saw the surge all the same


REPO_ROOT = Path(__file__).resolve().parents[2]

#: Runs the small scenario's meltguard strategy in a fresh interpreter, so that no thread left
#: by another test (a fake kubelet, a server) makes cyclic garbage while the collector is off.
COLLECTOR_PROBE = """
import gc, json
from meltguard.sim import strategies
from meltguard.sim.compare import compare
from meltguard.sim.scenario import parse_scenario
from tests.sim.conftest import small_document

scenario, policy = parse_scenario(small_document(), "small")
seen = []
real_control = strategies.MeltguardStrategy.control

def control(self, now, fleet, demand):
    seen.append(gc.isenabled())
    return real_control(self, now, fleet, demand)

strategies.MeltguardStrategy.control = control
enabled_before = gc.isenabled()
gc.collect()
compare(scenario, policy, seed=1, strategies=[strategies.MeltguardStrategy(policy)])
print(json.dumps({"before": enabled_before, "seen": seen, "after": gc.isenabled(),
                  "garbage": gc.collect()}))
"""


def test_the_cyclic_collector_is_paused_only_while_simulating() -> None:
    done = subprocess.run([sys.executable, "-c", COLLECTOR_PROBE], capture_output=True,
                          text=True, timeout=120, cwd=REPO_ROOT, check=True)
    probe = json.loads(done.stdout.splitlines()[-1])
    assert probe["before"] and probe["after"]
    assert probe["seen"] and not any(probe["seen"])
    # what the pause let pile up: not even one cyclic object per control tick
    assert probe["garbage"] < len(probe["seen"])


def test_shedding_a_later_tier_while_an_earlier_is_above_its_floor_is_counted(
    small: tuple[Scenario, ImageQuotaPolicy]
) -> None:
    scenario, policy = small
    plus_cut = strategies.HpaStrategy("plus-cut", policy.spec, {"plus": 1})
    free_cut = strategies.HpaStrategy("free-cut", policy.spec, {"free": 0, "plus": 1})
    runs = compare(scenario, policy, seed=1, strategies=[plus_cut, free_cut]).runs
    plus = runs[0].tiers.index("plus")
    assert runs[0].shed[plus] > 0
    assert runs[0].out_of_order_sheds == runs[0].shed[plus]  # free was still at 6
    assert runs[1].shed[plus] > 0
    assert runs[1].out_of_order_sheds == 0  # free at its floor first: in order


@pytest.mark.parametrize("jobs", [1, 2, 3])
def test_progress_counts_every_step_of_every_strategy_once(
    small: tuple[Scenario, ImageQuotaPolicy], jobs: int
) -> None:
    scenario, policy = small
    counted: list[int] = []
    compare(scenario, policy, seed=1, jobs=jobs, progress=counted.append)
    assert sum(counted) == total_steps(scenario, 3)
