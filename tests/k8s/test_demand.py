"""``spec.quotas.demand`` end to end: the operator reads a real quota service's demand page
over HTTP and the decision learns from it; a policy without it never asks."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

from meltguard.quota.memory_store import MemoryStore

from ..quota.conftest import FakeClock, QuotaServer, consume, start_quota_server
from .harness import POLICIES, MeltguardOperator, eventually, policy, start_fleet, status_of
from .kmock_apiserver import ApiServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

NS = "inference"
GPUS = 2
UTILIZATION = 0.5


@pytest_asyncio.fixture()
async def quota_server() -> AsyncIterator[QuotaServer]:
    """A quota service whose free tier (limit 3) saw 10 attempts: 9 admitted, 1 refused (its
    clock stands still, so the rates are over one second: 9 admitted per second)."""
    server = await start_quota_server(MemoryStore(), FakeClock())
    async with aiohttp.ClientSession() as http:
        for subject, attempts in (("a", 4), ("b", 3), ("c", 2), ("d", 1)):
            for _ in range(attempts):
                await consume(http, server.url, subject=subject)
    try:
        yield server
    finally:
        await server.runner.cleanup()


async def test_the_operator_learns_the_gpus_rate_from_the_quota_services_demand(
        api: ApiServer, quota_server: QuotaServer) -> None:
    async with start_fleet(api, NS, "worker", GPUS) as exporter, \
            MeltguardOperator(api, namespaces=[NS]):
        await exporter.cool(utilization=UTILIZATION)
        body = policy(NS, "imagegen", "worker", exporter.port)
        body["spec"]["quotas"]["demand"] = {"url": quota_server.url}
        api.create_object(POLICIES, body)
        learnt = await eventually(
            lambda: status_of(api, NS, "imagegen").get("controller", {})
            .get("imagesPerGpuSecond"), what="a rate learnt from the demand signal")
    # 9 images admitted per second by 2 GPUs at half load: 9 per fully busy GPU per second
    assert learnt == pytest.approx(9 / (UTILIZATION * GPUS), rel=0.05)


async def test_without_a_demand_spec_nothing_is_learnt(api: ApiServer) -> None:
    async with start_fleet(api, NS, "worker", GPUS) as exporter, \
            MeltguardOperator(api, namespaces=[NS]) as operator:
        await exporter.cool(utilization=UTILIZATION)
        api.create_object(POLICIES, policy(NS, "imagegen", "worker", exporter.port))
        await eventually(lambda: operator.ticks() >= 3, what="three ticks")
    assert "imagesPerGpuSecond" not in status_of(api, NS, "imagegen").get("controller", {})
