"""The replica arithmetic on worked cases: the HorizontalPodAutoscaler documentation's examples
(written with meltguard's shorthand), the float edges the HPA has, the first sync, zero
replicas, select policies, the scale-event memory and reading an older status.

Kubernetes' own test tables run in ``test_hpa_parity.py``.
"""

from __future__ import annotations

from typing import Any

import pytest

from meltguard.api.models import ScalingSpec
from meltguard.api.state import ControllerState, Recommendation, ScaleEvent
from meltguard.core.replicas import (
    Limited,
    Policy,
    Rules,
    behavior_of,
    hpa_sync,
    remember_scale,
    scale_down_limit,
    scale_up_limit,
    usage_recommendation,
    whole_percent,
)

NOW = 10_000.0


def scaling(up: dict[str, Any] | None = None, down: dict[str, Any] | None = None,
            target: float = 50, tolerance: float = 10) -> ScalingSpec:
    """HPA's default behaviours unless overridden (up: 4 pods or 100 % per 15 s, no window;
    down: 100 % per 15 s with a 300 s window)."""
    return ScalingSpec.model_validate({
        "targetUtilizationPercent": target,
        "tolerancePercent": tolerance,
        "scaleUp": up or {"stabilizationSeconds": 0, "maxStepReplicas": 4,
                          "maxStepPercent": 100, "periodSeconds": 15},
        "scaleDown": down or {"stabilizationSeconds": 300, "maxStepPercent": 100,
                              "periodSeconds": 15},
    })


NO_WINDOW_DOWN = {"stabilizationSeconds": 0, "maxStepPercent": 100, "periodSeconds": 15}
DOC_DOWN = {"stabilizationSeconds": 0, "maxStepReplicas": 4, "maxStepPercent": 10,
            "periodSeconds": 60}

# (case, current, utilization, scaling, min, max, history, events, expected replicas, reason)
HPA_CASES = [
    ("metric at twice the target doubles the replicas", 2, 1.0, scaling(), 1, 10, [], [], 4,
     "DesiredWithinRange"),
    ("metric at half the target halves the replicas", 4, 0.25, scaling(down=NO_WINDOW_DOWN),
     1, 10, [], [], 2, "DesiredWithinRange"),
    ("within the 10 % tolerance nothing changes", 10, 0.54, scaling(), 1, 20, [], [], 10,
     "DesiredWithinRange"),
    ("just past tolerance rounds up", 10, 0.56, scaling(), 1, 20, [], [], 12,
     "DesiredWithinRange"),
    ("scale-up policies, Max: 100 % beats 4 pods at 10 replicas", 10, 2.5, scaling(), 1, 100,
     [], [], 20, "ScaleUpLimit"),
    ("scale-up policies, Max: 4 pods beats 100 % at 2 replicas", 2, 2.5, scaling(), 1, 100,
     [], [], 6, "ScaleUpLimit"),
    ("maxReplicas caps the scale-up", 10, 2.5, scaling(), 1, 15, [], [], 15, "AtMaxReplicas"),
    ("scale-down window keeps the highest recent recommendation", 10, 0.25, scaling(), 1, 20,
     [Recommendation(time=NOW - 200, replicas=10), Recommendation(time=NOW - 100, replicas=8)],
     [], 10, "StabilizationWindow"),
    ("recommendations older than the window no longer count", 10, 0.25, scaling(), 1, 20,
     [Recommendation(time=NOW - 301, replicas=10)], [], 5, "DesiredWithinRange"),
    ("scale-down policies, Max: 10 % (8) beats 4 pods at 80 replicas", 80, 0.05,
     scaling(down=DOC_DOWN), 1, 100, [], [], 72, "ScaleDownLimit"),
    ("scale-down policies, Max: 4 pods beats 10 % (3) at 30 replicas", 30, 0.05,
     scaling(down=DOC_DOWN), 1, 100, [], [], 26, "ScaleDownLimit"),
    ("changes already made in the period count against the step", 72, 0.05,
     scaling(down=DOC_DOWN), 1, 100, [], [ScaleEvent(time=NOW - 30, delta=-8)], 72,
     "ScaleDownLimit"),
    ("a scale-up stabilization window holds the lowest recent recommendation", 4, 1.0,
     scaling(up={"stabilizationSeconds": 60, "maxStepReplicas": 4, "periodSeconds": 15}),
     1, 20, [Recommendation(time=NOW - 30, replicas=4)], [], 4, "StabilizationWindow"),
    ("minReplicas bounds the scale-down", 4, 0.05, scaling(down=NO_WINDOW_DOWN), 3, 10, [], [],
     3, "AtMinReplicas"),
    ("current above maxReplicas comes down to it", 12, 0.5, scaling(), 1, 10, [], [], 10,
     "AtMaxReplicas"),
]


