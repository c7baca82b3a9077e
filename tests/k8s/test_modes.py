"""Restarts, paused/dryRun holds, several namespaces, and API errors."""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Any

import kmock
import pytest

from .harness import (
    CONFIGMAPS,
    POLICIES,
    MeltguardOperator,
    add_namespaces,
    condition_of,
    events_with,
    eventually,
    limit_steps,
    policy,
    quota_versions,
    replicas_now,
    start_fleet,
    status_of,
)
from .kmock_apiserver import ApiServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

NS = "inference"
QUOTAS = "imagegen-quotas"
FULL_SHED = [(3, 200, None), (1, 200, None), (0, 200, None), (0, 100, None), (0, 50, None)]


def _writes(api: ApiServer, plural: str, subresource: str | None = None) -> list[Any]:
    return [request for request in api.request_log
            if request.method in ("PATCH", "POST") and request.resource is not None
            and request.resource.plural == plural and request.subresource == subresource]


def _step_times(api: ApiServer, namespace: str = NS) -> list[float]:
    """When each published limit change was decided (quotas.json ``updated``)."""
    documents = quota_versions(api, namespace, QUOTAS)
    times = [datetime.fromisoformat(documents[0]["updated"].replace("Z", "+00:00")).timestamp()]
    for before, after in itertools.pairwise(documents):
        if before["tiers"] != after["tiers"]:
            times.append(datetime.fromisoformat(after["updated"].replace("Z", "+00:00"))
                         .timestamp())
    return times


async def test_restart_mid_tightening_resumes_from_status(api: ApiServer) -> None:
    interval = 2
    async with start_fleet(api, NS, "worker", 2) as exporter:
        quick_tighten = {"factor": 0.5, "intervalSeconds": interval, "graceSeconds": 0}
        body = policy(NS, "imagegen", "worker", exporter.port, maxReplicas=2)
        body["spec"]["quotas"]["tighten"] = quick_tighten
        api.create_object(POLICIES, body)
        async with MeltguardOperator(api, namespaces=[NS]):
            await eventually(lambda: limit_steps(api, NS, QUOTAS) == FULL_SHED[:1],
                             what="the baseline published")
            await exporter.heat(throttled=True)
            await eventually(lambda: limit_steps(api, NS, QUOTAS) == FULL_SHED[:2],
                             what="the first step")
        # a new operator process: it knows nothing but what the status says
        async with MeltguardOperator(api, namespaces=[NS]):
            await eventually(lambda: limit_steps(api, NS, QUOTAS)[-1:] == FULL_SHED[-1:],
                             timeout=30, what="the last step")
    assert limit_steps(api, NS, QUOTAS) == FULL_SHED  # no step lost, none repeated
    times = _step_times(api)[1:]  # from the first tightening on
    gaps = [after - before for before, after in itertools.pairwise(times)]
    assert all(gap >= interval for gap in gaps), gaps  # no extra step across the restart


@pytest.mark.parametrize("hold", ["paused", "dryRun", "annotation"])
async def test_holds_observe_and_report_but_change_nothing(api: ApiServer, hold: str) -> None:
    async with start_fleet(api, NS, "worker", 2) as exporter, \
            MeltguardOperator(api, namespaces=[NS]):
        await exporter.heat(throttled=True)
        body = policy(NS, "imagegen", "worker", exporter.port, maxReplicas=2)
        if hold == "annotation":
            body["metadata"]["annotations"] = {"meltguard.io/paused": "true"}
        else:
            body["spec"][hold] = True
        api.create_object(POLICIES, body)
        reason = "DryRun" if hold == "dryRun" else "Paused"
        await eventually(lambda: condition_of(api, NS, "imagegen", "Ready").get("reason")
                         == reason, what=f"Ready reason {reason}")
        # the status shows what would have been done: quotas tightening, step after step
        await eventually(lambda: [q.get("limit") for q in status_of(api, NS, "imagegen")
                                  .get("quotas", [])][:2] == [0, 200],
                         timeout=15, what="the would-be quotas in the status")
        assert status_of(api, NS, "imagegen")["phase"] == "Melting"
        assert events_with(api, "QuotaTightened")[0]["message"].startswith("not applied")
        assert _writes(api, "configmaps") == [] and _writes(api, "deployments", "scale") == []
        assert api.stored(CONFIGMAPS, NS, QUOTAS) is None
        # lifting the hold acts at once
        lift = {"metadata": {"annotations": {"meltguard.io/paused": None}}} \
            if hold == "annotation" else {"spec": {hold: False}}
        api.patch_object(POLICIES, NS, "imagegen", lift)
        await eventually(lambda: api.stored(CONFIGMAPS, NS, QUOTAS), what="published quotas")
        await eventually(lambda: condition_of(api, NS, "imagegen", "Ready")["reason"]
                         == "Reconciled", what="Ready, Reconciled")


