"""Replica arithmetic with the semantics of the Kubernetes HorizontalPodAutoscaler.

Mirrors the HPA controller's steps (``replica_calculator.go`` and ``horizontal.go``):

1. usage recommendation: ``ceil(current x utilization / target)``, unless within tolerance;
2. stabilization: the lowest recommendation of the scale-up window and the highest of the
   scale-down window bound the move (recommendations are remembered by the caller);
3. rate limits: at most ``maxStepReplicas`` / ``maxStepPercent`` per ``periodSeconds``,
   counting the changes already made in that period (the "Max" select policy when both are
   set), then ``[minReplicas, maxReplicas]``.

Pure functions only: the memory (recommendations, scale events) comes in and goes out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from meltguard.api.models import ScalingRules, ScalingSpec
from meltguard.api.state import Recommendation, ScaleEvent

#: The reason when nothing (window, step, bound) changed the metrics' recommendation.
WITHIN_RANGE = "DesiredWithinRange"


@dataclass(frozen=True, slots=True)
class Limited:
    """A replica count and why it is what it is (an HPA-style reason and message)."""

    replicas: int
    reason: str
    message: str


def usage_recommendation(
    current: int, *, utilization: float, target_utilization_percent: float,
    tolerance_percent: float,
) -> int:
    """HPA's metric recommendation: scale so mean utilization meets the target."""
    usage_ratio = utilization / (target_utilization_percent / 100)
    # rounded so that float noise (0.77 / 0.7 = 1.1000000000000003) cannot cross the tolerance
    if round(abs(usage_ratio - 1.0), 9) <= tolerance_percent / 100:
        return current
    return math.ceil(usage_ratio * current)


def stabilize(
    current: int,
    *,
    recommended: int,
    history: Sequence[Recommendation],
    scaling: ScalingSpec,
    now: float,
) -> Limited:
    """Bound ``recommended`` by the stabilization windows over earlier recommendations."""
    up_cutoff = now - scaling.scale_up.stabilization_seconds
    down_cutoff = now - scaling.scale_down.stabilization_seconds
    up_bound = down_bound = recommended
    for past in history:
        if past.time > up_cutoff:
            up_bound = min(up_bound, past.replicas)
        if past.time > down_cutoff:
            down_bound = max(down_bound, past.replicas)
    stabilized = min(max(current, up_bound), down_bound)
    if stabilized == recommended:
        return Limited(stabilized, WITHIN_RANGE, "the desired count is within range")
    direction = "up" if recommended > current else "down"
    return Limited(stabilized, "StabilizationWindow",
                   f"holding scale {direction}: recent recommendations bound it to {stabilized}")


def remember_recommendation(
    history: Sequence[Recommendation], *, recommended: int, scaling: ScalingSpec, now: float
) -> list[Recommendation]:
    """The history with this tick's recommendation added and what no window needs dropped."""
    keep_after = now - max(scaling.scale_up.stabilization_seconds,
                           scaling.scale_down.stabilization_seconds)
    kept = [past for past in history if past.time > keep_after]
    kept.append(Recommendation(time=now, replicas=recommended))
    return kept


def _changes_in_period(events: Sequence[ScaleEvent], period: int, now: float) -> tuple[int, int]:
    """Replicas added and removed by the changes of the last ``period`` seconds."""
    cutoff = now - period
    added = sum(e.delta for e in events if e.time > cutoff and e.delta > 0)
    removed = -sum(e.delta for e in events if e.time > cutoff and e.delta < 0)
    return added, removed


def scale_up_limit(current: int, *, events: Sequence[ScaleEvent], rules: ScalingRules,
                   now: float) -> int:
    """The most replicas the scale-up rules allow now (never below ``current``)."""
    added, removed = _changes_in_period(events, rules.period_seconds, now)
    period_start = current - added + removed
    proposals = []
    if rules.max_step_replicas is not None:
        proposals.append(period_start + rules.max_step_replicas)
    if rules.max_step_percent is not None:
        proposals.append(math.ceil(period_start * (1 + rules.max_step_percent / 100)))
    return max(current, max(proposals))


