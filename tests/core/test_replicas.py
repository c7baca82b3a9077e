"""HPA parity: the replica arithmetic gives the counts the Kubernetes HPA documents.

Cases follow the HorizontalPodAutoscaler documentation (algorithm details, tolerance,
stabilization window, scaling policies with selectPolicy Max, period accounting).
"""

from __future__ import annotations

from typing import Any

import pytest

from meltguard.api.models import ScalingSpec
from meltguard.api.state import Recommendation, ScaleEvent
from meltguard.core.replicas import Limited, hpa_sync, usage_recommendation

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


def recommend(current: int, utilization: float) -> int:
    return usage_recommendation(current, utilization=utilization, target_utilization_percent=70,
                                tolerance_percent=10)


def test_usage_recommendation_worked_numbers() -> None:
    assert recommend(3, 0.91) == 4  # 3 x 1.3 = 3.9 -> 4
    assert recommend(7, 0.35) == 4  # 7 x 0.5 = 3.5 -> 4
    assert recommend(7, 0.77) == 7  # ratio 1.1: at the tolerance edge
    assert recommend(0, 1.0) == 0


def test_hpa_sync_remembers_its_recommendation_and_change() -> None:
    sync = hpa_sync(4, utilization=1.0, scaling=scaling(), min_replicas=1, max_replicas=10,
                    history=[], events=[], now=NOW)
    assert sync.limited.replicas == 8
    assert sync.history == [Recommendation(time=NOW, replicas=8)]
    assert sync.events == [ScaleEvent(time=NOW, delta=4)]


def test_limited_carries_a_message() -> None:
    result = hpa_sync(10, utilization=2.5, scaling=scaling(), min_replicas=1, max_replicas=15,
                      history=[], events=[], now=NOW).limited
    assert isinstance(result, Limited) and "maximum" in result.message
