"""Writes only on change, reads from watches: a steady policy asks the API server nothing
and writes nothing; a change is written at once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from .harness import (
    POLICIES,
    MeltguardOperator,
    eventually,
    limit_steps,
    policy,
    replicas_now,
    start_fleet,
    status_of,
)
from .kmock_apiserver import ApiServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

NS = "inference"
QUOTAS = "imagegen-quotas"
WRITES = ("PATCH", "POST", "PUT", "DELETE")


def _requests(api: ApiServer, start: int, *, methods: tuple[str, ...],
              plurals: tuple[str, ...]) -> list[Any]:
    """Requests since ``start`` by the control loop (kopf's own Events and watches aside)."""
    return [request for request in api.request_log[start:]
            if request.method in methods and request.resource is not None
            and request.resource.plural in plurals and request.params.get("watch") != "true"]


async def test_a_steady_policy_reads_and_writes_nothing_and_a_change_is_written_at_once(
        api: ApiServer) -> None:
    async with start_fleet(api, NS, "worker", 2) as exporter, \
            MeltguardOperator(api, namespaces=[NS]) as operator:
        await exporter.cool(utilization=0.6)  # within the tolerance: 2 replicas stay
        api.create_object(POLICIES, policy(NS, "imagegen", "worker", exporter.port))
        await eventually(lambda: limit_steps(api, NS, QUOTAS) != [], what="the baseline")
        await asyncio.sleep(3)  # the first ticks settle GPU states and the first window
        start, ticked = len(api.request_log), operator.ticks()
        await asyncio.sleep(6)
        ticked = operator.ticks() - ticked
        plurals = ("imagequotapolicies", "deployments", "configmaps", "pods")
        writes = _requests(api, start, methods=WRITES, plurals=plurals)
        reads = _requests(api, start, methods=("GET",), plurals=plurals)
        assert ticked >= 4
        assert [(request.method, request.resource.plural, request.subresource)
                for request in writes + reads] == []
        await exporter.heat()
        await eventually(lambda: replicas_now(api, NS, "worker") > 2, what="a scale-up")
        await eventually(lambda: status_of(api, NS, "imagegen").get("desiredReplicas", 0) > 2,
                         what="the status following the scale-up")

