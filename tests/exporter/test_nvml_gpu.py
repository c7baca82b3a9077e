"""Real NVML: the exporter's page checked against pynvml's own answers (needs an NVIDIA GPU).

Static quantities (identity, memory size, power limit, slowdown threshold) must match
exactly; live ones (utilization, temperature, power, memory in use) may move between the
two reads, so they are compared within a tolerance.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ..exporter_process import RunningExporter, get, start_exporter, stop_exporter
from .helpers import scrape_samples

pynvml = pytest.importorskip("pynvml")
pytestmark = [pytest.mark.gpu, pytest.mark.slow]


@pytest.fixture(scope="module")
def nvml() -> Iterator[Any]:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        pytest.skip(f"NVML cannot initialise here ({error}): no NVIDIA GPU/driver")
    yield pynvml
    pynvml.nvmlShutdown()


@pytest.fixture(scope="module")
def nvml_exporter(nvml: Any) -> Iterator[RunningExporter]:
    exporter = start_exporter("--attribution", "none", "--interval", "0.5")
    yield exporter
    stop_exporter(exporter)


def nvml_truth(nvml: Any, index: int) -> dict[str, Any]:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
    return {
        "uuid": nvml.nvmlDeviceGetUUID(handle),
        "model": nvml.nvmlDeviceGetName(handle),
        "utilization": nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100,
        "memory_used": memory.used,
        "memory_total": memory.total,
        "temperature": nvml.nvmlDeviceGetTemperatureV(handle, nvml.NVML_TEMPERATURE_GPU),
        "power": nvml.nvmlDeviceGetPowerUsage(handle) / 1000,
        "power_limit": nvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000,
        "reasons": nvml.nvmlDeviceGetCurrentClocksEventReasons(handle),
    }


def test_every_metric_matches_nvml(nvml: Any, nvml_exporter: RunningExporter) -> None:
    assert get(f"{nvml_exporter.url}/readyz")[0] == 200
    samples = scrape_samples(nvml_exporter.url)
    count = nvml.nvmlDeviceGetCount()
    up = {s.labels["gpu"]: s.value for s in samples if s.name == "meltguard_gpu_up"}
    assert up == {str(i): 1.0 for i in range(count)}
    for index in range(count):
        truth = nvml_truth(nvml, index)
        mine = {
            s.name: s
            for s in samples
            if s.labels["gpu"] == str(index) and s.name != "meltguard_gpu_throttled"
        }
        labels = mine["meltguard_gpu_up"].labels
        assert (labels["uuid"], labels["model"]) == (truth["uuid"], truth["model"])
        assert mine["meltguard_gpu_memory_total_bytes"].value == truth["memory_total"]
        assert mine["meltguard_gpu_power_limit_watts"].value == truth["power_limit"]
        assert 0 <= mine["meltguard_gpu_utilization_ratio"].value <= 1
        assert abs(mine["meltguard_gpu_utilization_ratio"].value - truth["utilization"]) <= 0.5
        assert abs(mine["meltguard_gpu_temperature_celsius"].value - truth["temperature"]) <= 5
        assert (
            abs(mine["meltguard_gpu_power_watts"].value - truth["power"])
            <= 0.5 * truth["power_limit"]
        )
        assert (
            abs(mine["meltguard_gpu_memory_used_bytes"].value - truth["memory_used"]) <= 2 * 2**30
        )
        slowdown = mine.get("meltguard_gpu_slowdown_temperature_celsius")
        if slowdown is not None:
            assert 40 <= slowdown.value <= 120
        reasons = {
            s.labels["reason"]
            for s in samples
            if s.name == "meltguard_gpu_throttled" and s.labels["gpu"] == str(index)
        }
        print(f"GPU {index} {truth['model']}: nvml={truth} exporter reasons={sorted(reasons)}")


def test_backend_reading_matches_nvml(nvml: Any) -> None:
    from meltguard.exporter.nvml import NvmlBackend

    for reading in NvmlBackend().read():
        truth = nvml_truth(nvml, reading.index)
        assert reading.up
        assert (reading.uuid, reading.model) == (truth["uuid"], truth["model"])
        assert reading.memory_total_bytes == truth["memory_total"]
        assert reading.power_limit_watts == truth["power_limit"]
        assert reading.temperature_celsius is not None
        assert abs(reading.temperature_celsius - truth["temperature"]) <= 5
