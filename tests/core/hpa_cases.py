"""Kubernetes' own HPA test cases, transcribed as data: inputs and expected outputs only.

Sources: ``pkg/controller/podautoscaler/horizontal_test.go`` and ``replica_calculator_test.go``
of kubernetes/kubernetes, read from copies newer than v1.28 whose tables test the v1.28 code
paths (both stabilization windows on every sync, scale events of both directions counted per
policy period). Names are the upstream test names (and ``t.Run`` names for table rows).
Times are written as ages: seconds before the sync. Upstream test constants: tolerance 0.1, a
5 minute downscale stabilization window for autoscalers without ``behavior``, and
``scaleUpLimitFactor`` 8.

A row needing what no policy can say is not expressible (:attr:`StoreCase.expressible`; for
whole syncs, a metric ratio no GPU utilization reproduces); the upstream tests left out (pod
readiness, missing metrics, API errors: how the HPA measures pods, which meltguard replaces with
GPU telemetry) are listed in :data:`tests.core.hpa_sync_cases.LEFT_OUT`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Rules = dict[str, Any]


def rules(pods: tuple[int, int] | None = None, percent: tuple[int, int] | None = None,
          window: int = 0) -> Rules:
    """An HPA ``HPAScalingRules`` block as upstream's ``generateScalingRules`` builds it:
    (value, periodSeconds) per policy type, Max select policy."""
    policies = [{"type": kind, "value": value, "periodSeconds": period}
                for kind, spec in (("Pods", pods), ("Percent", percent)) if spec
                for value, period in [spec]]
    return {"stabilizationWindowSeconds": window, "selectPolicy": "Max", "policies": policies}


def uniform_events(changes: tuple[int, ...], period: int) -> tuple[tuple[int, int], ...]:
    """(change, age) as upstream's ``generateEventsUniformDistribution`` places them: each in
    the middle of its share of the last ``period`` seconds, ages truncated to whole seconds."""
    segment = period / len(changes)
    return tuple((change, int(period - segment * (index + 1) + segment / 2))
                 for index, change in enumerate(changes))


#: An autoscaler without ``behavior`` (the legacy path) for one sync without earlier scale
#: events, written as a behavior: cap max(8 x current, 4) = max(current + 4, 8 x current)
#: (the tests' scaleUpLimitFactor 8), no scale-up window, the 300 s downscale window, no
#: scale-down rate limit. Exact while no remembered recommendation exceeds both the current
#: and the desired count (the legacy window may raise a count above the current one).
LEGACY_BEHAVIOR: dict[str, Rules] = {
    "scaleUp": rules(pods=(4, 15), percent=(700, 15)),
    "scaleDown": rules(percent=(100, 15), window=300),
}


@dataclass(frozen=True)
class RateCase:
    """``TestScalingWithRules``: ``convertDesiredReplicasWithBehaviorRate``."""

    name: str
    current: int
    desired: int
    min_replicas: int
    max_replicas: int
    expected: int
    condition: str
    scale_up: Rules | None = None
    scale_down: Rules | None = None
    up_events: tuple[tuple[int, int], ...] = ()
    down_events: tuple[tuple[int, int], ...] = ()
    skipped_upstream: bool = False


E159 = uniform_events((1, 5, 9), 120)
E8129 = uniform_events((8, 12, 9, 11), 120)
E10 = uniform_events((10, 10, 10), 120)
UP, DOWN, MAX, MIN, WITHIN = "ScaleUpLimit", "ScaleDownLimit", "TooManyReplicas", \
    "TooFewReplicas", "DesiredWithinRange"

SCALING_WITH_RULES = [
    RateCase("prenormalized desired replicas within range", 5, 7, 3, 8, 7, WITHIN),
    RateCase("prenormalized desired replicas < minReplicas", 3, 1, 2, 8, 2, MIN),
    RateCase("prenormalized desired replicas within range when minReplicas is 0", 1, 0, 0, 10,
             0, WITHIN),
    RateCase("maxReplicas is the limit because maxReplicas < scaleUpLimit", 20, 1000, 1, 10,
             10, MAX),
    RateCase("desired replica count is more than the maximum replica count", 100, 1000, 100,
             150, 150, MAX),
    RateCase("scaleUpLimit is the limit because scaleUpLimit < maxReplicas with user policies",
             3, 1000, 1, 2000, 4, UP, scale_up=rules(percent=(1, 60))),
    RateCase("scaleDownLimit is the limit because scaleDownLimit > minReplicas with user "
             "defined policies", 1000, 3, 3, 2000, 980, DOWN, scale_down=rules(pods=(20, 60)),
             skipped_upstream=True),
    RateCase("scaleUp with default behavior", 10, 50, 1, 1000, 20, UP),
    RateCase("scaleUp with pods policy larger than percent policy", 10, 500, 1, 1000, 110, UP,
             scale_up=rules(pods=(100, 60), percent=(100, 60))),
    RateCase("scaleUp with percent policy larger than pods policy", 10, 500, 1, 1000, 20, UP,
             scale_up=rules(pods=(2, 60), percent=(100, 60))),
    RateCase("scaleUp with spec MaxReplicas limitation with large pod policy", 10, 50, 1, 1000,
             50, WITHIN, scale_up=rules(pods=(100, 60))),
    RateCase("scaleUp with spec MaxReplicas limitation with large percent policy", 10, 50, 1,
             1000, 50, WITHIN, scale_up=rules(pods=(10000, 60))),
    RateCase("scaleUp with pod policy limitation", 10, 50, 1, 1000, 40, UP,
             scale_up=rules(pods=(30, 60))),
    RateCase("scaleUp with percent policy limitation", 10, 50, 1, 1000, 30, UP,
             scale_up=rules(percent=(200, 60))),
    RateCase("scaleDown with percent policy larger than pod policy", 100, 2, 1, 1000, 80, DOWN,
             scale_down=rules(pods=(20, 60), percent=(1, 60), window=300)),
    RateCase("scaleDown with pod policy larger than percent policy", 100, 2, 1, 1000, 98, DOWN,
             scale_down=rules(pods=(2, 60), percent=(1, 60), window=300)),
    RateCase("scaleDown with spec MinReplicas=nil limitation with large pod policy", 10, 0, 1,
             1000, 1, MIN, scale_down=rules(pods=(100, 60), window=300)),
    RateCase("scaleDown with spec MinReplicas limitation with large pod policy", 10, 0, 1, 1000,
             1, MIN, scale_down=rules(pods=(100, 60), window=300)),
    RateCase("scaleDown with spec MinReplicas limitation with large percent policy", 10, 2, 5,
             1000, 5, MIN, scale_down=rules(percent=(100, 60), window=300)),
    RateCase("scaleDown with pod policy limitation", 10, 2, 1, 1000, 5, DOWN,
             scale_down=rules(pods=(5, 60), window=300)),
    RateCase("scaleDown with percent policy limitation", 10, 5, 1, 1000, 5, WITHIN,
             scale_down=rules(percent=(50, 60), window=300)),
    RateCase("scaleUp with spec MaxReplicas limitation with large pod policy and events", 100,
             500, 1, 200, 200, MAX, scale_up=rules(pods=(300, 60)), up_events=E159),
    RateCase("scaleUp with spec MaxReplicas limitation with large percent policy and events",
             100, 500, 1, 200, 200, MAX, scale_up=rules(percent=(10000, 60)), up_events=E159),
    RateCase("scaleUp with currentReplicas limitation with rate.PeriodSeconds with a lot of "
             "recent scale up events", 100, 500, 1, 1000, 100, UP,
             scale_up=rules(pods=(5, 120)), up_events=E159),
    RateCase("scaleUp with pod policy and previous scale up events", 100, 500, 1, 1000, 235, UP,
             scale_up=rules(pods=(150, 120)), up_events=E159),
    RateCase("scaleUp with percent policy and previous scale up events", 100, 500, 1, 1000,
             255, UP, scale_up=rules(percent=(200, 120)), up_events=E159),
    RateCase("scaleUp with percent policy and previous scale up and down events", 6, 24, 1,
             1000, 16, UP, scale_up=rules(percent=(300, 300)),
             up_events=uniform_events((4,), 120), down_events=uniform_events((2,), 120)),
    RateCase("scaleDown with default policy and previous events", 10, 5, 1, 1000, 5, WITHIN,
             down_events=E159),
    RateCase("scaleDown with spec MinReplicas=nil limitation with large pod policy and "
             "previous events", 100, 0, 1, 1000, 1, MIN,
             scale_down=rules(pods=(115, 120), window=300), down_events=E159),
    RateCase("scaleDown with spec MinReplicas limitation with large pod policy and previous "
             "events", 100, 0, 5, 1000, 5, MIN, scale_down=rules(pods=(130, 120), window=300),
             down_events=E159),
    RateCase("scaleDown with spec MinReplicas limitation with large percent policy and "
             "previous events", 100, 2, 5, 1000, 5, MIN,
             scale_down=rules(percent=(100, 120), window=300), down_events=E159),
    RateCase("scaleDown with pod policy limitation and previous events", 100, 2, 1, 1000, 100,
             DOWN, scale_down=rules(pods=(5, 120), window=300), down_events=E159),
    RateCase("scaleDown with percent policy limitation and previous events", 100, 0, 1, 1000,
             56, DOWN, scale_down=rules(percent=(50, 120), window=300),
             down_events=uniform_events((2, 4, 6), 120)),
    RateCase("scaleDown with percent policy and previous scale up and down events", 10, 1, 1,
             1000, 6, DOWN, scale_down=rules(percent=(50, 180)),
             up_events=uniform_events((2,), 120), down_events=uniform_events((4,), 120)),
    RateCase("scaleDown with previous events preventing further scale down", 100, 0, 1, 1000,
             100, DOWN, scale_down=rules(percent=(10, 120), window=300), down_events=E10),
    RateCase("scaleDown with with previous events still allowing more scale down", 10, 5, 1,
             1000, 5, WITHIN, scale_down=rules(percent=(1000, 120), window=300),
             down_events=E10),
    RateCase("check 'outdated' flag for events for one behavior for up", 100, 200, 1, 1000, 200,
             WITHIN, scale_up=rules(pods=(1000, 60)), up_events=E8129),
    RateCase("check that events were not marked 'outdated' for two different policies in the "
             "behavior for up", 100, 200, 1, 1000, 200, WITHIN,
             scale_up=rules(pods=(1000, 120), percent=(100, 60)), up_events=E8129),
    RateCase("check that events were marked 'outdated' for two different policies in the "
             "behavior for up", 100, 200, 1, 1000, 200, WITHIN,
             scale_up=rules(pods=(1000, 30), percent=(100, 60)), up_events=E8129),
    RateCase("check 'outdated' flag for events for one behavior for down", 100, 5, 1, 1000, 5,
             WITHIN, scale_down=rules(pods=(1000, 60), window=300), down_events=E8129),
    RateCase("check that events were not marked 'outdated' for two different policies in the "
             "behavior for down", 100, 5, 1, 1000, 5, WITHIN,
             scale_down=rules(pods=(1000, 120), percent=(100, 60), window=300),
             down_events=E8129),
    RateCase("check that events were marked 'outdated' for two different policies in the "
             "behavior for down", 100, 5, 1, 1000, 5, WITHIN,
             scale_down=rules(pods=(1000, 30), percent=(100, 60), window=300),
             down_events=E8129),
]

#: ``TestConvertDesiredReplicasWithRules`` (no ``behavior``: run with :data:`LEGACY_BEHAVIOR`):
#: (name, current, desired, min, max, expected, condition).
CONVERT_WITHOUT_BEHAVIOR = [
    ("prenormalized desired replicas within range", 5, 7, 3, 8, 7, WITHIN),
    ("prenormalized desired replicas < minReplicas", 3, 1, 2, 8, 2, MIN),
    ("prenormalized desired zeroed replicas within range", 1, 0, 0, 10, 0, WITHIN),
    ("maxReplicas is the limit because maxReplicas < scaleUpLimit", 20, 1000, 1, 10, 10, MAX),
    # calculateScaleUpLimit(3) = max(8 x 3, 4) with the tests' scaleUpLimitFactor 8
    ("scaleUpLimit is the limit because scaleUpLimit < maxReplicas", 3, 1000, 1, 2000, 24, UP),
]

#: ``TestCalculateScaleUpLimitWithScalingRules`` / ``...ScaleDownLimitWithBehaviors``:
#: (direction, current, rules, expected limit), no scale events.
MIN_SELECT = {"stabilizationWindowSeconds": 300, "selectPolicy": "Min", "policies": [
    {"type": "Pods", "value": 2, "periodSeconds": 60},
    {"type": "Percent", "value": 50, "periodSeconds": 60}]}
LIMITS = [("up", 1, MIN_SELECT, 2), ("down", 5, MIN_SELECT, 3)]


@dataclass(frozen=True)
class StabilizeCase:
    """``TestNormalizeDesiredReplicasWithBehavior``: ``stabilizeRecommendationWithBehaviors``;
    ``remembered`` is the stored list's replicas afterwards (None: not checked upstream)."""

    name: str
    history: tuple[tuple[int, int], ...]
    current: int
    desired: int
    expected: int
    remembered: tuple[int, ...] | None
    up_window: int = 0
    down_window: int = 0


