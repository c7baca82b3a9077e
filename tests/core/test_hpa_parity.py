"""Parity with the Kubernetes HPA: its own test cases, run against meltguard's functions.

Every case of :mod:`tests.core.hpa_cases` and :mod:`tests.core.hpa_sync_cases` that a policy
can express runs through the function that does that step in meltguard, with its behaviour
written as a policy's ``spec.scaling`` (the HPA's ``behavior`` block, validated by the models).
Then every whole-percent utilization 0-300 %, target 1-100 % and replica count 1-50 is compared
with a reference written the way the HPA computes (integers to float64, no rounding).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np
import pytest

from meltguard.api.models import ScalingSpec
from meltguard.api.state import Recommendation, ScaleEvent
from meltguard.core.replicas import (
    Behavior,
    apply_rate_limits,
    behavior_of,
    hpa_sync,
    remember_recommendation,
    remember_scale,
    replicas_changed,
    scale_down_limit,
    scale_up_limit,
    stabilize,
    usage_recommendation,
    whole_percent,
)
from tests.core.hpa_cases import (
    CONVERT_WITHOUT_BEHAVIOR,
    LEGACY_BEHAVIOR,
    LIMITS,
    SCALING_WITH_RULES,
    STABILIZE_WITH_BEHAVIOR,
    STABILIZE_WITHOUT_BEHAVIOR,
    STORE_EVENTS,
    RateCase,
    StabilizeCase,
    StoreCase,
)
from tests.core.hpa_sync_cases import (
    LEFT_OUT,
    METRIC_CALCS,
    RESOURCE_CALCS,
    SYNCS,
    MetricCalc,
    ResourceCalc,
    SyncCase,
)

NOW = 1_750_000_000.0
TOLERANCE_PERCENT = 10  # upstream's defaultTestingTolerance 0.1
#: The HPA's ScalingLimited reasons where meltguard's names differ (alerts use meltguard's).
REASONS = {"TooManyReplicas": "AtMaxReplicas", "TooFewReplicas": "AtMinReplicas"}
#: An autoscaler that synced before but keeps no recent recommendation (upstream passes an empty
#: list): its memory holds one older than every window.
SYNCED_BEFORE = (Recommendation(time=NOW - 7200, replicas=0),)


def behavior(block: dict[str, Any]) -> Behavior:
    """The rules in force for a policy whose ``spec.scaling.behavior`` is ``block``."""
    return behavior_of(ScalingSpec.model_validate({"behavior": block}))


def events(up: tuple[tuple[int, int], ...] = (),
           down: tuple[tuple[int, int], ...] = ()) -> list[ScaleEvent]:
    """Scale events from upstream's (change, age) pairs, scale-downs negative."""
    return ([ScaleEvent(time=NOW - age, delta=change) for change, age in up]
            + [ScaleEvent(time=NOW - age, delta=-change) for change, age in down])


def history(pairs: tuple[tuple[int, int], ...]) -> list[Recommendation]:
    return [Recommendation(time=NOW - age, replicas=replicas) for replicas, age in pairs]


def policy_metric(usage: int, target: int) -> tuple[float, int] | None:
    """(mean utilization, target percent) giving the case's usage ratio exactly, or None when
    no whole-percent utilization over a 1-100 % target does (a custom or external metric)."""
    if target <= 100:
        return usage / 100, target
    ratio = Fraction(usage, target)
    if ratio.denominator > 100:
        return None
    return ratio.numerator / 100, ratio.denominator


@pytest.mark.parametrize("case", SCALING_WITH_RULES, ids=lambda case: case.name)
def test_scaling_policies(case: RateCase) -> None:
    block = {key: value for key, value in (("scaleUp", case.scale_up),
                                            ("scaleDown", case.scale_down)) if value}
    limited = apply_rate_limits(
        case.current, desired=case.desired, events=events(case.up_events, case.down_events),
        behavior=behavior(block), min_replicas=case.min_replicas,
        max_replicas=case.max_replicas, now=NOW,
    )
    assert (limited.replicas, limited.reason) == (
        case.expected, REASONS.get(case.condition, case.condition))


