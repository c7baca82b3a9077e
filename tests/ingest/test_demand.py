"""The operator's demand reader against real quota servers on 127.0.0.1 and a real Prometheus.

Two in-process quota servers share one memory store, like replicas sharing Redis: the reader
must add their shares up to exactly what the subjects attempted. Bad pages come from a real
aiohttp server answering what each test sets.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from meltguard.api.fields import LabelSelector
from meltguard.api.quota_models import DemandSpec, QuotaServicePods
from meltguard.core.demand import DemandSignal, TierDemand
from meltguard.ingest.demand import (
    DemandReaders,
    PrometheusDemand,
    QuotaServiceDemand,
    add_reaching,
    add_signals,
)
from meltguard.quota.memory_store import MemoryStore

from ..exporter_process import free_port
from ..quota.conftest import POLICY, QuotaServer, consume, start_quota_server
from .prometheus_server import running_prometheus


def endpoint_of(url: str) -> str:
    return url.removeprefix("http://")


def listing(endpoints: Sequence[str]) -> Any:
    async def list_endpoints() -> Sequence[str]:
        return endpoints

    return list_endpoints


@pytest.fixture
async def replicas() -> AsyncIterator[list[QuotaServer]]:
    """Two quota servers on the real clock sharing one memory store."""
    store = MemoryStore()
    servers = [await start_quota_server(store, time.time) for _ in range(2)]  # type: ignore[arg-type]
    yield servers
    for server in servers:
        await server.runner.cleanup()


async def attempt_spread(replicas: list[QuotaServer]) -> None:
    """heavy: 5 attempts, light: 2, batch: one of cost 2 (free: limit 3, baseline 3)."""
    async with aiohttp.ClientSession() as http:
        for index in range(5):
            await consume(http, replicas[index % 2].url, subject="heavy")
        await consume(http, replicas[0].url, subject="light")
        await consume(http, replicas[1].url, subject="light")
        await consume(http, replicas[1].url, subject="batch", cost=2)


async def test_the_replicas_shares_add_up_to_what_was_attempted(
    replicas: list[QuotaServer],
) -> None:
    await attempt_spread(replicas)
    reader = QuotaServiceDemand(POLICY, listing([endpoint_of(r.url) for r in replicas]))
    try:
        signal = await reader.read()
        alone = QuotaServiceDemand(POLICY, listing([endpoint_of(replicas[0].url)]))
        share = await alone.read()
        await alone.close()
    finally:
        await reader.close()
    # heavy alternated between the replicas: one holds its counts 1, 3 and 5, which alone
    # would claim more subjects reached 3 than 2, and is refused
    assert share is None and alone.failures == {"malformed": 1}
    assert signal is not None
    free = signal.tier("free")
    assert free is not None
    assert free.reaching == (3, 3, 1, 1, 1, 0)
    # nine units attempted within a second or two of the first decision
    assert 9 / 3 <= free.attempts_per_second <= 9
    assert free.admitted_per_second / free.attempts_per_second == pytest.approx(7 / 9)
    assert [tier.tier for tier in signal.tiers] == ["free", "plus", "pro"]
    assert signal.rate_seconds == 60  # the servers' intervalSeconds
    assert reader.failures == {}


async def test_an_unreachable_replica_gives_no_signal_and_says_why(
    replicas: list[QuotaServer],
) -> None:
    gone = f"127.0.0.1:{free_port()}"
    reader = QuotaServiceDemand(POLICY, listing([endpoint_of(replicas[0].url), gone]))
    try:
        assert await reader.read() is None
        assert await QuotaServiceDemand(POLICY, listing([])).read() is None
    finally:
        await reader.close()
    assert reader.failures == {"refused": 1}
    assert reader.last_failure is not None and gone in reader.last_failure


GOOD_TIER = {
    "tier": "free",
    "attemptsPerSecond": 2.0,
    "admittedPerSecond": 1.5,
    "refusedPerSecond": 0.5,
    "reaching": [4, 2, 1],
}


def page(**tier: Any) -> bytes:
    body = {"policy": POLICY, "observedAt": 1700000000.0, "intervalSeconds": 60}
    return json.dumps({**body, "tiers": [{**GOOD_TIER, **tier}]}).encode()


@pytest.fixture
async def page_server() -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A server whose ``/v1/demand`` answers ``answer["body"]`` with ``answer["status"]``."""
    answer: dict[str, Any] = {"body": page(), "status": 200}

    async def handler(request: web.Request) -> web.Response:
        assert request.query["policy"] == POLICY
        return web.Response(body=answer["body"], status=answer["status"])

    app = web.Application()
    app.router.add_get("/v1/demand", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"127.0.0.1:{port}", answer
    await runner.cleanup()


@pytest.mark.parametrize(
    ("body", "status", "reason", "named"),
    [
        (b"<html>not json</html>", 200, "malformed", "Invalid JSON"),
        (page(reaching=[3, -1]), 200, "malformed", "tiers[0].reaching[1]"),
        (page(refusedPerSecond=-0.5), 200, "malformed", "tiers[0].refusedPerSecond"),
        (page(attemptsPerSecond="2"), 200, "malformed", "tiers[0].attemptsPerSecond"),
        (page().replace(b'"intervalSeconds": 60', b'"intervalSeconds": 0'), 200, "malformed",
         "intervalSeconds"),
        (json.dumps({"policy": "other/policy", "observedAt": 1.0, "tiers": []}).encode(), 200,
         "malformed", "'other/policy', not 'inference/imagegen'"),
        (page(), 503, "http_status", "HTTP 503"),
    ],
)
async def test_a_bad_page_gives_no_signal_naming_what_is_wrong(
    page_server: tuple[str, dict[str, Any]], body: bytes, status: int, reason: str, named: str
) -> None:
    endpoint, answer = page_server
    answer.update(body=body, status=status)
    reader = QuotaServiceDemand(POLICY, listing([endpoint]))
    try:
        assert await reader.read() is None
        assert reader.failures == {reason: 1}
        assert reader.last_failure is not None and named in reader.last_failure
        assert endpoint in reader.last_failure
        answer.update(body=page(), status=200)  # and it recovers
        recovered = await reader.read()
    finally:
        await reader.close()
    assert recovered == DemandSignal((TierDemand("free", 2.0, 1.5, 0.5, (4, 2, 1)),), 1700000000.0)
    assert reader.last_failure is None


async def test_a_sum_that_grows_is_refused(page_server: tuple[str, dict[str, Any]]) -> None:
    endpoint, answer = page_server
    answer.update(body=page(reaching=[1, 2]))
    reader = QuotaServiceDemand(POLICY, listing([endpoint]))
    try:
        assert await reader.read() is None
    finally:
        await reader.close()
    assert reader.failures == {"malformed": 1}
    assert reader.last_failure == "tier 'free': reaching[1] (2) exceeds reaching[0] (1)"


def test_shares_of_different_lengths_are_cut_to_the_shortest() -> None:
    assert add_reaching([(3, 2, 1, 1), (), (2, 1)]) == (5, 3)
    assert add_reaching([(), ()]) == ()
    one = DemandSignal((TierDemand("free", 1.0, 1.0, 0.0, (1,)),), 10.0)
    other = DemandSignal(
        (TierDemand("plus", 2.0, 2.0, 0.0, ()), TierDemand("free", 3.0, 1.0, 2.0, (2, 1))), 9.0
    )
    assert add_signals([one, other]) == DemandSignal(
        (TierDemand("free", 4.0, 2.0, 2.0, (3,)), TierDemand("plus", 2.0, 2.0, 0.0, ())), 9.0
    )


async def read_until(
    reader: PrometheusDemand, reaching: tuple[int, ...], *, moving: bool
) -> DemandSignal:
    """The first signal whose free tier has ``reaching``, and when ``moving`` a rate above
    zero (Prometheus needs two scrapes of a replica after the attempts)."""
    deadline = time.monotonic() + 30
    while True:
        signal = await reader.read()
        free = signal.tier("free") if signal is not None else None
        if free is not None and free.reaching == reaching and (
            free.attempts_per_second > 0 or not moving
        ):
            return signal  # type: ignore[return-value]
        assert time.monotonic() < deadline, (signal, reader.last_failure)
        await asyncio.sleep(0.5)


@pytest.mark.slow
async def test_prometheus_reads_the_same_signal_as_the_replicas(
    replicas: list[QuotaServer], tmp_path: Path
) -> None:
    await attempt_spread(replicas)  # creates the series, so that the next round is a rate
    targets = [endpoint_of(replica.url) for replica in replicas]
    with running_prometheus(tmp_path, "meltguard-quota", targets) as prometheus:
        reader = PrometheusDemand(POLICY, prometheus.url, rate_window="1m")
        direct = QuotaServiceDemand(POLICY, listing(targets))
        try:
            await read_until(reader, (3, 3, 1, 1, 1, 0), moving=False)
            async with aiohttp.ClientSession() as http:
                for subject in ("second-1", "second-2", "second-3", "second-4"):
                    await consume(http, replicas[0].url, subject=subject, cost=4)
            signal = await read_until(reader, (7, 7, 5, 5, 1, 0), moving=True)
            expected = await direct.read()
        finally:
            await reader.close()
            await direct.close()
    assert expected is not None and expected.tier("free").reaching == (7, 7, 5, 5, 1, 0)  # type: ignore[union-attr]
    free = signal.tier("free")
    # the second round was all refused (cost 4 over a limit of 3); Prometheus' rate()
    # extrapolates each young series on its own, so the three rates are not exactly additive
    assert free is not None and 0 < free.refused_per_second <= free.attempts_per_second
    assert free.admitted_per_second < free.refused_per_second
    assert abs(signal.observed_at - time.time()) < 10
    assert signal.rate_seconds == 60  # rate_window="1m"


async def test_prometheus_down_gives_no_signal_and_queries_quote_the_policy() -> None:
    down = PrometheusDemand(POLICY, f"http://127.0.0.1:{free_port()}", timeout=1)
    try:
        assert await down.read() is None
    finally:
        await down.close()
    assert down.failures == {"connection": 1}
    queries = PrometheusDemand('a"b/c', "http://x").queries()
    assert queries["reaching"] == (
        'sum by (tier, attempts) (meltguard_quota_subjects_reaching{policy="a\\"b/c"})'
    )


async def test_the_readers_follow_each_policys_demand_spec(replicas: list[QuotaServer]) -> None:
    await attempt_spread(replicas)
    asked: list[tuple[str, dict[str, str], int]] = []

    async def list_endpoints(namespace: str, match_labels: Mapping[str, str],
                             port: int) -> list[str]:
        asked.append((namespace, dict(match_labels), port))
        return [endpoint_of(replica.url) for replica in replicas]

    namespace, name = POLICY.split("/")
    readers = DemandReaders(list_endpoints)
    quota_pods = QuotaServicePods(namespace="meltguard-system",
                                  selector=LabelSelector(match_labels={"app": "quota"}))
    by_service = DemandSpec(pods=quota_pods)
    by_url = DemandSpec(url=replicas[0].url)
    try:
        whole = await readers.read((namespace, name), by_service)
        alone = await readers.read((namespace, name), by_url)  # one share: refused
        assert await readers.read((namespace, name), None) is None
        other = await readers.read(("elsewhere", name), by_service)  # no such policy there
    finally:
        await readers.close()
    assert whole is not None and whole.tier("free").reaching == (3, 3, 1, 1, 1, 0)  # type: ignore[union-attr]
    assert alone is None and other is None
    # the metrics port by default, where the page needs no token
    assert asked == [("meltguard-system", {"app": "quota"}, 9090)] * 2
