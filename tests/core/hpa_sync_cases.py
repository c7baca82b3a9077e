"""Kubernetes' whole-sync and replica-calculator HPA test cases, transcribed as data.

Companion of :mod:`tests.core.hpa_cases` (same sources and conventions). A sync case is one
reconcile of ``horizontal_test.go``'s fake controller; its metric is reduced to what the
replica count depends on: ``usage`` over ``target``, both whole numbers in the metric's unit
(a utilization in percent for CPU, milli-units of the value for custom and external metrics),
multiplied by the replica count because every pod is ready and measured in these cases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.core.hpa_cases import MAX, MIN, UP, rules


@dataclass(frozen=True)
class SyncCase:
    """One reconcile: ``behavior`` None is an HPA without one; ``history`` None is the
    autoscaler's first sync, ``()`` one that synced before and holds no recommendation."""

    name: str
    min_replicas: int
    max_replicas: int
    current: int
    usage: int
    target: int
    expected: int
    reason: str | None = None
    behavior: dict[str, Any] | None = None
    history: tuple[tuple[int, int], ...] | None = None


UPSCALE_CAP = {"scaleUp": rules(percent=(700, 60))}

SYNCS = [
    SyncCase("TestScaleUp", 2, 6, 3, 50, 30, 5),
    SyncCase("TestScaleUpContainer", 2, 6, 3, 50, 30, 5),
    SyncCase("TestScaleUpIgnoresFailedPods", 2, 6, 2, 60, 30, 4),
    SyncCase("TestScaleUpIgnoresDeletionPods", 2, 6, 2, 60, 30, 4),
    SyncCase("TestScaleUpDeployment", 2, 6, 3, 50, 30, 5),
    SyncCase("TestScaleUpReplicaSet", 2, 6, 3, 50, 30, 5),
    SyncCase("TestScaleUpCM", 2, 6, 3, 20000, 15000, 4),
    SyncCase("TestScaleUpCMObject", 2, 6, 3, 20000, 15000, 4),
    SyncCase("TestScaleUpFromZeroCMObject", 0, 6, 0, 20000, 15000, 2),
    SyncCase("TestScaleUpFromZeroIgnoresToleranceCMObject", 0, 6, 0, 1000, 1000, 1),
    SyncCase("TestScaleUpCMExternal", 2, 6, 3, 8600, 6666, 4),
    SyncCase("TestScaleDown", 2, 6, 5, 28, 50, 3, history=()),
    SyncCase("TestScaleDownContainerResource", 2, 6, 5, 28, 50, 3, history=()),
    SyncCase("TestScaleDownWithScalingRules", 2, 6, 5, 28, 50, 3,
             behavior={"scaleUp": rules(percent=(100, 15), window=30)}, history=()),
    SyncCase("TestScaleDownStabilizeInitialSize", 2, 6, 5, 28, 50, 5),
    SyncCase("TestScaleDownCM", 2, 6, 5, 12000, 20000, 3, history=()),
    SyncCase("TestScaleDownCMObject", 2, 6, 5, 12000, 20000, 3, history=()),
    SyncCase("TestScaleDownToZeroCMObject", 0, 6, 5, 0, 20000, 0, history=()),
    SyncCase("TestScaleDownCMExternal", 2, 6, 5, 8600, 14400, 3, history=()),
    SyncCase("TestScaleDownToZeroCMExternal", 0, 6, 5, 0, 14400, 0, history=()),
    SyncCase("TestScaleDownIgnoresFailedPods", 2, 6, 5, 28, 50, 3, history=()),
    SyncCase("TestScaleDownIgnoresDeletionPods", 2, 6, 5, 28, 50, 3, history=()),
    SyncCase("TestTolerance", 1, 5, 3, 102, 100, 3),
    # the average of 20000, 20001 and 21000 milli-qps, in whole milli-units
    SyncCase("TestToleranceCM", 1, 5, 3, 20333, 20000, 3),
    SyncCase("TestToleranceCMObject", 1, 5, 3, 20050, 20000, 3),
    SyncCase("TestToleranceCMExternal", 2, 6, 4, 8600, 8666, 4),
    SyncCase("TestMinReplicas", 2, 5, 3, 3, 90, 2, MIN, history=()),
    SyncCase("TestZeroMinReplicasDesiredZero", 0, 5, 3, 0, 90, 0, "DesiredWithinRange",
             history=()),
    SyncCase("TestMinReplicasDesiredZero", 2, 5, 3, 0, 90, 2, MIN, history=()),
    SyncCase("TestZeroReplicas", 3, 5, 0, 0, 90, 0),
    SyncCase("TestTooFewReplicas", 3, 5, 2, 0, 90, 3),
    SyncCase("TestTooManyReplicas", 3, 5, 10, 0, 90, 5),
    SyncCase("TestMaxReplicas", 2, 5, 3, 616, 90, 5, MAX),
    SyncCase("TestSuperfluousMetrics", 2, 6, 4, 587, 100, 6, MAX),
    SyncCase("TestEventCreated", 1, 5, 1, 100, 50, 2),
    SyncCase("TestEventNotCreated", 1, 5, 2, 50, 50, 2),
    SyncCase("TestUpscaleCap", 1, 100, 3, 200, 10, 24, UP, behavior=UPSCALE_CAP),
    SyncCase("TestUpscaleCapGreaterThanMaxReplicas", 1, 20, 3, 200, 10, 20, MAX,
             behavior=UPSCALE_CAP),
    SyncCase("TestNoBackoffUpscaleCM", 1, 5, 3, 20000, 15000, 4),
    SyncCase("TestScaleUpRCImmediately", 2, 6, 1, 0, 50, 2),
    SyncCase("TestScaleDownRCImmediately", 2, 5, 6, 616, 50, 5),
    # inputs worked out from the test's own arithmetic: 1500m used of 3000m requested (50 %),
    # targets int32(100 x (1 / (2 x 0.9) + 0.01)) = 56 and int32(100 x (1 / (2 x 0.9) + 0.004))
    SyncCase("TestComputedToleranceAlgImplementation (scales)", 0, 1000, 10, 50, 56, 9,
             history=()),
    SyncCase("TestComputedToleranceAlgImplementation (within tolerance)", 0, 1000, 10, 50, 55,
             10, history=()),
]


