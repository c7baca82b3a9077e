"""The exporter and dcgm sources against real HTTP servers: good pages, broken ones, dead ones."""

from __future__ import annotations

import time
from collections.abc import Mapping

import pytest
from prometheus_client import CollectorRegistry

from meltguard.ingest.http_client import Scraper
from meltguard.ingest.metrics import IngestMetrics
from meltguard.ingest.schema import EXPORTER_SCHEMA
from meltguard.ingest.scrape import ScrapeSource
from meltguard.ingest.source import ListEndpoints, TelemetryReading

from ..exporter_process import ATTACHED_PODS, RunningExporter, free_port, post_json
from .conftest import PageServer
from .pages import render_page, replace_line

NOW = 1_700_000_000.0
POD = ("inference", "imagegen-0")


def fixed_endpoints(*endpoints: str) -> ListEndpoints:
    async def list_endpoints(namespace: str, labels: Mapping[str, str], port: int) -> list[str]:
        return list(endpoints)

    return list_endpoints


def source_of(
    list_endpoints: ListEndpoints,
    *,
    metrics: IngestMetrics | None = None,
    scraper: Scraper | None = None,
    discovery_timeout: float = 10.0,
) -> ScrapeSource:
    """An exporter source; its metrics in a registry of their own unless given."""
    return ScrapeSource(
        EXPORTER_SCHEMA,
        namespace="meltguard-system",
        match_labels={"app.kubernetes.io/name": "meltguard-exporter"},
        port=9400,
        list_endpoints=list_endpoints,
        metrics=metrics or IngestMetrics(CollectorRegistry()),
        scraper=scraper,
        discovery_timeout=discovery_timeout,
    )


def exporter_source(*endpoints: str, timeout: float = 2.0) -> ScrapeSource:
    return source_of(fixed_endpoints(*endpoints), scraper=Scraper(timeout=timeout))


def by_uuid(reading: TelemetryReading) -> dict[str, object]:
    return {sample.uuid: sample for sample in reading.samples}


async def test_running_exporter_observation_follows_fire_drills(
    simulated_exporter: RunningExporter,
) -> None:
    source = exporter_source(f"127.0.0.1:{simulated_exporter.port}")
    wanted = [(pod.split("/")[0], pod.split("/")[1]) for pod in ATTACHED_PODS[:2]]
    try:
        post_json(f"{simulated_exporter.url}/simulate", {"gpus": "all", "reset": True})
        before = await source.read(wanted, NOW)
        assert before.errors == ()
        # round-robin over 3 pods: GPUs 0,1,3,4,6,7 belong to the two wanted pods
        assert len(before.samples) == 6
        assert {(s.namespace, s.pod) for s in before.samples} == set(wanted)
        assert all(s.up and s.utilization == 0.0 and s.sampled_at == NOW for s in before.samples)
        drill = {"gpus": [0], "utilization": 0.99, "temperatureCelsius": 91}
        drill["throttleReasons"] = ["hw_thermal", "sw_power_cap"]
        assert post_json(f"{simulated_exporter.url}/simulate", drill)[0] == 200
        after = await source.read(wanted, NOW + 5)
        hot = [s for s in after.samples if s.utilization == 0.99]
        assert len(hot) == 1
        assert hot[0].temperature_celsius == 91.0
        assert hot[0].throttle_reasons == {"hw_thermal", "sw_power_cap"}
        assert hot[0].memory_total_bytes > hot[0].memory_used_bytes > 0
        assert hot[0].slowdown_temperature_celsius == 87.0
        assert post_json(f"{simulated_exporter.url}/simulate", {"gpus": [0], "up": False})[0] == 200
        lost = await source.read(wanted, NOW + 10)
        assert [s.up for s in lost.samples if s.uuid == hot[0].uuid] == [False]
        observation = lost.observation(current_replicas=2, pending_replicas=1)
        assert observation.samples == lost.samples
        assert (observation.current_replicas, observation.pending_replicas) == (2, 1)
    finally:
        await source.close()


async def serve(page_server: PageServer, *pages: str, **options: float) -> list[str]:
    endpoints = await page_server.start(len(pages), **options)
    for endpoint, page in zip(endpoints, pages, strict=True):
        page_server.behaviours[endpoint].body = page.encode()
    return endpoints


async def read_once(page: str, page_server: PageServer) -> TelemetryReading:
    (endpoint,) = await serve(page_server, page)
    source = exporter_source(endpoint)
    try:
        return await source.read([POD], NOW)
    finally:
        await source.close()


async def test_clean_page_gives_every_gpu(page_server: PageServer) -> None:
    reading = await read_once(render_page(), page_server)
    assert len(reading.samples) == 8
    assert all(s.up for s in reading.samples)
    assert reading.rejected == {}


