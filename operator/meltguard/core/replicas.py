"""Replica arithmetic as the Kubernetes HorizontalPodAutoscaler controller (v1.28) does it.

The steps of one sync (``replica_calculator.go``, ``horizontal.go``):

1. **Usage**: the mean utilization truncated to a whole percent; the usage ratio is that
   whole percent over the target, divided in float64; within tolerance
   (``|1 - ratio| <= tolerance``, compared as is) the count stays, else
   ``ceil(ratio x current)``. From zero replicas: ``ceil(ratio)``, tolerance ignored.
2. **Stabilization**: the new count lies between the lowest recommendation of the scale-up
   window and the highest of the scale-down window. On its first sync an autoscaler records the
   count it finds as a recommendation, so a new one holds off scaling down for the down window.
3. **Policies**: per direction, each policy proposes a limit from the replicas its period
   started with (scale events of both directions inside that period undone); ``selectPolicy``
   Max takes the largest change, Min the smallest, Disabled allows none. Then
   ``[minReplicas, maxReplicas]``.
4. **Memory**: a recommendation or scale event takes the place of an outdated one, as the HPA
   controller's lists do (see :class:`~meltguard.api.state.ScaleEvent`).

Zero replicas with ``minReplicas`` above zero means autoscaling is disabled (``ScalingDisabled``).
Pure functions only: the memory (recommendations, scale events) comes in and goes out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from meltguard.api.models import (
    DEFAULT_SCALE_DOWN,
    DEFAULT_SCALE_UP,
    HpaScaleDownRules,
    HpaScaleUpRules,
    ScalingRules,
    ScalingSpec,
    SelectPolicy,
)
from meltguard.api.state import Recommendation, ScaleEvent

#: The reason when nothing (window, policy, bound) changed the metrics' recommendation.
WITHIN_RANGE = "DesiredWithinRange"
SCALING_DISABLED = "ScalingDisabled"
#: Absorbs the float noise of a mean of whole percents (0.29 x 100 is 28.999999999999996).
_WHOLE_PERCENT_SLACK = 1e-9


@dataclass(frozen=True, slots=True)
class Limited:
    """A replica count and why it is what it is (an HPA-style reason and message)."""

    replicas: int
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Policy:
    """One scaling policy in force (``value`` is a float: the shorthand allows 12.5 %)."""

    type: Literal["Pods", "Percent"]
    value: float
    period_seconds: int


@dataclass(frozen=True, slots=True)
class Rules:
    """One direction's rules in force, from an HPA ``behavior`` block or the shorthand."""

    stabilization_window_seconds: int
    select_policy: SelectPolicy
    policies: tuple[Policy, ...]

    @property
    def longest_period(self) -> int:
        """How long the HPA keeps this direction's scale events current."""
        return max(policy.period_seconds for policy in self.policies)


@dataclass(frozen=True, slots=True)
class Behavior:
    """Both directions' rules in force."""

    scale_up: Rules
    scale_down: Rules


def behavior_of(scaling: ScalingSpec) -> Behavior:
    """The rules in force: ``behavior`` as written, else the shorthand (meltguard's defaults
    for a direction it leaves out)."""
    if scaling.behavior is not None:
        return Behavior(_hpa_rules(scaling.behavior.scale_up),
                        _hpa_rules(scaling.behavior.scale_down))
    return Behavior(_shorthand_rules(scaling.scale_up or DEFAULT_SCALE_UP),
                    _shorthand_rules(scaling.scale_down or DEFAULT_SCALE_DOWN))


def _hpa_rules(rules: HpaScaleUpRules | HpaScaleDownRules) -> Rules:
    return Rules(
        rules.stabilization_window_seconds,
        rules.select_policy,
        tuple(Policy(p.type, p.value, p.period_seconds) for p in rules.policies),
    )


def _shorthand_rules(rules: ScalingRules) -> Rules:
    policies = []
    if rules.max_step_replicas is not None:
        policies.append(Policy("Pods", rules.max_step_replicas, rules.period_seconds))
    if rules.max_step_percent is not None:
        policies.append(Policy("Percent", rules.max_step_percent, rules.period_seconds))
    return Rules(rules.stabilization_seconds, "Max", tuple(policies))


def whole_percent(mean_utilization: float) -> int:
    """A mean utilization (0..1, above 1 for over-requested CPU) as the HPA reports one: a whole
    percent, truncated. GPUs report whole percents; their mean's float noise is absorbed."""
    return math.floor(mean_utilization * 100 + _WHOLE_PERCENT_SLACK)