@dataclass(frozen=True)
class ResourceCalc:
    """``GetResourceReplicas`` with every pod ready and measured: per-pod usage and requests
    (milli-CPU, the measured pods only), the whole-percent utilization and replica count."""

    name: str
    current: int
    levels: tuple[int, ...]
    requests: tuple[int, ...]
    target: int
    utilization: int
    expected: int


@dataclass(frozen=True)
class MetricCalc:
    """``GetMetricReplicas`` / ``GetObjectMetricReplicas`` / ``GetExternalMetricReplicas`` with
    a value target: the usage (a per-pod average for pod metrics) and the count."""

    name: str
    current: int
    usage: int
    target: int
    expected: int


K = (1000,) * 10
DOWN_LEVELS = (100, 300, 500, 250, 250)
COMPUTED_REQUESTS = (400, 200, 310, 290, 302, 298, 301, 299, 300, 300)
RESOURCE_CALCS = [
    ResourceCalc("TestReplicaCalcScaleUp", 3, (300, 500, 700), K[:3], 30, 50, 5),
    ResourceCalc("TestReplicaCalcContainerScaleUp", 3, (300, 500, 700), K[:3], 30, 50, 5),
    ResourceCalc("TestReplicaCalcScaleUpIgnoresFailedPods", 2, (500, 700), K[:2], 30, 60, 4),
    ResourceCalc("TestReplicaCalcMissingContainerMetricScaleUpIgnoresFailedPods", 2,
                 (500, 700), K[:2], 30, 60, 4),
    ResourceCalc("TestReplicaCalcScaleUpContainerIgnoresFailedPods", 2, (500, 700), K[:2], 30,
                 60, 4),
    ResourceCalc("TestReplicaCalcScaleUpIgnoresDeletionPods", 2, (500, 700), K[:2], 30, 60, 4),
    ResourceCalc("TestReplicaCalcScaleUpContainerIgnoresDeletionPods", 2, (500, 700), K[:2], 30,
                 60, 4),
    ResourceCalc("TestReplicaCalcScaleDown", 5, DOWN_LEVELS, K[:5], 50, 28, 3),
    ResourceCalc("TestReplicaCalcContainerScaleDown", 5, DOWN_LEVELS, K[:5], 50, 28, 3),
    ResourceCalc("TestReplicaCalcScaleDownIgnoresFailedPods", 5, DOWN_LEVELS, K[:5], 50, 28, 3),
    ResourceCalc("TestReplicaCalcScaleDownContainerIgnoresFailedPods", 5, DOWN_LEVELS, K[:5],
                 50, 28, 3),
    ResourceCalc("TestReplicaCalcScaleDownIgnoresDeletionPods", 5, DOWN_LEVELS, K[:5], 50, 28,
                 3),
    ResourceCalc("TestReplicaCalcScaleDownIgnoresDeletionPods_StillRunning", 5, DOWN_LEVELS,
                 K[:5], 50, 28, 3),
    ResourceCalc("TestReplicaCalcTolerance", 3, (1010, 1030, 1020), (900, 1000, 1100), 100, 102,
                 3),
    # two of the six metrics belong to no pod and are not counted
    ResourceCalc("TestReplicaCalcSuperfluousMetrics", 4, (4000, 9500, 3000, 7000), K[:4], 100,
                 587, 24),
    ResourceCalc("TestReplicaCalcComputedToleranceAlgImplementation (scales)", 10, (150,) * 10,
                 COMPUTED_REQUESTS, 56, 50, 9),
    ResourceCalc("TestReplicaCalcComputedToleranceAlgImplementation (within tolerance)", 10,
                 (150,) * 10, COMPUTED_REQUESTS, 55, 50, 10),
]

