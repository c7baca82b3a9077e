"""The control loop end to end: simulated exporters on 127.0.0.1, kopf against the harness."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from .harness import (
    POLICIES,
    MeltguardOperator,
    condition_of,
    events_with,
    eventually,
    limit_steps,
    phases,
    policy,
    quota_versions,
    replicas_now,
    start_fleet,
    status_of,
    versions,
)
from .kmock_apiserver import ApiServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

NS = "inference"
QUOTAS = "imagegen-quotas"


def scale_patches(api: ApiServer) -> list[int]:
    return [request.data["spec"]["replicas"] for request in api.request_log
            if request.method == "PATCH" and request.subresource == "scale"]


async def test_heat_scales_up_within_a_tick_then_hot_then_melting(api: ApiServer) -> None:
    async with start_fleet(api, NS, "worker", 2) as exporter, \
            MeltguardOperator(api, namespaces=[NS]):
        api.create_object(POLICIES, policy(NS, "imagegen", "worker", exporter.port))
        await eventually(lambda: status_of(api, NS, "imagegen").get("phase") == "Cool",
                         what="a first Cool tick")
        await exporter.heat()

        def first_heated_status() -> dict[str, Any] | None:
            return next((version["status"]
                         for version in versions(api, POLICIES, NS, "imagegen")
                         if (version.get("status") or {}).get("phase") not in (None, "Cool")),
                        None)

        # the tick that first saw the heat scaled up: its status (written at once, the phase
        # having changed) already asks for more replicas. Read from the stored versions, not
        # by counting ticks after the fact, which a loaded machine can let run on.
        first_heated = await eventually(first_heated_status, what="a status after the heat")
        assert first_heated["desiredReplicas"] > 2
        assert replicas_now(api, NS, "worker") > 2
        await eventually(lambda: status_of(api, NS, "imagegen").get("phase") == "Melting",
                         what="Melting after sustainSeconds")
        seen = phases(api, NS, "imagegen")
        assert seen.index("Hot") < seen.index("Melting")
        started = await eventually(lambda: events_with(api, "MeltingStarted"),
                                   what="MeltingStarted")
        involved = started[0]["involvedObject"]
        assert (involved["kind"], involved["name"], started[0]["type"]) \
            == ("ImageQuotaPolicy", "imagegen", "Warning")
        assert events_with(api, "ScaledUp")
        assert status_of(api, NS, "imagegen")["desiredReplicas"] > 2


async def _tightens_in_shed_order(api: ApiServer, *, pending: int, max_replicas: int) -> None:
    async with start_fleet(api, NS, "worker", 2, pending=pending) as exporter, \
            MeltguardOperator(api, namespaces=[NS]):
        api.create_object(POLICIES, policy(NS, "imagegen", "worker", exporter.port,
                                           maxReplicas=max_replicas))
        await eventually(lambda: limit_steps(api, NS, QUOTAS) == [(3, 200, None)],
                         what="the baseline published")
        await exporter.heat(throttled=True)  # melting from the next sample on
        await eventually(lambda: limit_steps(api, NS, QUOTAS)[-1:] == [(0, 50, None)],
                         timeout=30, what="every limited tier down to its floor")
        await eventually(lambda: len(events_with(api, "QuotaTightened")) == 4,
                         what="an Event per step")
    # free 3 -> 1 -> 0 first; plus (a paying tier) untouched until free reached its floor
    assert limit_steps(api, NS, QUOTAS) == [(3, 200, None), (1, 200, None), (0, 200, None),
                                            (0, 100, None), (0, 50, None)]
    assert replicas_now(api, NS, "worker") == 2  # nothing piled on top
    assert condition_of(api, NS, "imagegen", "QuotasTightened")["status"] == "True"
    documents = quota_versions(api, NS, QUOTAS)
    assert all(tier.get("tightened") for tier in documents[-1]["tiers"][:2])


async def test_at_max_replicas_and_melting_tightens_lowest_tier_first(api: ApiServer) -> None:
    await _tightens_in_shed_order(api, pending=0, max_replicas=2)
    assert condition_of(api, NS, "imagegen", "ScalingLimited")["reason"] == "AtMaxReplicas"


async def test_pending_pods_without_gpus_and_melting_tighten_too(api: ApiServer) -> None:
    await _tightens_in_shed_order(api, pending=1, max_replicas=8)
    assert status_of(api, NS, "imagegen")["pendingReplicas"] == 1
    assert condition_of(api, NS, "imagegen", "ScalingLimited")["reason"] == "NoGPUCapacity"
    assert scale_patches(api) == []


async def test_cooling_relaxes_in_reverse_order_and_scales_down_after_the_window(
        api: ApiServer) -> None:
    async with start_fleet(api, NS, "worker", 2) as exporter, \
            MeltguardOperator(api, namespaces=[NS]):
        await exporter.drill(utilization=0.7, temperatureCelsius=60)  # on target: no change
        api.create_object(POLICIES, policy(NS, "imagegen", "worker", exporter.port,
                                           minReplicas=1, maxReplicas=2))
        await eventually(lambda: limit_steps(api, NS, QUOTAS) == [(3, 200, None)],
                         what="the baseline published")
        await exporter.heat(throttled=True)
        await eventually(lambda: limit_steps(api, NS, QUOTAS)[-1:] == [(0, 100, None)],
                         timeout=30, what="free at its floor and plus tightened once")
        await exporter.cool(utilization=0.1)
        await eventually(lambda: limit_steps(api, NS, QUOTAS)[-1:] == [(3, 200, None)],
                         timeout=30, what="every tier back at its baseline")
        await eventually(lambda: replicas_now(api, NS, "worker") == 1, timeout=30,
                         what="a scale-down")
        # the Event follows the status write of the same tick, posted by kopf in the background
        await eventually(lambda: events_with(api, "ScaledDown"), what="the ScaledDown Event")
    steps = limit_steps(api, NS, QUOTAS)
    lowest = max(index for index, step in enumerate(steps) if step[0] == 0 and step[1] <= 100)
    relaxing = steps[lowest:]
    # plus (tightened last) comes back first, +50% of its 200 per step; then free, +ceil(1.5)
    plus_back = relaxing.index((0, 200, None))
    assert all(step[0] == 0 for step in relaxing[:plus_back + 1])
    plus = [step[1] for step in relaxing[:plus_back + 1]]
    assert all(after == min(before + 100, 200) for before, after in itertools.pairwise(plus))
    assert relaxing[plus_back:] == [(0, 200, None), (2, 200, None), (3, 200, None)]
    history = _status_versions(api)
    scaled = next(index for index, version in enumerate(history)
                  if version.get("desiredReplicas") == 1)
    scaled_at = history[scaled]["controller"]["lastScaleTime"]
    last_high = max(recommendation["time"] for version in history[:scaled]
                    for recommendation in version["controller"].get("recommendations", [])
                    if recommendation["replicas"] > 1)
    window = 3  # spec.scaling.scaleDown.stabilizationSeconds of the test policy
    assert scaled_at - last_high >= window
    assert events_with(api, "QuotaRelaxed") and events_with(api, "ScaledDown")
    assert events_with(api, "MeltingEnded")


def _status_versions(api: ApiServer) -> list[dict[str, Any]]:
    from .harness import versions

    return [version["status"] for version in versions(api, POLICIES, NS, "imagegen")
            if version.get("status")]


async def test_telemetry_lost_holds_everything(api: ApiServer) -> None:
    exporter = start_fleet(api, NS, "worker", 2)
    try:
        async with MeltguardOperator(api, namespaces=[NS]) as operator:
            await exporter.heat(throttled=True)
            api.create_object(POLICIES, policy(NS, "imagegen", "worker", exporter.port,
                                               maxReplicas=2))
            await eventually(lambda: limit_steps(api, NS, QUOTAS)[-1:] == [(1, 200, None)],
                             timeout=30, what="a first tightening")
            exporter.stop()
            await eventually(lambda: status_of(api, NS, "imagegen").get("phase") == "Unknown",
                             timeout=15, what="phase Unknown")
            held = limit_steps(api, NS, QUOTAS)
            telemetry = condition_of(api, NS, "imagegen", "TelemetryAvailable")
            assert telemetry["status"] == "False"
            await eventually(lambda: events_with(api, "TelemetryLost"), what="TelemetryLost")
            ticks = operator.ticks()
            await eventually(lambda: operator.ticks() >= ticks + 3, what="three more ticks")
            assert limit_steps(api, NS, QUOTAS) == held  # onTelemetryLoss: hold
            assert replicas_now(api, NS, "worker") == 2
    finally:
        exporter.stop()