async def test_gpus_of_other_pods_are_left_out(page_server: PageServer) -> None:
    page = render_page(pods=("inference/imagegen-0", "inference/imagegen-1"))
    reading = await read_once(page, page_server)
    assert len(reading.samples) == 4
    assert {s.pod for s in reading.samples} == {"imagegen-0"}


@pytest.mark.parametrize(
    ("metric", "value", "reason"),
    [
        ("meltguard_gpu_temperature_celsius", "NaN", "not_finite"),
        ("meltguard_gpu_temperature_celsius", "400", "out_of_range"),
        ("meltguard_gpu_temperature_celsius", "-5", "out_of_range"),
        ("meltguard_gpu_utilization_ratio", "7", "out_of_range"),
        ("meltguard_gpu_utilization_ratio", "+Inf", "not_finite"),
        ("meltguard_gpu_memory_used_bytes", "-1", "out_of_range"),
        ("meltguard_gpu_memory_used_bytes", "1e15", "out_of_range"),  # above the total
        ("meltguard_gpu_utilization_ratio", "0.5.1", "bad_value"),
    ],
)
async def test_absurd_core_value_marks_only_that_gpu_down(
    page_server: PageServer, metric: str, value: str, reason: str
) -> None:
    reading = await read_once(replace_line(render_page(), metric, 3, value), page_server)
    assert reading.errors == ()
    up = {s.uuid: s.up for s in reading.samples}
    assert len(up) == 8
    assert sorted(up.values()) == [False] + [True] * 7
    assert reading.rejected.get(reason, 0) == 1


async def test_gpu_with_every_value_refused_is_down_not_gone(page_server: PageServer) -> None:
    page = render_page()
    for metric in ("utilization_ratio", "temperature_celsius", "memory_used_bytes"):
        page = replace_line(page, f"meltguard_gpu_{metric}", 4, "NaN")
    for metric in ("memory_total_bytes", "slowdown_temperature_celsius", "power_watts"):
        page = replace_line(page, f"meltguard_gpu_{metric}", 4, "oops")
    page = replace_line(page, "meltguard_gpu_power_limit_watts", 4, "-1")
    page = replace_line(page, "meltguard_gpu_up", 4, "2")
    reading = await read_once(page, page_server)
    assert len(reading.samples) == 8
    assert [s.up for s in reading.samples].count(False) == 1


async def test_absurd_optional_value_only_drops_that_value(page_server: PageServer) -> None:
    page = replace_line(render_page(), "meltguard_gpu_power_watts", 2, "-70")
    reading = await read_once(page, page_server)
    assert all(s.up for s in reading.samples)
    assert sorted(str(s.power_watts) for s in reading.samples) == ["70.0"] * 7 + ["None"]
    assert reading.rejected == {"out_of_range": 1}


async def test_duplicate_series_makes_the_value_unknown(page_server: PageServer) -> None:
    page = render_page()
    duplicate = next(
        line for line in page.split("\n") if line.startswith("meltguard_gpu_utilization_ratio{")
    )
    reading = await read_once(page + duplicate.replace(" 0.0", " 0.9") + "\n", page_server)
    assert sorted(s.up for s in reading.samples) == [False] + [True] * 7
    assert reading.rejected["duplicate"] == 1


async def test_unknown_metrics_and_comments_are_ignored(page_server: PageServer) -> None:
    extra = (
        "# HELP process_cpu_seconds_total CPU time\n# TYPE process_cpu_seconds_total counter\n"
        "process_cpu_seconds_total 12.5\n"
        'meltguard_gpu_fan_speed_ratio{gpu="0",uuid="GPU-x",'
        'namespace="inference",pod="imagegen-0"} 0.4\n'
    )
    clean = await read_once(render_page(), page_server)
    noisy = await read_once(extra + render_page(), page_server)
    assert noisy.samples == clean.samples
    assert noisy.rejected == {}


async def test_truncated_page_keeps_what_arrived(page_server: PageServer) -> None:
    page = render_page()
    cut = page.index('meltguard_gpu_up{gpu="5"') + 30  # mid-line, inside GPU 5's labels
    reading = await read_once(page[:cut], page_server)
    assert reading.errors == ()
    up = sorted((s.uuid, s.up) for s in reading.samples)
    assert len(up) == 8  # every GPU's other metrics came before the cut
    assert reading.rejected == {"truncated": 1}


async def test_page_of_garbage_is_an_endpoint_error(page_server: PageServer) -> None:
    reading = await read_once("<html><body>502 Bad Gateway</body></html>\n", page_server)
    assert reading.samples == ()
    assert [e.reason for e in reading.errors] == ["malformed"]


