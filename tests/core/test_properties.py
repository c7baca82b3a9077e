"""Property tests (hypothesis) of the decision core's invariants."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from meltguard.api.models import PolicySpec
from meltguard.api.state import ControllerState
from meltguard.core.decide import Decision, decide
from meltguard.core.observation import GpuSample, Observation

from .conftest import NOW, make_spec

SPEC = make_spec(minReplicas=2, maxReplicas=20)
REASONS = st.frozensets(st.sampled_from(["hw_thermal", "sw_thermal", "sw_power_cap"]),
                        max_size=2)


@st.composite
def samples(draw: st.DrawFn, now: float) -> GpuSample:
    index = draw(st.integers(0, 11))
    return GpuSample(
        uuid=f"GPU-{index}",
        utilization=draw(st.floats(0, 1)),
        temperature_celsius=draw(st.floats(20, 100)),
        memory_used_bytes=draw(st.floats(0, 80e9)),
        memory_total_bytes=80e9,
        sampled_at=now - draw(st.sampled_from([0.0, 5.0, 40.0])),
        throttle_reasons=draw(REASONS),
        up=draw(st.booleans()) or True,
    )


@st.composite
def ticks(draw: st.DrawFn) -> list[tuple[float, Observation]]:
    result = []
    now = NOW
    for _ in range(draw(st.integers(1, 12))):
        now += draw(st.sampled_from([5.0, 15.0, 60.0, 300.0]))
        gpus = draw(st.lists(samples(now), max_size=8, unique_by=lambda s: s.uuid))
        observation = Observation(tuple(gpus), current_replicas=draw(st.integers(0, 30)),
                                  pending_replicas=draw(st.integers(0, 3)))
        result.append((now, observation))
    return result


def replay(spec: PolicySpec, sequence: list[tuple[float, Observation]]) -> list[Decision]:
    state = ControllerState.initial()
    out = []
    for now, observation in sequence:
        decision = decide(spec, state, observation, now=now)
        out.append(decision)
        state = decision.state
    return out


@settings(max_examples=150, deadline=None)
@given(ticks())
def test_invariants_hold_on_every_tick(sequence: list[tuple[float, Observation]]) -> None:
    previous_limits = {tier.name: tier.limit for tier in SPEC.quotas.tiers}
    for (_, observation), decision in zip(sequence, replay(SPEC, sequence), strict=True):
        current = observation.current_replicas
        if current == 0:  # zero replicas: autoscaling disabled, as the HPA does (minReplicas 2)
            assert (decision.desired_replicas, decision.scale_reason) == (0, "ScalingDisabled")
        else:
            assert SPEC.min_replicas <= decision.desired_replicas <= SPEC.max_replicas
        if decision.scale_reason == "PendingReleased":  # only the replicas never placed go
            placed = current - observation.pending_replicas
            assert decision.desired_replicas == max(placed, SPEC.min_replicas) < current
        elif decision.desired_replicas < current and current <= SPEC.max_replicas:
            assert decision.gpus.hot == 0 and decision.gpus.stale == 0
            assert all(previous_limits[t.name] == t.limit for t in SPEC.quotas.tiers)
        if decision.desired_replicas > current and current >= SPEC.min_replicas:
            assert observation.pending_replicas == 0
        for tier, spec_tier in zip(decision.tiers, SPEC.quotas.tiers, strict=True):
            if spec_tier.unlimited:
                assert tier.limit is None and tier.unlimited
                continue
            assert spec_tier.floor <= tier.limit <= spec_tier.limit  # type: ignore[operator]
        moved = [t for t in decision.tiers if t.limit != previous_limits[t.name]]
        assert len(moved) <= 1
        for change in decision.quota_changes:
            names = [t.name for t in SPEC.quotas.tiers]
            earlier = names[: names.index(change.tier)]
            later = names[names.index(change.tier) + 1:]
            limits = {t.name: t.limit for t in decision.tiers}
            floors = {t.name: t.floor for t in SPEC.quotas.tiers}
            baselines = {t.name: t.limit for t in SPEC.quotas.tiers}
            if change.direction == "tighten":  # every earlier tier already at its floor
                assert all(limits[n] == floors[n] for n in earlier)
            else:  # every later limited tier already back at its baseline
                assert all(limits[n] == baselines[n] for n in later if baselines[n] is not None)
        previous_limits = {t.name: t.limit for t in decision.tiers}


@settings(max_examples=100, deadline=None)
@given(ticks())
def test_same_inputs_same_decision_and_state_round_trips(
    sequence: list[tuple[float, Observation]],
) -> None:
    first, second = replay(SPEC, sequence), replay(SPEC, sequence)
    assert first == second
    for decision in first:
        assert ControllerState.from_dict(decision.state.to_dict()) == decision.state