RECENT = ((4, 120), (5, 60))
OLD = ((10, 600), (9, 540))
STABILIZE_WITH_BEHAVIOR = [
    StabilizeCase("empty recommendations for scaling down", (), 100, 5, 5, (5,)),
    StabilizeCase("simple scale down stabilization", RECENT, 100, 3, 5, (4, 5, 3),
                  down_window=180),
    StabilizeCase("simple scale up stabilization", RECENT, 1, 7, 4, (4, 5, 7), up_window=300),
    StabilizeCase("no scale down stabilization", ((1, 120), (2, 60)), 100, 3, 3, (1, 2, 3),
                  up_window=300),
    StabilizeCase("no scale up stabilization", RECENT, 1, 3, 3, (4, 5, 3), down_window=300),
    StabilizeCase("no scale down stabilization, reuse recommendation element", OLD, 100, 3, 3,
                  (10, 3)),
    StabilizeCase("no scale up stabilization, reuse recommendation element", OLD, 1, 100, 100,
                  (10, 100)),
    StabilizeCase("scale down stabilization, reuse one of obsolete recommendation element",
                  ((10, 600), (4, 60), (5, 120), (9, 540)), 100, 3, 5, (10, 4, 5, 3),
                  down_window=180),
    StabilizeCase("scale up stabilization, reuse one of obsolete recommendation element",
                  ((10, 6000), (6, 60), (5, 120), (9, 180)), 1, 100, 5, (100, 6, 5, 9),
                  up_window=300),
    StabilizeCase("scale up and down stabilization, do not scale up when prenormalized rec "
                  "goes down", ((2, 6000), (3, 180)), 2, 1, 2, None, 300, 300),
    StabilizeCase("scale up and down stabilization, do not scale down when prenormalized rec "
                  "goes up", ((2, 6000), (1, 180)), 2, 3, 2, None, 300, 300),
]