async def test_failing_endpoint_marks_only_its_gpus_lost(page_server: PageServer) -> None:
    good, bad = await serve(
        page_server,
        render_page(node="node-a"),
        render_page(node="node-b", pods=("inference/imagegen-1",)),
    )
    source = exporter_source(good, bad, timeout=0.5)
    wanted = [POD, ("inference", "imagegen-1")]
    try:
        first = await source.read(wanted, NOW)
        assert len(first.samples) == 16 and first.errors == ()
        node_b = {s.uuid for s in first.samples if s.node == "node-b"}
        cases = [
            ("delay", 2.0, "timeout"),
            ("status", 500, "http_status"),
            ("body", b"x" * (10 * 1024 * 1024 + 1), "too_large"),
        ]
        for attribute, value, reason in cases:
            behaviour = page_server.behaviours[bad]
            saved = getattr(behaviour, attribute)
            setattr(behaviour, attribute, value)
            started = time.monotonic()
            reading = await source.read(wanted, NOW)
            elapsed = time.monotonic() - started
            setattr(behaviour, attribute, saved)
            assert [(e.endpoint, e.reason) for e in reading.errors] == [(bad, reason)], reason
            assert reading.lost_gpus == node_b
            assert {s.node for s in reading.samples} == {"node-a"}
            assert elapsed < 1.5, f"{reason}: the read waited {elapsed:.1f}s, past the 0.5s timeout"
        recovered = await source.read(wanted, NOW)
        assert len(recovered.samples) == 16 and recovered.lost_gpus == frozenset()
    finally:
        await source.close()


async def test_refused_connection_and_counted_errors(page_server: PageServer) -> None:
    (good,) = await serve(page_server, render_page())
    dead = f"127.0.0.1:{free_port()}"
    metrics = IngestMetrics(CollectorRegistry())
    source = source_of(fixed_endpoints(good, dead), metrics=metrics)
    try:
        reading = await source.read([POD], NOW)
    finally:
        await source.close()
    assert len(reading.samples) == 8
    assert [(e.endpoint, e.reason) for e in reading.errors] == [(dead, "refused")]
    counted = metrics.registry.get_sample_value(
        "meltguard_telemetry_endpoint_errors_total", {"source": "exporter", "reason": "refused"}
    )
    assert counted == 1.0


async def test_chunked_pages_and_reconnect_after_idle_close(page_server: PageServer) -> None:
    (endpoint,) = await serve(page_server, render_page(), keepalive_timeout=0.2)
    page_server.behaviours[endpoint].chunked = True
    source = exporter_source(endpoint)
    try:
        first = await source.read([POD], NOW)
        await asyncio_sleep(0.5)  # the server closes the idle keep-alive connection
        second = await source.read([POD], NOW)
    finally:
        await source.close()
    assert len(first.samples) == len(second.samples) == 8
    assert second.errors == ()


async def asyncio_sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


async def test_two_endpoints_claiming_one_gpu_count_a_duplicate(page_server: PageServer) -> None:
    page = render_page()
    source = exporter_source(*await serve(page_server, page, page))
    try:
        reading = await source.read([POD], NOW)
    finally:
        await source.close()
    assert len(reading.samples) == 8
    assert reading.rejected == {"duplicate": 8}


async def test_discovery_failure_marks_known_gpus_lost(page_server: PageServer) -> None:
    (endpoint,) = await serve(page_server, render_page())
    calls = 0

    async def flaky(namespace: str, labels: Mapping[str, str], port: int) -> list[str]:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise ConnectionError("API server unreachable")
        return [endpoint]

    source = source_of(flaky)
    try:
        first = await source.read([POD], NOW)
        second = await source.read([POD], NOW)
    finally:
        await source.close()
    assert second.samples == ()
    assert second.lost_gpus == {s.uuid for s in first.samples}
    assert [e.reason for e in second.errors] == ["discovery"]
    assert "API server unreachable" in second.errors[0].message


async def test_hung_discovery_is_bounded() -> None:
    import asyncio

    async def hung(namespace: str, labels: Mapping[str, str], port: int) -> list[str]:
        await asyncio.sleep(30)
        return []

    source = source_of(hung, discovery_timeout=0.2)
    started = time.monotonic()
    try:
        reading = await source.read([POD], NOW)
    finally:
        await source.close()
    assert time.monotonic() - started < 2
    assert [e.reason for e in reading.errors] == ["discovery"]
    assert "no endpoint list within 0.2s" in reading.errors[0].message


async def test_gpus_that_left_the_page_are_not_reported_lost(page_server: PageServer) -> None:
    (endpoint,) = await serve(page_server, render_page(gpus=8))
    source = exporter_source(endpoint, timeout=0.5)
    try:
        assert len((await source.read([POD], NOW)).samples) == 8
        page_server.behaviours[endpoint].body = render_page(gpus=3).encode()
        fewer = await source.read([POD], NOW)
        assert len(fewer.samples) == 3 and fewer.lost_gpus == frozenset()
        page_server.behaviours[endpoint].status = 503
        failed = await source.read([POD], NOW)
    finally:
        await source.close()
    assert failed.lost_gpus == {s.uuid for s in fewer.samples}
