"""NVIDIA dcgm-exporter pages read by the ``dcgm`` source into the same sample shape.

The fixture pages under ``fixtures/`` follow dcgm-exporter's documented output: the
``DCGM_FI_DEV_*`` field names of its default counters (utilization and memory in the units
DCGM reports: percent, MiB), labels ``gpu``, ``UUID``, ``pci_bus_id``, ``device``,
``modelName``, ``Hostname`` and, for GPUs allocated to a pod, ``container``, ``namespace``,
``pod``. ``3.x`` uses ``DCGM_FI_DEV_CLOCK_THROTTLE_REASONS``; ``4.x`` its successor
``DCGM_FI_DEV_CLOCKS_EVENT_REASONS`` plus reserved memory, power limit and slowdown threshold.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from prometheus_client import CollectorRegistry

from meltguard.api.models import TelemetrySpec
from meltguard.core.observation import GpuSample
from meltguard.ingest.factory import create_source
from meltguard.ingest.metrics import IngestMetrics
from meltguard.ingest.schema import MIB
from meltguard.ingest.scrape import ScrapeSource
from meltguard.ingest.source import ListEndpoints, TelemetryReading, TelemetrySource

from .conftest import PageServer

FIXTURES = Path(__file__).with_name("fixtures")
NOW = 1_700_000_000.0
WANTED = [("inference", f"imagegen-7f9c-{i}") for i in range(3)]


def dcgm_source(list_endpoints: ListEndpoints) -> TelemetrySource:
    spec = TelemetrySpec.model_validate({"source": "dcgm"})
    return create_source(spec, list_endpoints, metrics=IngestMetrics(CollectorRegistry()))


async def read_fixture(page_server: PageServer, name: str) -> TelemetryReading:
    (endpoint,) = await page_server.start(1)
    page_server.behaviours[endpoint].body = (FIXTURES / name).read_bytes()
    asked: list[tuple[str, dict[str, str], int]] = []

    async def list_endpoints(namespace: str, labels: Mapping[str, str], port: int) -> list[str]:
        asked.append((namespace, dict(labels), port))
        return [endpoint]

    source = dcgm_source(list_endpoints)
    assert isinstance(source, ScrapeSource)
    try:
        reading = await source.read(WANTED, NOW)
    finally:
        await source.close()
    assert asked == [("gpu-operator", {"app": "nvidia-dcgm-exporter"}, 9400)]
    return reading


async def test_dcgm_3_page(page_server: PageServer) -> None:
    reading = await read_fixture(page_server, "dcgm_exporter_3.x.txt")
    assert reading.errors == () and reading.rejected == {}
    samples = {s.pod: s for s in reading.samples}
    assert set(samples) == {"imagegen-7f9c-0", "imagegen-7f9c-1"}  # GPU 2 is held by no pod
    assert samples["imagegen-7f9c-1"] == GpuSample(
        uuid="GPU-8a1d2c3b-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
        utilization=0.99,
        temperature_celsius=91.0,
        memory_used_bytes=78012 * MIB,
        memory_total_bytes=(78012 + 3547) * MIB,
        sampled_at=NOW,
        node="gpu-node-12",
        namespace="inference",
        pod="imagegen-7f9c-1",
        power_watts=698.9,
        throttle_reasons=frozenset({"hw_thermal", "sw_thermal"}),
        model="NVIDIA H100 80GB HBM3",
    )
    assert samples["imagegen-7f9c-0"].throttle_reasons == frozenset()
    assert samples["imagegen-7f9c-0"].utilization == 0.87


async def test_dcgm_4_page(page_server: PageServer) -> None:
    reading = await read_fixture(page_server, "dcgm_exporter_4.x.txt")
    (sample,) = reading.samples
    assert sample.up
    assert sample.memory_total_bytes == (76000 + 4559 + 1000) * MIB
    assert sample.slowdown_temperature_celsius == 87.0
    assert (sample.power_watts, sample.power_limit_watts) == (689.0, 700.0)
    assert sample.throttle_reasons == {"hw_power_brake"}


async def test_dcgm_page_with_absurd_values(page_server: PageServer) -> None:
    page = (FIXTURES / "dcgm_exporter_3.x.txt").read_text()
    page = page.replace(
        'pod="imagegen-7f9c-0"} 87\n', 'pod="imagegen-7f9c-0"} 700\n'
    )  # GPU_UTIL 700 %
    page = page.replace('pod="imagegen-7f9c-1"} 96\n', 'pod="imagegen-7f9c-1"} -3\n')  # bitmask < 0
    (endpoint,) = await page_server.start(1)
    page_server.behaviours[endpoint].body = page.encode()

    async def list_endpoints(namespace: str, labels: Mapping[str, str], port: int) -> list[str]:
        return [endpoint]

    source = dcgm_source(list_endpoints)
    try:
        reading = await source.read(WANTED, NOW)
    finally:
        await source.close()
    samples = {s.pod: s for s in reading.samples}
    assert not samples["imagegen-7f9c-0"].up
    assert (
        samples["imagegen-7f9c-1"].up and samples["imagegen-7f9c-1"].throttle_reasons == frozenset()
    )
    assert reading.rejected == {"out_of_range": 2, "incomplete": 1}
