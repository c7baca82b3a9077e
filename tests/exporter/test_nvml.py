"""The NVML backend: error paths with a pynvml-shaped fake; real-GPU checks marked ``gpu``."""

from __future__ import annotations

from types import ModuleType
from typing import cast

import pytest
from aiohttp.test_utils import TestClient, TestServer

from meltguard.exporter.app import create_app
from meltguard.exporter.attribution import NoAttribution
from meltguard.exporter.devices import BackendUnavailable
from meltguard.exporter.nvml import NvmlBackend
from meltguard.exporter.sampler import Sampler

from .fake_nvml import (
    NVML_ERROR_DRIVER_NOT_LOADED,
    NVML_ERROR_GPU_IS_LOST,
    NVML_ERROR_NOT_SUPPORTED,
    FakeGpu,
    FakeNvml,
)
from .helpers import by_gpu


def backend(nvml: FakeNvml) -> NvmlBackend:
    return NvmlBackend(cast(ModuleType, nvml))


def test_reads_every_quantity_in_the_exporters_units() -> None:
    gpu = FakeGpu("GPU-a", event_reasons=0x40 | 0x04 | 0x01)  # hw thermal, sw power cap, idle
    (reading,) = backend(FakeNvml([gpu])).read()
    assert reading.up
    assert (reading.uuid, reading.model, reading.index) == ("GPU-a", "NVIDIA A100-SXM4-80GB", 0)
    assert reading.utilization == 0.42
    assert (reading.memory_used_bytes, reading.memory_total_bytes) == (10 * 2**30, 80 * 2**30)
    assert reading.temperature_celsius == 61.0
    assert reading.slowdown_temperature_celsius == 87.0  # the threshold call, where supported
    assert (reading.power_watts, reading.power_limit_watts) == (250.0, 400.0)
    assert reading.throttle_reasons == {"hw_thermal", "sw_power_cap"}


def test_lost_gpu_is_down_and_the_others_are_served() -> None:
    lost = FakeGpu("GPU-b", failures={"nvmlDeviceGetUtilizationRates": NVML_ERROR_GPU_IS_LOST})
    readings = backend(FakeNvml([FakeGpu("GPU-a"), lost, FakeGpu("GPU-c")])).read()
    assert [(r.uuid, r.up) for r in readings] == [
        ("GPU-a", True),
        ("GPU-b", False),
        ("GPU-c", True),
    ]
    assert readings[1].utilization is None and readings[1].temperature_celsius is None


def test_not_supported_optional_readings_are_left_out() -> None:
    gpu = FakeGpu(
        "GPU-a",
        slowdown_field=None,
        slowdown_threshold=None,
        failures={
            "nvmlDeviceGetPowerUsage": NVML_ERROR_NOT_SUPPORTED,
            "nvmlDeviceGetCurrentClocksEventReasons": NVML_ERROR_NOT_SUPPORTED,
        },
    )
    (reading,) = backend(FakeNvml([gpu])).read()
    assert reading.up
    assert reading.power_watts is None and reading.slowdown_temperature_celsius is None
    assert reading.power_limit_watts == 400.0
    assert reading.throttle_reasons == frozenset()


def test_slowdown_threshold_falls_back_to_the_field_value() -> None:
    (reading,) = backend(FakeNvml([FakeGpu("GPU-a", slowdown_threshold=None)])).read()
    assert reading.slowdown_temperature_celsius == 88.0


def test_not_supported_core_reading_marks_the_gpu_down() -> None:
    gpu = FakeGpu("GPU-mig", failures={"nvmlDeviceGetUtilizationRates": NVML_ERROR_NOT_SUPPORTED})
    (reading,) = backend(FakeNvml([gpu])).read()
    assert not reading.up


def test_gpu_without_handle_is_down_and_retried() -> None:
    gpu = FakeGpu("GPU-a", failures={"nvmlDeviceGetHandleByIndex": NVML_ERROR_GPU_IS_LOST})
    nvml_backend = backend(FakeNvml([gpu]))
    assert [r.up for r in nvml_backend.read()] == [False]
    gpu.failures.clear()
    assert [(r.uuid, r.up) for r in nvml_backend.read()] == [("GPU-a", True)]


def test_missing_nvml_is_unavailable_and_init_is_retried() -> None:
    nvml = FakeNvml([FakeGpu("GPU-a")], init_error=NVML_ERROR_DRIVER_NOT_LOADED)
    nvml_backend = backend(nvml)
    with pytest.raises(BackendUnavailable, match="NVML unavailable"):
        nvml_backend.read()
    nvml.init_error = None
    assert [r.uuid for r in nvml_backend.read()] == ["GPU-a"]
    assert nvml.init_calls == 2


async def test_exporter_without_nvml_serves_503_readyz_and_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    nvml = FakeNvml([], init_error=NVML_ERROR_DRIVER_NOT_LOADED)
    app = create_app(Sampler(backend(nvml), NoAttribution(), interval=60), node="n1")
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        ready = await client.get("/readyz")
        assert ready.status == 503
        assert "NVML unavailable" in await ready.text()
        assert (await client.get("/healthz")).status == 200
        assert (await client.get("/metrics")).status == 200
    assert any("cannot read GPUs: NVML unavailable" in r.getMessage() for r in caplog.records)


async def test_exporter_serves_good_gpus_next_to_a_lost_one() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    lost = FakeGpu("GPU-b", failures={"nvmlDeviceGetMemoryInfo": NVML_ERROR_GPU_IS_LOST})
    nvml = FakeNvml([FakeGpu("GPU-a"), lost])
    app = create_app(Sampler(backend(nvml), NoAttribution(), interval=60), node="n1")
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        assert (await client.get("/readyz")).status == 200
        text = await (await client.get("/metrics")).text()
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    assert by_gpu(samples, "meltguard_gpu_up") == {"0": 1.0, "1": 0.0}
    assert by_gpu(samples, "meltguard_gpu_temperature_celsius") == {"0": 61.0}
    assert "namespace" not in samples[0].labels  # no attribution: no pod labels