@pytest.mark.parametrize(
    ("current", "utilization", "spec", "low", "high", "history", "events", "expected", "reason"),
    [case[1:] for case in HPA_CASES],
    ids=[case[0] for case in HPA_CASES],
)
def test_hpa_parity(current: int, utilization: float, spec: ScalingSpec, low: int, high: int,
                    history: list[Recommendation], events: list[ScaleEvent], expected: int,
                    reason: str) -> None:
    result = hpa_sync(current, utilization=utilization, scaling=spec, min_replicas=low,
                      max_replicas=high, history=history, events=events, now=NOW).limited
    assert (result.replicas, result.reason) == (expected, reason)


def recommend(current: int, utilization_percent: int, target: float = 70) -> int:
    return usage_recommendation(current, utilization_percent=utilization_percent,
                                target_utilization_percent=target, tolerance_percent=10)


def test_usage_recommendation_worked_numbers() -> None:
    assert recommend(3, 91) == 4  # 3 x 1.3 = 3.9 -> 4
    assert recommend(7, 35) == 4  # 7 x 0.5 = 3.5 -> 4


def test_the_tolerance_is_compared_in_float64_without_rounding() -> None:
    # 77 / 70 = 1.1000000000000001: |1 - ratio| is just above 0.1, so the HPA scales
    assert [recommend(7, 77), recommend(10, 55, 50), recommend(20, 66, 60),
            recommend(5, 99, 90)] == [8, 11, 22, 6]
    assert recommend(10, 63, 70) == 10  # 0.9 exactly: within


def test_whole_percents_are_divided_not_fractions() -> None:
    # 7 / 70 is 0.1 exactly (0.07 / 0.7 would be 0.10000000000000002): 10 x 0.1 = 1
    assert recommend(10, 7) == 1


def test_utilization_is_truncated_to_a_whole_percent() -> None:
    assert [whole_percent(0.5599), whole_percent(0.29), whole_percent(0.0)] == [55, 29, 0]
    assert whole_percent((0.55 + 0.56) / 2) == 55  # a mean of whole percents: 55.5 -> 55
    assert recommend(10, whole_percent(0.5599), 50) == 11  # not 12 from 55.99 %


def test_from_zero_replicas_the_ratio_alone_counts_and_tolerance_is_ignored() -> None:
    assert [recommend(0, 20, 15), recommend(0, 15, 15), recommend(0, 0, 15)] == [2, 1, 0]


def test_first_sync_records_the_count_found_and_holds_scale_down_for_the_window() -> None:
    spec = scaling(target=50)  # scale-down window 300 s
    first = hpa_sync(5, utilization=0.28, scaling=spec, min_replicas=2, max_replicas=6,
                     history=[], events=[], now=NOW)
    assert first.limited.replicas == 5
    assert first.history == [Recommendation(time=NOW, replicas=5),
                             Recommendation(time=NOW, replicas=3)]
    later = hpa_sync(5, utilization=0.28, scaling=spec, min_replicas=2, max_replicas=6,
                     history=first.history, events=first.events, now=NOW + 301)
    assert later.limited.replicas == 3


def test_zero_replicas_disable_scaling_unless_min_replicas_is_zero() -> None:
    disabled = hpa_sync(0, utilization=0.9, scaling=scaling(), min_replicas=3, max_replicas=5,
                        history=[], events=[], now=NOW)
    assert (disabled.limited.replicas, disabled.limited.reason) == (0, "ScalingDisabled")
    assert disabled.events == []
    from_zero = hpa_sync(0, utilization=0.9, scaling=scaling(), min_replicas=0, max_replicas=5,
                         history=[], events=[], now=NOW)
    assert from_zero.limited.replicas == 2  # ceil(90 / 50)
    assert from_zero.events == [ScaleEvent(time=NOW, delta=2)]


def test_hpa_sync_remembers_its_recommendation_and_change() -> None:
    sync = hpa_sync(4, utilization=1.0, scaling=scaling(), min_replicas=1, max_replicas=10,
                    history=[], events=[], now=NOW)
    assert sync.limited.replicas == 8
    assert sync.history == [Recommendation(time=NOW, replicas=4),
                            Recommendation(time=NOW, replicas=8)]
    assert sync.events == [ScaleEvent(time=NOW, delta=4)]


def test_outside_the_bounds_no_recommendation_is_recorded() -> None:
    past = [Recommendation(time=NOW - 30, replicas=9)]
    sync = hpa_sync(12, utilization=0.5, scaling=scaling(), min_replicas=1, max_replicas=10,
                    history=past, events=[], now=NOW)
    assert (sync.limited.replicas, sync.history) == (10, past)


