"""No overshoot: the replicas asked for stay within what the cluster can place.

The properties drive ``decide()`` against a model cluster of ``gpus`` GPUs: each tick the
target's pods beyond the GPUs are Pending, the others report a sample each.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from meltguard.api.state import ControllerState
from meltguard.core.decide import Decision, decide
from meltguard.core.observation import Observation
from meltguard.core.placement import learn_placement

from .conftest import NOW, gpu, make_spec

GRACE = 60
SPEC = make_spec(minReplicas=1, maxReplicas=20, scaling={
    "pendingGraceSeconds": GRACE,
    "scaleUp": {"stabilizationSeconds": 0, "maxStepReplicas": 8, "periodSeconds": 15},
    "scaleDown": {"stabilizationSeconds": 30, "maxStepPercent": 50, "periodSeconds": 15}})
MELTING = {"temp": 92.0, "reasons": frozenset({"hw_thermal"})}


def observe(replicas: int, gpus: int, *, util: float, melting: bool, now: float) -> Observation:
    """What the model cluster shows: a sample per placed replica, the rest Pending."""
    placed = min(replicas, gpus)
    heat = MELTING if melting else {"temp": 50.0}
    samples = tuple(gpu(index, util=util, at=now, **heat) for index in range(placed))
    return Observation(samples, current_replicas=replicas, pending_replicas=replicas - placed)


@dataclass(frozen=True)
class Tick:
    now: float
    before: ControllerState
    observation: Observation
    decision: Decision


@dataclass(frozen=True)
class Day:
    """A model cluster of ``gpus`` GPUs and every tick of ``decide()`` against it."""

    gpus: int
    ticks: list[Tick]


def play(gpus: int, replicas: int, weather: list[tuple[float, bool, float]]) -> Day:
    """Each ``(seconds later, melting, utilization)`` one tick; the Deployment takes the
    replicas decided."""
    state, now, played = ControllerState.initial(), NOW, []
    for seconds, melting, util in weather:
        now += seconds
        observation = observe(replicas, gpus, util=util, melting=melting, now=now)
        decision = decide(SPEC, ControllerState.from_dict(state.to_dict()), observation, now=now)
        played.append(Tick(now, state, observation, decision))
        state, replicas = decision.state, decision.desired_replicas
    return Day(gpus, played)


WEATHER = st.lists(st.tuples(st.sampled_from([5.0, 15.0, 40.0]), st.booleans(),
                             st.floats(0, 1)), min_size=1, max_size=30)
DAYS = st.builds(play, st.integers(1, 8), st.integers(1, 12), WEATHER)
EXAMPLES = settings(max_examples=150, deadline=None)


@EXAMPLES
@given(DAYS)
def test_never_asks_above_what_the_cluster_placed_once_it_refused_pods(day: Day) -> None:
    for tick in day.ticks:
        current = tick.observation.current_replicas
        if tick.observation.pending_replicas or tick.before.placeable_replicas is not None:
            assert tick.decision.desired_replicas <= max(day.gpus, current)
        assert tick.decision.state.placeable_replicas in (None, day.gpus)


@EXAMPLES
@given(DAYS)
def test_pending_replicas_are_released_after_the_grace_period(day: Day) -> None:
    pending_since: float | None = None
    for tick in day.ticks:
        pending = tick.observation.pending_replicas
        pending_since = (pending_since or tick.now) if pending else None
        if pending_since is not None and tick.now - pending_since >= GRACE:
            assert tick.decision.desired_replicas <= max(day.gpus, SPEC.min_replicas)
        elif pending:
            assert tick.decision.desired_replicas <= tick.observation.current_replicas


@EXAMPLES
@given(DAYS)
def test_pods_the_cluster_cannot_place_never_hold_replicas_up(day: Day) -> None:
    for tick in day.ticks:
        if not tick.observation.pending_replicas:
            continue
        all_placed = Observation(tick.observation.samples,
                                 current_replicas=tick.observation.current_replicas)
        unblocked = decide(SPEC, tick.before, all_placed, now=tick.now)
        assert tick.decision.desired_replicas <= unblocked.desired_replicas


def test_melting_on_a_full_node_releases_the_pending_pod_then_scales_down_when_cool() -> None:
    """The pending deadlock: 2 GPUs, up to 3 replicas wished while melting."""
    spec = SPEC.model_copy(update={
        "max_replicas": 3,
        "melt": SPEC.melt.model_copy(update={"cool": SPEC.melt.cool.model_copy(
            update={"sustain_seconds": 10})}),
        "quotas": SPEC.quotas.model_copy(update={"relax": SPEC.quotas.relax.model_copy(
            update={"step_percent": 100, "interval_seconds": 10})})})
    replicas, state, now, seen = 2, ControllerState.initial(), NOW, []
    for seconds, melting in [(5, True)] * 30 + [(5, False)] * 30:
        now += seconds
        observation = observe(replicas, 2, util=0.99 if melting else 0.1, melting=melting,
                              now=now)
        decision = decide(spec, state, observation, now=now)
        seen.append((replicas, observation.pending_replicas, decision.scale_reason))
        state, replicas = decision.state, decision.desired_replicas
    reasons = [reason for _, _, reason in seen]
    assert (3, 1, "NoGPUCapacity") in seen  # the third replica waits, none is added on top
    assert "PendingReleased" in reasons
    released = reasons.index("PendingReleased")
    assert [r for r, _, _ in seen[released + 1:released + 4]] == [2, 2, 2]  # ceiling learnt
    assert replicas == 1  # cool: scaled down, nothing Pending holds it


def test_the_ceiling_is_forgotten_once_the_wish_fits_or_the_cluster_places_more() -> None:
    learnt = learn_placement(current=5, pending=2, wished=9, ceiling=None, pending_since=None,
                             now=NOW)
    assert (learnt.ceiling, learnt.placed, learnt.pending_since) == (3, 3, NOW)
    kept = learn_placement(current=3, pending=0, wished=9, ceiling=3, pending_since=NOW,
                           now=NOW + 5)
    assert (kept.ceiling, kept.pending_since) == (3, None)
    no_wish = learn_placement(current=3, pending=0, wished=None, ceiling=3, pending_since=None,
                              now=NOW + 5)
    assert no_wish.ceiling == 3
    assert learn_placement(current=3, pending=0, wished=3, ceiling=3, pending_since=None,
                           now=NOW + 5).ceiling is None
    assert learn_placement(current=4, pending=0, wished=9, ceiling=3, pending_since=None,
                           now=NOW + 5).ceiling is None