def scale_down_limit(current: int, *, events: Sequence[ScaleEvent], rules: ScalingRules,
                     now: float) -> int:
    """The fewest replicas the scale-down rules allow now (never above ``current``)."""
    added, removed = _changes_in_period(events, rules.period_seconds, now)
    period_start = current + removed - added
    proposals = []
    if rules.max_step_replicas is not None:
        proposals.append(period_start - rules.max_step_replicas)
    if rules.max_step_percent is not None:
        proposals.append(int(period_start * (1 - rules.max_step_percent / 100)))
    return min(current, min(proposals))


def apply_rate_limits(
    current: int,
    *,
    desired: int,
    events: Sequence[ScaleEvent],
    scaling: ScalingSpec,
    min_replicas: int,
    max_replicas: int,
    now: float,
) -> Limited:
    """HPA's ``convertDesiredReplicasWithBehaviorRate``: step limits, then the bounds."""
    if desired > current:
        up_limit = scale_up_limit(current, events=events, rules=scaling.scale_up, now=now)
        if up_limit < max_replicas:
            ceiling, reason = up_limit, Limited(up_limit, "ScaleUpLimit",
                                                "the desired replica count is increasing faster"
                                                " than the maximum scale rate")
        else:
            ceiling, reason = max_replicas, Limited(max_replicas, "AtMaxReplicas",
                                                    "the desired replica count is more than the"
                                                    " maximum replica count")
        if desired > ceiling:
            return reason
    elif desired < current:
        down_limit = scale_down_limit(current, events=events, rules=scaling.scale_down, now=now)
        if down_limit > min_replicas:
            floor, reason = down_limit, Limited(down_limit, "ScaleDownLimit",
                                                "the desired replica count is decreasing faster"
                                                " than the maximum scale rate")
        else:
            floor, reason = min_replicas, Limited(min_replicas, "AtMinReplicas",
                                                  "the desired replica count is less than the"
                                                  " minimum replica count")
        if desired < floor:
            return reason
    return Limited(desired, WITHIN_RANGE, "the desired count is within range")


def bound(
    current: int,
    *,
    proposal: Limited,
    events: Sequence[ScaleEvent],
    scaling: ScalingSpec,
    min_replicas: int,
    max_replicas: int,
    now: float,
) -> Limited:
    """Rate limits and bounds on a proposal, keeping the proposal's reason when they bind not."""
    limited = apply_rate_limits(
        current, desired=proposal.replicas, events=events, scaling=scaling,
        min_replicas=min_replicas, max_replicas=max_replicas, now=now,
    )
    return proposal if limited.replicas == proposal.replicas else limited


def remember_scale(events: Sequence[ScaleEvent], *, delta: int, scaling: ScalingSpec,
                   now: float) -> list[ScaleEvent]:
    """The scale events with this change added and those older than every period dropped."""
    keep_after = now - max(scaling.scale_up.period_seconds, scaling.scale_down.period_seconds)
    kept = [event for event in events if event.time > keep_after]
    if delta:
        kept.append(ScaleEvent(time=now, delta=delta))
    return kept


@dataclass(frozen=True, slots=True)
class HpaSync:
    """One HPA sync's outcome: the replicas to set and the autoscaler's memory after it."""

    limited: Limited
    history: list[Recommendation]
    events: list[ScaleEvent]


def hpa_sync(
    current: int,
    *,
    utilization: float,
    scaling: ScalingSpec,
    min_replicas: int,
    max_replicas: int,
    history: Sequence[Recommendation],
    events: Sequence[ScaleEvent],
    now: float,
) -> HpaSync:
    """Plain HPA: the replica count an HPA with these behaviours would set now, and what it
    remembers for the next sync (this tick's recommendation, this tick's change)."""
    recommended = usage_recommendation(
        current, utilization=utilization,
        target_utilization_percent=scaling.target_utilization_percent,
        tolerance_percent=scaling.tolerance_percent,
    )
    if current > max_replicas:
        limited = Limited(max_replicas, "AtMaxReplicas", "current replicas above maxReplicas")
    elif current < min_replicas:
        limited = Limited(min_replicas, "AtMinReplicas", "current replicas below minReplicas")
    else:
        stabilized = stabilize(current, recommended=recommended, history=history,
                               scaling=scaling, now=now)
        limited = bound(current, proposal=stabilized, events=events, scaling=scaling,
                        min_replicas=min_replicas, max_replicas=max_replicas, now=now)
    return HpaSync(
        limited,
        remember_recommendation(history, recommended=recommended, scaling=scaling, now=now),
        remember_scale(events, delta=limited.replicas - current, scaling=scaling, now=now),
    )
