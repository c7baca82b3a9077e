"""The operator against the harness: validation, missing targets, observedGeneration."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import generate_latest

from .harness import (
    DEPLOYMENTS,
    EVENTS,
    POLICIES,
    MeltguardOperator,
    add_namespaces,
    deployment,
    eventually,
    policy,
)
from .kmock_apiserver import ApiServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

NS = "inference"


def condition(api: ApiServer, name: str, kind: str, namespace: str = NS) -> dict[str, Any]:
    body = api.stored(POLICIES, namespace, name) or {}
    for item in (body.get("status") or {}).get("conditions") or []:
        if item["type"] == kind:
            return dict(item)
    return {}


def events(api: ApiServer, reason: str) -> list[dict[str, Any]]:
    return [obj.raw for (res, _, _), obj in api.objects.items()
            if res == api.resource(EVENTS) and not obj.deleted and obj.raw.get("reason") == reason]


async def test_invalid_spec_is_reported_by_field_and_nothing_is_done(api: ApiServer) -> None:
    add_namespaces(api, NS)
    api.create_object(DEPLOYMENTS, deployment(NS, "worker", 2))
    bad = policy(NS, "bad", "worker")
    bad["spec"]["quotas"]["tiers"][1]["floor"] = -5
    api.create_object(POLICIES, bad)
    async with MeltguardOperator(api, namespaces=[NS]):
        ready = await eventually(lambda: condition(api, "bad", "Ready"), what="Ready condition")
        assert ready["status"] == "False" and ready["reason"] == "InvalidSpec"
        assert "spec.quotas.tiers[1].floor" in ready["message"]
        await eventually(lambda: events(api, "InvalidSpec"), what="a Warning Event")
        assert [event["type"] for event in events(api, "InvalidSpec")] == ["Warning"]
        assert not any("invalid spec" in event.get("message", "")
                       for event in events(api, "Logging"))  # not reported twice
        status = api.stored(POLICIES, NS, "bad")["status"]
        assert status["observedGeneration"] == 1
        # fixing the spec makes it Ready at once, and observedGeneration follows
        api.patch_object(POLICIES, NS, "bad", {"spec": {"quotas": {"tiers": [
            {"name": "free", "limit": 3, "window": "24h"}]}}})
        await eventually(lambda: condition(api, "bad", "Ready").get("status") == "True",
                         what="Ready after the fix")
        assert api.stored(POLICIES, NS, "bad")["status"]["observedGeneration"] == 2
    assert api.stored(DEPLOYMENTS, NS, "worker")["spec"]["replicas"] == 2
    scale_writes = [r for r in api.request_log if r.subresource == "scale" and r.method == "PATCH"]
    assert scale_writes == [] or all(
        r.data["spec"]["replicas"] == 2 for r in scale_writes)  # min 2, never anything else


async def test_missing_target_is_reported_and_nothing_else(api: ApiServer) -> None:
    add_namespaces(api, NS)
    api.create_object(POLICIES, policy(NS, "orphan", "no-such-worker"))
    async with MeltguardOperator(api, namespaces=[NS]):
        ready = await eventually(lambda: condition(api, "orphan", "Ready"), what="Ready")
        assert (ready["status"], ready["reason"]) == ("False", "TargetNotFound")
        assert "no-such-worker" in ready["message"]
        await eventually(lambda: events(api, "TargetNotFound"), what="a Warning Event")
        api.create_object(DEPLOYMENTS, deployment(NS, "no-such-worker", 2))
        await eventually(lambda: condition(api, "orphan", "Ready").get("status") == "True",
                         what="Ready once the target exists")
    writes = [(r.method, r.resource.plural) for r in api.request_log
              if r.method in ("PATCH", "POST") and r.resource is not None]
    assert ("POST", "configmaps") in writes  # published only once the target existed
    assert len(events(api, "TargetNotFound")) == 1  # reported on the transition, not every tick


async def test_kopf_state_lives_under_meltguard_io_and_deletion_is_clean(api: ApiServer) -> None:
    add_namespaces(api, NS)
    api.create_object(DEPLOYMENTS, deployment(NS, "worker", 2))
    api.create_object(POLICIES, policy(NS, "imagegen", "worker"))
    operator = MeltguardOperator(api, namespaces=[NS])
    async with operator:
        await eventually(lambda: condition(api, "imagegen", "Ready"), what="a first tick")
        meta = api.stored(POLICIES, NS, "imagegen")["metadata"]
        assert meta["finalizers"] == ["meltguard.io/finalizer"]
        assert "meltguard.io/last-handled-configuration" in meta["annotations"]
        assert not any(key.startswith("kopf.zalando.org") for key in meta["annotations"])
        # the tick updates its metrics after the status write the condition came with
        await eventually(lambda: 'policy="imagegen"' in generate_latest(
            operator.metrics.registry).decode(), what="the policy's series exported")
        api.delete_object(POLICIES, NS, "imagegen")
        await eventually(lambda: api.stored(POLICIES, NS, "imagegen") is None,
                         what="the finalizer released")
        await eventually(lambda: 'policy="imagegen"' not in generate_latest(
            operator.metrics.registry).decode(), what="the policy's series forgotten")


async def test_a_corrupt_status_is_replaced_not_fatal(api: ApiServer) -> None:
    add_namespaces(api, NS)
    api.create_object(DEPLOYMENTS, deployment(NS, "worker", 2))
    api.create_object(POLICIES, policy(NS, "imagegen", "worker"))
    api.patch_object(POLICIES, NS, "imagegen",
                     {"status": {"phase": "Boiling", "controller": {"limits": "lots"}}},
                     subresource="status")
    async with MeltguardOperator(api, namespaces=[NS]):
        await eventually(lambda: condition(api, "imagegen", "Ready").get("status") == "True",
                         what="a reconcile despite the corrupt status")
    status = api.stored(POLICIES, NS, "imagegen")["status"]
    assert status["phase"] == "Unknown"  # no exporter here: nothing fresh to judge by
    assert isinstance(status["controller"].get("limits", []), list)