#: ``TestNormalizeDesiredReplicas`` (no ``behavior``: ``stabilizeRecommendation`` with the
#: 5 minute window): (name, history, desired, expected, length of the stored list).
STABILIZE_WITHOUT_BEHAVIOR = [
    ("empty log", (), 5, 5, 1),
    ("stabilize", ((4, 120), (5, 60)), 3, 5, 3),
    ("no stabilize", ((1, 120), (2, 60)), 3, 3, 3),
    ("no stabilize - old recommendations", ((10, 600), (9, 540)), 3, 3, 2),
    ("stabilize - old recommendations", ((10, 600), (4, 60), (5, 120), (9, 540)), 3, 5, 4),
]


@dataclass(frozen=True)
class StoreCase:
    """``TestStoreScaleEvents``: ``getReplicasChangePerPeriod(60, ...)`` before, then
    ``storeScaleEvent`` of a change of 5; ``rules`` None means an HPA without ``behavior``."""

    name: str
    previous: tuple[tuple[int, int], ...]
    rules: Rules | None
    changed_in_60s: int
    stored: tuple[tuple[int, bool], ...]

    @property
    def expressible(self) -> bool:
        """Every meltguard policy has rules in force; without ``behavior`` the HPA stores no
        event, which no policy can ask for."""
        return self.rules is not None