def usage_recommendation(
    current: int, *, utilization_percent: int, target_utilization_percent: float,
    tolerance_percent: float,
) -> int:
    """HPA's metric recommendation: scale so that utilization meets the target."""
    usage_ratio = utilization_percent / target_utilization_percent
    if current == 0:
        return math.ceil(usage_ratio)
    if abs(1.0 - usage_ratio) <= tolerance_percent / 100:
        return current
    return math.ceil(usage_ratio * current)


def with_first_recommendation(
    history: Sequence[Recommendation], *, current: int, now: float
) -> list[Recommendation]:
    """The history, or on an autoscaler's first sync the replica count it found."""
    return list(history) if history else [Recommendation(time=now, replicas=current)]


def stabilize(
    current: int,
    *,
    recommended: int,
    history: Sequence[Recommendation],
    behavior: Behavior,
    now: float,
) -> Limited:
    """Bound ``recommended`` by the stabilization windows over earlier recommendations."""
    up_cutoff = now - behavior.scale_up.stabilization_window_seconds
    down_cutoff = now - behavior.scale_down.stabilization_window_seconds
    up_bound = down_bound = recommended
    for past in history:
        if past.time > up_cutoff:
            up_bound = min(up_bound, past.replicas)
        if past.time > down_cutoff:
            down_bound = max(down_bound, past.replicas)
    stabilized = min(max(current, up_bound), down_bound)
    if stabilized == recommended:
        return Limited(stabilized, WITHIN_RANGE, "the desired count is within range")
    direction = "up" if recommended >= current else "down"
    return Limited(stabilized, "StabilizationWindow",
                   f"holding scale {direction}: recent recommendations bound it to {stabilized}")


def remember_recommendation(
    history: Sequence[Recommendation], *, recommended: int, behavior: Behavior, now: float
) -> list[Recommendation]:
    """The history with this sync's recommendation in the place of the last one older than
    both windows, or appended."""
    obsolete_before = now - max(behavior.scale_up.stabilization_window_seconds,
                                behavior.scale_down.stabilization_window_seconds)
    latest = Recommendation(time=now, replicas=recommended)
    for index in range(len(history) - 1, -1, -1):
        if history[index].time < obsolete_before:
            return [*history[:index], latest, *history[index + 1:]]
    return [*history, latest]


def replicas_changed(events: Sequence[ScaleEvent], *, period_seconds: int, now: float) -> int:
    """Replicas added (net, removals negative) by the changes of the last ``period_seconds``."""
    cutoff = now - period_seconds
    return sum(event.delta for event in events if event.time > cutoff)


def _period_start(current: int, events: Sequence[ScaleEvent], period: int, now: float) -> int:
    """The replicas at the start of the last ``period`` seconds: its changes undone."""
    return current - replicas_changed(events, period_seconds=period, now=now)


def scale_up_limit(current: int, *, events: Sequence[ScaleEvent], rules: Rules,
                   now: float) -> int:
    """The most replicas the scale-up policies allow now (below ``current`` after a burst of
    scale-ups the policies no longer allow; the caller keeps ``current`` then)."""
    if rules.select_policy == "Disabled":
        return current
    proposals = []
    for policy in rules.policies:
        start = _period_start(current, events, policy.period_seconds, now)
        proposals.append(start + int(policy.value) if policy.type == "Pods"
                         else math.ceil(start * (1 + policy.value / 100)))
    return min(proposals) if rules.select_policy == "Min" else max(proposals)


def scale_down_limit(current: int, *, events: Sequence[ScaleEvent], rules: Rules,
                     now: float) -> int:
    """The fewest replicas the scale-down policies allow now (may exceed ``current``)."""
    if rules.select_policy == "Disabled":
        return current
    proposals = []
    for policy in rules.policies:
        start = _period_start(current, events, policy.period_seconds, now)
        proposals.append(start - int(policy.value) if policy.type == "Pods"
                         else int(start * (1 - policy.value / 100)))
    return max(proposals) if rules.select_policy == "Min" else min(proposals)