async def test_two_policies_in_two_namespaces_all_namespaces(api: ApiServer) -> None:
    # team-a scrapes a sidecar-like exporter pod of its own namespace; team-b a DaemonSet pod
    # in meltguard-system whose GPUs are attributed to team-b's pods
    async with start_fleet(api, "team-a", "worker", 2, host="127.0.0.2") as hot, \
            start_fleet(api, "team-b", "worker", 2, host="127.0.0.3",
                        exporter_namespace="meltguard-system") as calm, \
            MeltguardOperator(api, clusterwide=True):
        api.create_object(POLICIES, policy("team-a", "imagegen", "worker", hot.port,
                                           maxReplicas=2))
        daemonset = policy("team-b", "imagegen", "worker", calm.port, maxReplicas=2)
        daemonset["spec"]["telemetry"]["exporter"]["namespace"] = "meltguard-system"
        api.create_object(POLICIES, daemonset)
        await calm.drill(utilization=0.7, temperatureCelsius=60)
        await hot.heat(throttled=True)
        await eventually(lambda: limit_steps(api, "team-a", QUOTAS)[-1:] == [(0, 200, None)],
                         timeout=20, what="team-a tightened")
        assert status_of(api, "team-b", "imagegen")["phase"] in ("Cool", "Warm")
        assert status_of(api, "team-b", "imagegen")["gpus"]["total"] == 2
        assert limit_steps(api, "team-b", QUOTAS) == [(3, 200, None)]
        assert events_with(api, "MeltingStarted", "team-a")
        assert not events_with(api, "MeltingStarted", "team-b")
    assert replicas_now(api, "team-b", "worker") == 2


async def test_conflicts_are_retried_and_api_errors_lose_no_state(api: ApiServer) -> None:
    async with start_fleet(api, NS, "worker", 2) as exporter, \
            MeltguardOperator(api, namespaces=[NS]):
        api.create_object(POLICIES, policy(NS, "imagegen", "worker", exporter.port,
                                           maxReplicas=4))
        await eventually(lambda: limit_steps(api, NS, QUOTAS) == FULL_SHED[:1],
                         what="the baseline published")
        api["patch", kmock.subresource("scale")][:1] << 409  # someone scaled meanwhile
        api["patch", kmock.subresource("status")][:2] << 503  # the API server struggles
        await exporter.heat()
        await eventually(lambda: replicas_now(api, NS, "worker") > 2, what="a scale-up")
        scale_attempts = _writes(api, "deployments", "scale")
        assert len(scale_attempts) >= 2  # the refused one, then the retry from a fresh read
        await eventually(lambda: status_of(api, NS, "imagegen").get("desiredReplicas", 0) > 2,
                         timeout=15, what="the status written once the API recovered")
        assert len(_writes(api, "imagequotapolicies", "status")) >= 3
        await eventually(lambda: events_with(api, "ScaledUp"), what="ScaledUp")


async def test_only_the_watched_namespaces_are_reconciled(api: ApiServer) -> None:
    for namespace in ("watched", "elsewhere"):
        add_namespaces(api, namespace)
        api.create_object(POLICIES, policy(namespace, "imagegen", "no-target"))
    async with MeltguardOperator(api, namespaces=["watch*"]) as operator:  # a glob
        await eventually(lambda: condition_of(api, "watched", "imagegen", "Ready"),
                         what="the watched policy reconciled")
        ticks = operator.ticks()
        await eventually(lambda: operator.ticks() > ticks + 3, what="more ticks")
    assert status_of(api, "elsewhere", "imagegen") == {}
    assert not any(request.namespace == "elsewhere" for request in api.request_log)