TWO_POLICIES = rules(pods=(10, 60), percent=(100, 60))
STORE_EVENTS = [
    StoreCase("empty entries with default behavior", (), None, 0, ()),
    StoreCase("empty entries with two-policy-behavior", (), TWO_POLICIES, 0, ((5, False),)),
    StoreCase("one outdated entry to be kept untouched without behavior", ((7, 61),), None, 0,
              ((7, False),)),
    StoreCase("one outdated entry to be replaced with behavior", ((7, 61),), TWO_POLICIES, 0,
              ((5, False),)),
    StoreCase("one actual entry to be not touched with behavior", ((7, 58),), TWO_POLICIES, 7,
              ((7, False), (5, False))),
    StoreCase("two entries, one of them to be replaced", ((7, 61), (6, 59)),
              rules(pods=(10, 60)), 6, ((5, False), (6, False))),
    StoreCase("replace one entry, use policies with different periods",
              ((8, 29), (6, 59), (7, 61), (9, 61)), rules(pods=(10, 60), percent=(100, 30)), 14,
              ((8, False), (6, False), (7, True), (5, False))),
    StoreCase("two entries, both actual", ((7, 58), (6, 59)),
              rules(pods=(10, 120), percent=(100, 30)), 13, ((7, False), (6, False), (5, False))),
]