def test_limited_carries_a_message() -> None:
    result = hpa_sync(10, utilization=2.5, scaling=scaling(), min_replicas=1, max_replicas=15,
                      history=[], events=[], now=NOW).limited
    assert isinstance(result, Limited) and "maximum" in result.message


def test_a_behavior_block_is_in_force_as_written_with_the_hpa_defaults() -> None:
    rules = behavior_of(ScalingSpec.model_validate({"behavior": {"scaleDown": {
        "selectPolicy": "Min", "policies": [{"type": "Pods", "value": 2, "periodSeconds": 30}],
    }}}))
    assert rules.scale_up == Rules(0, "Max", (Policy("Pods", 4, 15), Policy("Percent", 100, 15)))
    assert rules.scale_down == Rules(300, "Min", (Policy("Pods", 2, 30),))
    defaults = behavior_of(ScalingSpec.model_validate({"behavior": {}}))
    assert defaults.scale_down == Rules(300, "Max", (Policy("Percent", 100, 15),))


def test_the_shorthand_and_its_defaults_stay_in_force_without_behavior() -> None:
    rules = behavior_of(ScalingSpec.model_validate(
        {"scaleDown": {"stabilizationSeconds": 60, "maxStepReplicas": 2, "maxStepPercent": 12.5,
                       "periodSeconds": 30}}))
    assert rules.scale_up == Rules(0, "Max", (Policy("Pods", 8, 15), Policy("Percent", 100, 15)))
    assert rules.scale_down == Rules(60, "Max", (Policy("Pods", 2, 30),
                                                 Policy("Percent", 12.5, 30)))
    assert behavior_of(ScalingSpec()).scale_down == Rules(300, "Max", (Policy("Percent", 10, 60),))


def test_select_policy_min_takes_the_smaller_change_and_disabled_none() -> None:
    def limits(select: str) -> tuple[int, int]:
        policies = [{"type": "Pods", "value": 4, "periodSeconds": 60},
                    {"type": "Percent", "value": 50, "periodSeconds": 60}]
        block = {"selectPolicy": select, "policies": policies}
        rules = behavior_of(ScalingSpec.model_validate(
            {"behavior": {"scaleUp": block, "scaleDown": block}}))
        return (scale_up_limit(20, events=[], rules=rules.scale_up, now=NOW),
                scale_down_limit(20, events=[], rules=rules.scale_down, now=NOW))

    assert limits("Max") == (30, 10)
    assert limits("Min") == (24, 16)
    assert limits("Disabled") == (20, 20)


def test_a_disabled_direction_holds_the_count() -> None:
    spec = ScalingSpec.model_validate({"targetUtilizationPercent": 50, "behavior": {
        "scaleDown": {"stabilizationWindowSeconds": 0, "selectPolicy": "Disabled"}}})
    sync = hpa_sync(10, utilization=0.1, scaling=spec, min_replicas=1, max_replicas=20,
                    history=[Recommendation(time=NOW - 7200, replicas=10)], events=[], now=NOW)
    assert (sync.limited.replicas, sync.limited.reason) == (10, "ScaleDownLimit")


def test_an_outdated_scale_event_is_replaced_not_dropped() -> None:
    rules = behavior_of(scaling())  # both directions: longest policy period 15 s
    old = [ScaleEvent(time=NOW - 600, delta=3), ScaleEvent(time=NOW - 500, delta=-2),
           ScaleEvent(time=NOW - 5, delta=1)]
    stored = remember_scale(old, delta=2, behavior=rules, now=NOW)
    assert stored == [ScaleEvent(time=NOW, delta=2), old[1], old[2]]
    stored = remember_scale(stored, delta=-1, behavior=rules, now=NOW + 1)
    assert stored[1] == ScaleEvent(time=NOW + 1, delta=-1)
    assert remember_scale(stored, delta=0, behavior=rules, now=NOW + 2) == stored


def test_a_status_written_before_behavior_existed_is_read_and_carried_on() -> None:
    # scaleEvents without "outdated", recommendations trimmed to the windows: the old shape
    status = {"recommendations": [{"time": NOW - 100, "replicas": 6}],
              "scaleEvents": [{"time": NOW - 30, "delta": -2}], "lastScaleTime": NOW - 30}
    state = ControllerState.from_dict(status)
    assert state.scale_events == [ScaleEvent(time=NOW - 30, delta=-2, outdated=False)]
    sync = hpa_sync(4, utilization=0.1, scaling=scaling(), min_replicas=1, max_replicas=10,
                    history=state.recommendations, events=state.scale_events, now=NOW)
    # the remembered 6 is inside the 300 s window: no scale-down to 1
    assert (sync.limited.replicas, sync.limited.reason) == (4, "StabilizationWindow")
    assert ControllerState.from_dict(state.to_dict()) == state
