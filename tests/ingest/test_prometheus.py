"""The ``prometheus`` source against a real Prometheus server scraping the simulated exporter.

Needs the ``prometheus`` binary (Debian package ``prometheus``); skipped with a reason if absent.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from meltguard.core.observation import GpuSample
from meltguard.ingest.metrics import IngestMetrics
from meltguard.ingest.prometheus import PrometheusSource, QueryError, parse_vector
from meltguard.ingest.schema import EXPORTER_SCHEMA
from meltguard.ingest.scrape import ScrapeSource

from ..exporter_process import ATTACHED_PODS, RunningExporter, free_port, get, post_json
from .prometheus_server import RunningPrometheus, running_prometheus

NOW = time.time


@pytest.fixture(scope="module")
def prometheus(
    simulated_exporter: RunningExporter, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningPrometheus]:
    workdir: Path = tmp_path_factory.mktemp("prometheus")
    target = f"127.0.0.1:{simulated_exporter.port}"
    with running_prometheus(workdir, "meltguard-exporter", [target]) as running:
        yield running


def query_value(prometheus: RunningPrometheus, query: str) -> list[float]:
    status, text = get(f"{prometheus.url}/api/v1/query?{urllib.parse.urlencode({'query': query})}")
    assert status == 200, text
    return [float(item["value"][1]) for item in json.loads(text)["data"]["result"]]


def wait_for(
    prometheus: RunningPrometheus, query: str, expected: list[float], timeout: float = 20
) -> None:
    deadline = time.monotonic() + timeout
    while query_value(prometheus, query) != expected:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{query} never became {expected}: {query_value(prometheus, query)}")
        time.sleep(0.2)


def without_time(samples: tuple[GpuSample, ...]) -> dict[str, GpuSample]:
    return {s.uuid: s._replace(sampled_at=0.0) for s in samples}


@pytest.mark.slow
async def test_prometheus_source_matches_the_direct_exporter_source(
    simulated_exporter: RunningExporter, prometheus: RunningPrometheus
) -> None:
    drill = {
        "gpus": [0, 4],
        "reset": True,
        "utilization": 0.99,
        "temperatureCelsius": 93,
        "throttleReasons": ["hw_thermal", "hw_power_brake"],
        "memoryUsedRatio": 0.96,
    }
    post_json(f"{simulated_exporter.url}/simulate", {"gpus": "all", "reset": True})
    assert post_json(f"{simulated_exporter.url}/simulate", drill)[0] == 200
    assert post_json(f"{simulated_exporter.url}/simulate", {"gpus": [6], "up": False})[0] == 200
    wait_for(prometheus, 'sum(meltguard_gpu_throttled{reason="hw_power_brake"})', [2.0])
    wait_for(prometheus, "count(meltguard_gpu_up == 0)", [1.0])
    wanted = [(p.split("/")[0], p.split("/")[1]) for p in ATTACHED_PODS[:2]]

    async def direct_endpoints(namespace: str, labels: object, port: int) -> list[str]:
        return [f"127.0.0.1:{simulated_exporter.port}"]

    metrics = IngestMetrics(CollectorRegistry())
    direct = ScrapeSource(
        EXPORTER_SCHEMA,
        namespace="ns",
        match_labels={},
        port=9400,
        list_endpoints=direct_endpoints,
        metrics=metrics,
    )
    through_prometheus = PrometheusSource(prometheus.url, metrics=metrics)
    try:
        now = NOW()
        expected = await direct.read(wanted, now)
        observed = await through_prometheus.read(wanted, now)
    finally:
        await direct.close()
        await through_prometheus.close()
    assert observed.errors == ()
    assert len(expected.samples) == 6
    assert without_time(observed.samples) == without_time(expected.samples)
    hot = [s for s in observed.samples if s.utilization == 0.99]
    assert len(hot) == 2 and all(
        s.throttle_reasons == {"hw_thermal", "hw_power_brake"} for s in hot
    )
    assert [s.up for s in observed.samples].count(False) == 1
    for sample in observed.samples:  # stamped with Prometheus' scrape time, not the query time
        assert now - 10 < sample.sampled_at <= now


async def test_unreachable_prometheus_marks_the_last_gpus_lost() -> None:
    metrics = IngestMetrics(CollectorRegistry())
    source = PrometheusSource(f"http://127.0.0.1:{free_port()}", metrics=metrics, timeout=1)
    try:
        reading = await source.read([("inference", "imagegen-0")], NOW())
    finally:
        await source.close()
    assert reading.samples == ()
    assert [e.reason for e in reading.errors] == ["connection"]
    labels = {"source": "prometheus", "reason": "connection"}
    counted = metrics.registry.get_sample_value("meltguard_telemetry_endpoint_errors_total", labels)
    assert counted == 1.0


@pytest.mark.parametrize(
    "answer",
    [
        {"status": "error", "errorType": "bad_data", "error": "parse error"},
        {"status": "success", "data": {"resultType": "matrix", "result": []}},
        {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}}]}},
        {
            "status": "success",
            "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "x"]}]},
        },
        ["not", "an", "object"],
    ],
)
def test_unusable_answers_are_query_errors(answer: object) -> None:
    with pytest.raises(QueryError):
        parse_vector(answer)


def test_vector_answer_is_parsed() -> None:
    answer = {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [
                {
                    "metric": {"__name__": "meltguard_gpu_up", "uuid": "GPU-1"},
                    "value": [1700000000.5, "1"],
                }
            ],
        },
    }
    assert parse_vector(answer) == [
        ({"__name__": "meltguard_gpu_up", "uuid": "GPU-1"}, 1.0, 1700000000.5)
    ]


async def serve_answer(answer: bytes, status: int = 200) -> tuple[str, object]:
    from aiohttp import web

    async def query(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=status)
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(answer), 8192):
            await response.write(answer[start : start + 8192])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/api/v1/query", query)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return f"http://127.0.0.1:{port}", runner


async def test_large_chunked_answer_is_read_whole() -> None:
    series = [
        {
            "metric": {
                "__name__": name,
                "uuid": f"GPU-{i}",
                "namespace": "ns",
                "pod": f"p{i % 50}",
            },
            "value": [1700000000.0, value],
        }
        for i in range(3000)
        for name, value in [
            ("meltguard_gpu_utilization_ratio", "0.5"),
            ("meltguard_gpu_temperature_celsius", "60"),
            ("meltguard_gpu_memory_used_bytes", "1e9"),
            ("meltguard_gpu_memory_total_bytes", "8e10"),
            ("meltguard_gpu_up", "1"),
        ]
    ]
    body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": series}})
    url, runner = await serve_answer(body.encode())
    source = PrometheusSource(url, metrics=IngestMetrics(CollectorRegistry()))
    try:
        reading = await source.read([("ns", f"p{i}") for i in range(50)], NOW())
    finally:
        await source.close()
        await runner.cleanup()  # type: ignore[attr-defined]
    assert len(body) > 1_000_000
    assert reading.errors == ()
    assert len(reading.samples) == 3000 and all(s.up for s in reading.samples)


async def test_proxy_error_page_is_an_http_status_error() -> None:
    url, runner = await serve_answer(b"<html>502 Bad Gateway</html>", status=502)
    source = PrometheusSource(url, metrics=IngestMetrics(CollectorRegistry()))
    try:
        reading = await source.read([("ns", "p0")], NOW())
    finally:
        await source.close()
        await runner.cleanup()  # type: ignore[attr-defined]
    assert [(e.reason, "HTTP 502" in e.message) for e in reading.errors] == [("http_status", True)]