@pytest.mark.parametrize(("name", "current", "desired", "low", "high", "expected", "condition"),
                         CONVERT_WITHOUT_BEHAVIOR, ids=[row[0] for row in CONVERT_WITHOUT_BEHAVIOR])
def test_limits_of_an_hpa_without_behavior(name: str, current: int, desired: int, low: int,
                                           high: int, expected: int, condition: str) -> None:
    limited = apply_rate_limits(current, desired=desired, events=[],
                                behavior=behavior(LEGACY_BEHAVIOR), min_replicas=low,
                                max_replicas=high, now=NOW)
    assert (limited.replicas, limited.reason) == (expected, REASONS.get(condition, condition))


@pytest.mark.parametrize(("direction", "current", "rules", "expected"), LIMITS,
                         ids=[row[0] for row in LIMITS])
def test_select_policy_min(direction: str, current: int, rules: dict[str, Any],
                           expected: int) -> None:
    both = behavior({"scaleUp": rules, "scaleDown": rules})
    limit = scale_up_limit if direction == "up" else scale_down_limit
    assert limit(current, events=[], rules=both.scale_up, now=NOW) == expected


@pytest.mark.parametrize("case", STABILIZE_WITH_BEHAVIOR, ids=lambda case: case.name)
def test_stabilization_windows(case: StabilizeCase) -> None:
    windows = behavior({"scaleUp": {"stabilizationWindowSeconds": case.up_window},
                        "scaleDown": {"stabilizationWindowSeconds": case.down_window}})
    past = history(case.history)
    stabilized = stabilize(case.current, recommended=case.desired, history=past,
                           behavior=windows, now=NOW)
    assert stabilized.replicas == case.expected
    kept = remember_recommendation(past, recommended=case.desired, behavior=windows, now=NOW)
    if case.remembered is not None:
        assert tuple(past.replicas for past in kept) == case.remembered
        assert kept[case.remembered.index(case.desired)].time == NOW


@pytest.mark.parametrize(("name", "pairs", "desired", "expected", "length"),
                         STABILIZE_WITHOUT_BEHAVIOR,
                         ids=[row[0] for row in STABILIZE_WITHOUT_BEHAVIOR])
def test_stabilization_of_an_hpa_without_behavior(name: str, pairs: tuple[tuple[int, int], ...],
                                                  desired: int, expected: int,
                                                  length: int) -> None:
    # That step ignores the current count; meltguard's bounds by it, which changes nothing
    # when the current count is at least every recommendation.
    current = max([desired, *(replicas for replicas, _ in pairs)])
    legacy, past = behavior(LEGACY_BEHAVIOR), history(pairs)
    assert stabilize(current, recommended=desired, history=past, behavior=legacy,
                     now=NOW).replicas == expected
    assert len(remember_recommendation(past, recommended=desired, behavior=legacy,
                                       now=NOW)) == length


STORABLE = [case for case in STORE_EVENTS if case.expressible]


@pytest.mark.parametrize("case", STORABLE, ids=lambda case: case.name)
@pytest.mark.parametrize("sign", [1, -1], ids=["scale up", "scale down"])
def test_scale_event_bookkeeping(case: StoreCase, sign: int) -> None:
    previous = events(case.previous) if sign > 0 else events(down=case.previous)
    assert sign * replicas_changed(previous, period_seconds=60, now=NOW) == case.changed_in_60s
    direction = "scaleUp" if sign > 0 else "scaleDown"
    stored = remember_scale(previous, delta=sign * 5, behavior=behavior({direction: case.rules}),
                            now=NOW)
    assert tuple((abs(event.delta), event.outdated) for event in stored) == case.stored
    assert all(event.delta * sign > 0 for event in stored)


EXPRESSIBLE_SYNCS = [case for case in SYNCS if policy_metric(case.usage, case.target)]
METRIC_ONLY_SYNCS = [case for case in SYNCS if not policy_metric(case.usage, case.target)]