def apply_rate_limits(
    current: int,
    *,
    desired: int,
    events: Sequence[ScaleEvent],
    behavior: Behavior,
    min_replicas: int,
    max_replicas: int,
    now: float,
) -> Limited:
    """HPA's ``convertDesiredReplicasWithBehaviorRate``: policies, then the bounds."""
    if desired > current:
        up_limit = max(current, scale_up_limit(current, events=events,
                                               rules=behavior.scale_up, now=now))
        if up_limit < max_replicas:
            ceiling = Limited(up_limit, "ScaleUpLimit", "the desired replica count is increasing"
                              " faster than the maximum scale rate")
        else:
            ceiling = Limited(max_replicas, "AtMaxReplicas", "the desired replica count is more"
                              " than the maximum replica count")
        if desired > ceiling.replicas:
            return ceiling
    elif desired < current:
        down_limit = min(current, scale_down_limit(current, events=events,
                                                   rules=behavior.scale_down, now=now))
        if down_limit > min_replicas:
            floor = Limited(down_limit, "ScaleDownLimit", "the desired replica count is"
                            " decreasing faster than the maximum scale rate")
        else:
            floor = Limited(min_replicas, "AtMinReplicas", "the desired replica count is less"
                            " than the minimum replica count")
        if desired < floor.replicas:
            return floor
    return Limited(desired, WITHIN_RANGE, "the desired count is within range")


def bound(
    current: int,
    *,
    proposal: Limited,
    events: Sequence[ScaleEvent],
    behavior: Behavior,
    min_replicas: int,
    max_replicas: int,
    now: float,
) -> Limited:
    """Policies and bounds on a proposal, keeping the proposal's reason when they bind not."""
    limited = apply_rate_limits(
        current, desired=proposal.replicas, events=events, behavior=behavior,
        min_replicas=min_replicas, max_replicas=max_replicas, now=now,
    )
    return proposal if limited.replicas == proposal.replicas else limited


def remember_scale(events: Sequence[ScaleEvent], *, delta: int, behavior: Behavior,
                   now: float) -> list[ScaleEvent]:
    """The scale events with this change stored as the HPA's ``storeScaleEvent`` does: its
    direction's events older than that direction's longest period are marked outdated, and the
    change takes the place of the last outdated one, or is appended."""
    if not delta:
        return list(events)
    rules = behavior.scale_up if delta > 0 else behavior.scale_down
    cutoff = now - rules.longest_period
    kept, reusable = [], None
    for index, event in enumerate(events):
        if (event.delta > 0) == (delta > 0):
            if not event.outdated and event.time < cutoff:
                event = event.model_copy(update={"outdated": True})
            if event.outdated:
                reusable = index
        kept.append(event)
    latest = ScaleEvent(time=now, delta=delta)
    if reusable is None:
        kept.append(latest)
    else:
        kept[reusable] = latest
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
    """Plain HPA on a mean utilization (0..1): the replica count an HPA with these behaviours
    would set now, and what it remembers for the next sync."""
    behavior = behavior_of(scaling)
    remembered = with_first_recommendation(history, current=current, now=now)
    limited = bounds_first(current, min_replicas=min_replicas, max_replicas=max_replicas)
    if limited is None:
        recommended = usage_recommendation(
            current, utilization_percent=whole_percent(utilization),
            target_utilization_percent=scaling.target_utilization_percent,
            tolerance_percent=scaling.tolerance_percent,
        )
        stabilized = stabilize(current, recommended=recommended, history=remembered,
                               behavior=behavior, now=now)
        limited = bound(current, proposal=stabilized, events=events, behavior=behavior,
                        min_replicas=min_replicas, max_replicas=max_replicas, now=now)
        remembered = remember_recommendation(remembered, recommended=recommended,
                                             behavior=behavior, now=now)
    return HpaSync(
        limited, remembered,
        remember_scale(events, delta=limited.replicas - current, behavior=behavior, now=now),
    )


def bounds_first(current: int, *, min_replicas: int, max_replicas: int) -> Limited | None:
    """What the HPA decides before looking at any metric: nothing while the target has zero
    replicas (unless ``minReplicas`` is 0), else the bounds when ``current`` is outside them;
    None when the metrics decide."""
    if current == 0 and min_replicas != 0:
        return Limited(0, SCALING_DISABLED,
                       "scaling is disabled since the replica count of the target is zero")
    if current > max_replicas:
        return Limited(max_replicas, "AtMaxReplicas", "current replicas above maxReplicas")
    if current < min_replicas:
        return Limited(min_replicas, "AtMinReplicas", "current replicas below minReplicas")
    return None