METRIC_CALCS = [
    MetricCalc("TestReplicaCalcScaleUpCM", 3, 20000, 15000, 4),
    MetricCalc("TestReplicaCalcScaleUpCMObject", 3, 20000, 15000, 4),
    MetricCalc("TestReplicaCalcScaleUpCMExternal", 1, 8600, 4400, 2),
    MetricCalc("TestReplicaCalcScaleUpCMExternalNoLabels", 1, 8600, 4400, 2),
    MetricCalc("TestReplicaCalcScaleDownCM", 5, 12000, 20000, 3),
    MetricCalc("TestReplicaCalcScaleDownCMObject", 5, 12000, 20000, 3),
    MetricCalc("TestReplicaCalcScaleDownCMExternal", 5, 8600, 14334, 3),
    MetricCalc("TestReplicaCalcToleranceCM", 3, 20666, 20000, 3),
    MetricCalc("TestReplicaCalcToleranceCMObject", 3, 20666, 20000, 3),
    MetricCalc("TestReplicaCalcToleranceCMExternal", 3, 8600, 8888, 3),
]

READINESS = "how the HPA measures pods (readiness, CPU initialization, missing metrics)"
PER_POD = "an AverageValue target on an object or external metric (another formula)"
SEVERAL = "several metrics, or an invalid one"
API = "Kubernetes API errors, selectors and status writes"
MEASURED = "the HPA multiplies by the pods it measured, which differ from spec replicas here"

