"""decide(): meltguard's rules on top of HPA, events, conditions and state round-trips."""

from __future__ import annotations

from meltguard.api.models import PolicySpec
from meltguard.api.state import ControllerState
from meltguard.core.decide import Decision, decide
from meltguard.core.observation import Observation

from .conftest import NOW, fleet, make_spec


def run(spec: PolicySpec, observations: list[tuple[float, Observation]],
        state: ControllerState | None = None) -> list[Decision]:
    """Feed observations tick after tick, carrying the state as the operator does."""
    decisions = []
    state = state or ControllerState.initial()
    for now, observation in observations:
        decision = decide(spec, ControllerState.from_dict(state.to_dict()), observation, now=now)
        decisions.append(decision)
        state = decision.state
    return decisions


def test_melting_scales_up_by_at_least_one_step_even_within_tolerance(spec: PolicySpec) -> None:
    # utilization 0.75 vs target 0.7 is within tolerance, but every GPU is thermally throttled
    decision = decide(spec, ControllerState(), fleet(4, 4, util=0.75,
                                                     reasons=frozenset({"hw_thermal"})), now=NOW)
    assert decision.phase == "Melting"
    assert decision.desired_replicas == 12  # + maxStepReplicas 8
    assert [e.reason for e in decision.events] == ["MeltingStarted", "ScaledUp"]


def test_no_scale_down_while_hot_or_stale_but_pending_pods_block_none() -> None:
    spec = make_spec(scaling={"scaleDown": {"stabilizationSeconds": 0, "maxStepPercent": 50,
                                            "periodSeconds": 60}})
    cold = fleet(8, 8, util=0.1)
    assert decide(spec, ControllerState(), cold, now=NOW).desired_replicas == 4
    hot = fleet(8, 8, util=0.1, temp=90)
    blocked = decide(spec, ControllerState(), hot, now=NOW)
    assert (blocked.desired_replicas, blocked.scale_reason) == (8, "ScaleDownBlocked")
    stale = Observation((*cold.samples[:-1], fleet(1, 8, util=0.1, at=NOW - 60).samples[0]),
                        current_replicas=8)
    assert decide(spec, ControllerState(), stale, now=NOW).desired_replicas == 8
    pending = decide(spec, ControllerState(), fleet(7, 8, pending=1, util=0.1), now=NOW)
    assert (pending.desired_replicas, pending.scale_reason) == (4, "ScaleDownLimit")


def test_no_new_replicas_on_top_of_pending_pods(spec: PolicySpec) -> None:
    decision = decide(spec, ControllerState(), fleet(4, 6, pending=2, util=0.99), now=NOW)
    assert decision.desired_replicas == 6
    assert decision.scaling_limited == "NoGPUCapacity"
    limited = {c.type: c for c in decision.conditions}["ScalingLimited"]
    assert (limited.status, limited.reason) == ("True", "NoGPUCapacity")


def test_at_max_and_melting_tightens_free_tier_each_interval(spec: PolicySpec) -> None:
    hot = {"reasons": frozenset({"hw_thermal"})}
    decisions = run(spec, [(NOW + t, fleet(4, 64, at=NOW + t, **hot))
                           for t in (0, 90, 180, 360)])  # tighten every 180 s by default
    free_limits = [d.tiers[0].limit for d in decisions]
    assert free_limits == [1, 1, 0, 0]
    assert decisions[0].scaling_limited == "AtMaxReplicas"  # melting wants more than max
    assert decisions[3].tiers[1].limit == 100
    assert [e.reason for e in decisions[0].events] == ["MeltingStarted", "QuotaTightened"]
    quotas = {c.type: c for c in decisions[0].conditions}["QuotasTightened"]
    assert quotas.status == "True"


def test_melting_past_grace_tightens_even_below_max(spec: PolicySpec) -> None:
    hot = {"reasons": frozenset({"hw_thermal"})}
    decisions = run(spec, [(NOW + t, fleet(4, 8, at=NOW + t, **hot)) for t in (0, 60, 90)])
    assert [d.tiers[0].limit for d in decisions] == [3, 3, 1]  # graceSeconds 90


def test_telemetry_lost_holds_and_reports(spec: PolicySpec) -> None:
    decision = decide(spec, ControllerState(phase="Warm"), fleet(4, 6, at=NOW - 100), now=NOW)
    assert (decision.phase, decision.desired_replicas) == ("Unknown", 6)
    assert [e.reason for e in decision.events] == ["TelemetryLost"]
    telemetry = {c.type: c for c in decision.conditions}["TelemetryAvailable"]
    assert (telemetry.status, telemetry.reason) == ("False", "NoFreshSamples")


def test_cooling_ends_melting_and_relaxes_after_interval(spec: PolicySpec) -> None:
    state = ControllerState(phase="Melting", melting_since={"GPU-0": NOW - 500},
                            cool_since={"GPU-0": NOW - 120},
                            limits=[{"name": "free", "limit": 0}, {"name": "plus", "limit": 50}],
                            last_quota_change_time=NOW - 400)
    decisions = run(spec, [(NOW + t, fleet(1, 64, at=NOW + t, util=0.6, temp=60))
                           for t in (0, 299, 300)], state)
    assert [e.reason for e in decisions[0].events][:1] == ["MeltingEnded"]
    assert [d.tiers[1].limit for d in decisions] == [50, 50, 100]


def test_cooling_melting_gpus_stop_further_tightening(spec: PolicySpec) -> None:
    hot = {"reasons": frozenset({"hw_thermal"})}
    decisions = run(spec, [(NOW, fleet(2, 64, **hot)),
                           (NOW + 60, fleet(2, 64, at=NOW + 60, util=0.5, temp=60)),
                           (NOW + 120, fleet(2, 64, at=NOW + 120, util=0.5, temp=60))])
    assert [d.phase for d in decisions] == ["Melting"] * 3  # cool must hold 120 s
    assert [d.tiers[0].limit for d in decisions] == [1, 1, 1]


def test_no_scale_down_while_quotas_are_tightened() -> None:
    spec = make_spec(scaling={"scaleDown": {"stabilizationSeconds": 0, "maxStepPercent": 50,
                                            "periodSeconds": 60}})
    state = ControllerState(limits=[{"name": "free", "limit": 1}, {"name": "plus", "limit": 200}])
    decision = decide(spec, state, fleet(8, 8, util=0.1), now=NOW)
    assert (decision.desired_replicas, decision.scale_reason) == (8, "ScaleDownBlocked")
    assert "quotas are tightened" in decision.scale_message


def test_restart_from_status_gives_the_same_decisions(spec: PolicySpec) -> None:
    hot = {"reasons": frozenset({"hw_thermal"})}
    ticks = [(NOW + t, fleet(4, 64, at=NOW + t, **hot)) for t in range(0, 300, 15)]
    straight = run(spec, ticks)
    resumed_first = run(spec, ticks[:7])
    resumed_rest = run(spec, ticks[7:], resumed_first[-1].state)
    assert [d.tiers for d in straight] == [d.tiers for d in resumed_first + resumed_rest]
    assert straight[-1].state == resumed_rest[-1].state
