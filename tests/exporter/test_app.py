"""The exporter app in-process over real HTTP: readiness of a stale sampler, oversized drills."""

from __future__ import annotations

import time

from aiohttp.test_utils import TestClient, TestServer

from meltguard.exporter.app import MAX_DRILL_BODY_BYTES, create_app
from meltguard.exporter.attribution import NoAttribution
from meltguard.exporter.sampler import Sampler
from meltguard.exporter.simulated import SimulatedBackend


def simulated_app(clock_offset: float = 0.0):  # type: ignore[no-untyped-def]
    backend = SimulatedBackend(2, "node-a")
    sampler = Sampler(
        backend, NoAttribution(), interval=60, clock=lambda: time.time() + clock_offset
    )
    return create_app(sampler, "node-a", backend)


async def test_readyz_reports_a_stale_sample() -> None:
    # interval 60 s: a sample counts as current for 3 intervals, this one is 10 minutes old
    async with TestClient(TestServer(simulated_app(clock_offset=-600), host="127.0.0.1")) as client:
        answer = await client.get("/readyz")
        assert answer.status == 503
        assert "last GPU sample is 600s old" in await answer.text()


async def test_oversized_drill_is_refused_and_changes_nothing() -> None:
    async with TestClient(TestServer(simulated_app(), host="127.0.0.1")) as client:
        before = await (await client.get("/metrics")).text()
        body = (
            b'{"gpus": "all", "utilization": 1, "padding": "' + b"x" * MAX_DRILL_BODY_BYTES + b'"}'
        )
        answer = await client.post("/simulate", data=body)
        assert answer.status == 413
        assert (await answer.json())["field"] == "body"
        assert await (await client.get("/metrics")).text() == before