#: Upstream tests not transcribed, and why: none is about the arithmetic of scaling.
LEFT_OUT = {
    **dict.fromkeys([
        "TestScaleUpUnreadyLessScale", "TestScaleUpHotCpuLessScale", "TestScaleUpUnreadyNoScale",
        "TestScaleUpHotCpuNoScale", "TestScaleUpCMUnreadyAndHotCpuNoLessScale",
        "TestScaleUpCMUnreadyandCpuHot", "TestScaleUpHotCpuNoScaleWouldScaleDown",
        "TestScaleDownIncludeUnreadyPods", "TestScaleDownIgnoreHotCpuPods",
        "TestMissingMetrics", "TestEmptyMetrics", "TestEmptyCPURequest",
        "TestReplicaCalcDisjointResourcesMetrics", "TestReplicaCalcScaleUpUnreadyLessScale",
        "TestReplicaCalcScaleUpContainerHotCpuLessScale", "TestReplicaCalcScaleUpHotCpuLessScale",
        "TestReplicaCalcScaleUpUnreadyNoScale", "TestReplicaCalcScaleHotCpuNoScale",
        "TestReplicaCalcScaleUpCMUnreadyHotCpuNoLessScale",
        "TestReplicaCalcScaleUpCMUnreadyHotCpuScaleWouldScaleDown",
        "TestReplicaCalcScaleUpCMObjectIgnoresUnreadyPods",
        "TestReplicaCalcScaleUpCMExternalIgnoresUnreadyPods",
        "TestReplicaCalcScaleDownExcludeUnreadyPods",
        "TestReplicaCalcScaleDownContainerExcludeUnreadyPods",
        "TestReplicaCalcScaleDownExcludeUnscheduledPods",
        "TestReplicaCalcScaleDownContainerExcludeUnscheduledPods",
        "TestReplicaCalcScaleDownIgnoreHotCpuPods",
        "TestReplicaCalcScaleDownContainerIgnoreHotCpuPods",
        "TestReplicaCalcMissingMetrics", "TestReplicaCalcEmptyMetrics",
        "TestReplicaCalcEmptyCPURequest", "TestPlainMetricReplicaCalcMissingMetricsNoChangeEq",
        "TestReplicaCalcMissingMetricsNoChangeEq", "TestReplicaCalcMissingMetricsNoChangeGt",
        "TestReplicaCalcMissingMetricsNoChangeLt", "TestReplicaCalcMissingMetricsUnreadyChange",
        "TestReplicaCalcMissingMetricsHotCpuNoChange",
        "TestReplicaCalcMissingMetricsUnreadyScaleUp", "TestReplicaCalcMissingMetricsHotCpuScaleUp",
        "TestReplicaCalcMissingMetricsUnreadyScaleDown",
        "TestReplicaCalcMissingMetricsScaleDownTargetOver100",
        "TestReplicaCalcDuringRollingUpdateWithMaxSurge",
        "TestReplicaCalcDuringRollingUpdateWithMaxSurgeCM", "TestGroupPods",
        "TestCalculatePodRequests"], READINESS),
    **dict.fromkeys([
        "TestScaleUpPerPodCMObject", "TestScaleUpPerPodCMExternal", "TestScaleDownPerPodCMObject",
        "TestScaleDownPerPodCMExternal", "TestTolerancePerPodCMObject",
        "TestTolerancePerPodCMExternal", "TestReplicaCalcScaleUpCMPerPodObject",
        "TestReplicaCalcScaleUpPerPodCMExternal", "TestReplicaCalcScaleDownPerPodCMObject",
        "TestReplicaCalcScaleDownPerPodCMExternal", "TestReplicaCalcTolerancePerPodCMObject",
        "TestReplicaCalcTolerancePerPodCMExternal"], PER_POD),
    **dict.fromkeys([
        "TestScaleUpOneMetricInvalid", "TestScaleUpFromZeroOneMetricInvalid",
        "TestScaleUpBothMetricsEmpty", "TestScaleUpOneMetricEmpty",
        "TestNoScaleDownOneMetricInvalid", "TestNoScaleDownOneMetricEmpty",
        "TestNoBackoffUpscaleCMNoBackoffCpu"], SEVERAL),
    **dict.fromkeys([
        "TestConditionInvalidSelectorMissing", "TestConditionInvalidSelectorUnparsable",
        "TestConditionNoAmbiguousSelectorWhenNoSelectorOverlapBetweenHPAs",
        "TestConditionAmbiguousSelectorWhenFullSelectorOverlapBetweenHPAs",
        "TestConditionAmbiguousSelectorWhenPartialSelectorOverlapBetweenHPAs",
        "TestConditionFailedGetMetrics", "TestConditionInvalidSourceType",
        "TestConditionFailedGetScale", "TestConditionFailedUpdateScale",
        "TestAvoidUnnecessaryUpdates", "TestMultipleHPAs"], API),
    **dict.fromkeys(["TestMissingReports", "TestMoreReplicasThanSpecNoScale",
                     "TestStabilizeDownscale"], MEASURED),
}
