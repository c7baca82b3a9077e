"""One scrape serves every policy reading an exporter: each gets its own pods' GPUs."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from prometheus_client import CollectorRegistry

from meltguard.ingest.http_client import Scraper
from meltguard.ingest.metrics import IngestMetrics
from meltguard.ingest.schema import EXPORTER_SCHEMA
from meltguard.ingest.scrape import ScrapeSource
from meltguard.ingest.shared import SharedScrape

from .conftest import PageServer
from .pages import render_page

NOW = 1_700_000_000.0
TEAM_A = ("team-a", "worker-0")
TEAM_B = ("team-b", "worker-0")


async def _shared(page_server: PageServer) -> tuple[SharedScrape, list[str], list[int]]:
    endpoints = await page_server.start(2)
    page_server.behaviours[endpoints[0]].body = render_page(
        "node-a", gpus=4, pods=("/".join(TEAM_A),)).encode()
    page_server.behaviours[endpoints[1]].body = render_page(
        "node-b", gpus=2, pods=("/".join(TEAM_B),)).encode()
    lookups: list[int] = []

    async def list_endpoints(namespace: str, labels: Mapping[str, str], port: int) -> list[str]:
        lookups.append(port)
        return endpoints

    source = ScrapeSource(EXPORTER_SCHEMA, namespace="meltguard-system",
                          match_labels={"app": "exporter"}, port=9400,
                          list_endpoints=list_endpoints,
                          metrics=IngestMetrics(CollectorRegistry()), scraper=Scraper(timeout=1))
    return SharedScrape(source), endpoints, lookups


async def test_concurrent_readers_share_one_scrape_and_take_their_own_gpus(
        page_server: PageServer) -> None:
    shared, _, lookups = await _shared(page_server)
    try:
        wanted = [[TEAM_A], [TEAM_B]] * 20
        readings = await asyncio.gather(*(shared.read(pods, NOW + index / 100)
                                          for index, pods in enumerate(wanted)))
        assert (shared.scrapes, len(lookups)) == (1, 1)
        for pods, reading in zip(wanted, readings, strict=True):
            assert {(sample.namespace, sample.pod) for sample in reading.samples} == set(pods)
            assert len(reading.samples) == (4 if pods == [TEAM_A] else 2)
        later = await shared.read([TEAM_A, TEAM_B], NOW + 0.4)  # within the reuse window
        assert (len(later.samples), shared.scrapes) == (6, 1)
        await shared.read([TEAM_A], NOW + 1.0)  # the next tick scrapes again
        assert (shared.scrapes, len(lookups)) == (2, 2)
    finally:
        await shared.close()


async def test_an_endpoint_that_fails_loses_only_the_gpus_it_served(
        page_server: PageServer) -> None:
    shared, endpoints, _ = await _shared(page_server)
    try:
        await shared.read([TEAM_A], NOW)
        page_server.behaviours[endpoints[1]].status = 500
        team_a, team_b = await asyncio.gather(shared.read([TEAM_A], NOW + 1),
                                              shared.read([TEAM_B], NOW + 1))
        assert (len(team_a.samples), team_a.lost_gpus) == (4, frozenset())
        assert (len(team_b.samples), len(team_b.lost_gpus)) == (0, 2)
        assert [error.endpoint for error in team_b.errors] == [endpoints[1]]
    finally:
        await shared.close()