@pytest.mark.parametrize("case", EXPRESSIBLE_SYNCS, ids=lambda case: case.name)
def test_whole_syncs(case: SyncCase) -> None:
    metric = policy_metric(case.usage, case.target)
    assert metric is not None
    utilization, target = metric
    if case.behavior is None:  # where LEGACY_BEHAVIOR is exact
        assert case.history in (None, ())
    spec = ScalingSpec.model_validate({
        "targetUtilizationPercent": target, "tolerancePercent": TOLERANCE_PERCENT,
        "behavior": case.behavior or LEGACY_BEHAVIOR,
    })
    memory = [] if case.history is None else [*SYNCED_BEFORE, *history(case.history)]
    sync = hpa_sync(case.current, utilization=utilization, scaling=spec,
                    min_replicas=case.min_replicas, max_replicas=case.max_replicas,
                    history=memory, events=[], now=NOW)
    assert sync.limited.replicas == case.expected
    if case.reason:
        assert sync.limited.reason == REASONS.get(case.reason, case.reason)


@pytest.mark.parametrize("case", METRIC_ONLY_SYNCS, ids=lambda case: case.name)
def test_syncs_on_custom_metrics_agree_in_the_arithmetic(case: SyncCase) -> None:
    """No policy selects these metrics; the step they test (tolerance, rounding) agrees."""
    assert usage_recommendation(case.current, utilization_percent=case.usage,
                                target_utilization_percent=case.target,
                                tolerance_percent=TOLERANCE_PERCENT) == case.expected


@pytest.mark.parametrize("case", RESOURCE_CALCS, ids=lambda case: case.name)
def test_replica_calculator_on_utilization(case: ResourceCalc) -> None:
    assert whole_percent(sum(case.levels) / sum(case.requests)) == case.utilization
    assert usage_recommendation(case.current, utilization_percent=case.utilization,
                                target_utilization_percent=case.target,
                                tolerance_percent=TOLERANCE_PERCENT) == case.expected


@pytest.mark.parametrize("case", METRIC_CALCS, ids=lambda case: case.name)
def test_replica_calculator_on_metric_values(case: MetricCalc) -> None:
    assert usage_recommendation(case.current, utilization_percent=case.usage,
                                target_utilization_percent=case.target,
                                tolerance_percent=TOLERANCE_PERCENT) == case.expected


def test_transcribed_and_left_out_cases_are_distinct() -> None:
    transcribed = [case.name for case in SYNCS] + [case.name for case in RESOURCE_CALCS] + [
        case.name for case in METRIC_CALCS]
    assert len(transcribed) == len(set(transcribed))
    assert not set(transcribed) & set(LEFT_OUT)
    assert len(SYNCS) == len(EXPRESSIBLE_SYNCS) + len(METRIC_ONLY_SYNCS)


def kubernetes_reference(utilization: np.ndarray, target: np.ndarray,
                         current: np.ndarray) -> np.ndarray:
    """The HPA's recommendation, vectorized: whole percents divided in float64, tolerance
    compared as is, ceil of ratio x replicas."""
    ratio = utilization.astype(np.float64) / target.astype(np.float64)
    within = np.abs(1.0 - ratio) <= TOLERANCE_PERCENT / 100
    return np.where(within, current, np.ceil(ratio * current)).astype(np.int64)


def test_every_whole_percent_target_and_count_matches_the_reference() -> None:
    percents, targets, counts = np.arange(0, 301), np.arange(1, 101), np.arange(1, 51)
    grid = np.meshgrid(percents, targets, counts, indexing="ij")
    expected = kubernetes_reference(*grid)
    got = np.empty_like(expected)
    for i, percent in enumerate(percents.tolist()):
        measured = whole_percent(percent / 100)  # a GPU mean arrives as a fraction
        assert measured == percent
        for j, target in enumerate(targets.tolist()):
            got[i, j] = [usage_recommendation(count, utilization_percent=measured,
                                              target_utilization_percent=target,
                                              tolerance_percent=TOLERANCE_PERCENT)
                         for count in counts.tolist()]
    differ = np.argwhere(got != expected)
    assert expected.size == 1_505_000
    assert differ.size == 0, [
        (int(percents[i]), int(targets[j]), int(counts[k]), int(got[i, j, k]),
         int(expected[i, j, k])) for i, j, k in differ[:10]]
