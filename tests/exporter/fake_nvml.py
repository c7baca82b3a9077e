"""A pynvml-shaped stand-in, used ONLY to drive the NVML backend's error paths without a GPU.

It mirrors the slice of pynvml's API the backend calls (same names, same NVMLError shape
with ``.value``); each GPU's answers and failures are set per test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

NVML_SUCCESS = 0
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_GPU_IS_LOST = 15
NVML_TEMPERATURE_GPU = 0
NVML_TEMPERATURE_THRESHOLD_SLOWDOWN = 1
NVML_FI_DEV_TEMPERATURE_SLOWDOWN_TLIMIT = 194


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


@dataclass
class FakeGpu:
    """One fake GPU's answers; ``failures`` maps a pynvml function name to an error code."""

    uuid: str
    name: str = "NVIDIA A100-SXM4-80GB"
    utilization: int = 42
    memory_used: int = 10 * 2**30
    memory_total: int = 80 * 2**30
    temperature: int = 61
    slowdown_field: int | None = 88
    slowdown_threshold: int | None = 87
    power_mw: int = 250_000
    limit_mw: int = 400_000
    event_reasons: int = 0
    failures: dict[str, int] = field(default_factory=dict)


class FakeNvml:
    """The module object handed to ``NvmlBackend(nvml=...)``."""

    NVMLError = NVMLError
    NVML_SUCCESS = NVML_SUCCESS
    NVML_ERROR_NOT_SUPPORTED = NVML_ERROR_NOT_SUPPORTED
    NVML_TEMPERATURE_GPU = NVML_TEMPERATURE_GPU
    NVML_TEMPERATURE_THRESHOLD_SLOWDOWN = NVML_TEMPERATURE_THRESHOLD_SLOWDOWN
    NVML_FI_DEV_TEMPERATURE_SLOWDOWN_TLIMIT = NVML_FI_DEV_TEMPERATURE_SLOWDOWN_TLIMIT

    def __init__(self, gpus: list[FakeGpu], init_error: int | None = None) -> None:
        self.gpus = gpus
        self.init_error = init_error
        self.init_calls = 0

    def _gpu(self, handle: int, call: str) -> FakeGpu:
        gpu = self.gpus[handle]
        if call in gpu.failures:
            raise NVMLError(gpu.failures[call])
        return gpu

    def nvmlInit(self) -> None:
        self.init_calls += 1
        if self.init_error is not None:
            raise NVMLError(self.init_error)

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        self._gpu(index, "nvmlDeviceGetHandleByIndex")
        return index

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return self._gpu(handle, "nvmlDeviceGetUUID").uuid

    def nvmlDeviceGetName(self, handle: int) -> str:
        return self._gpu(handle, "nvmlDeviceGetName").name

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        return SimpleNamespace(
            gpu=self._gpu(handle, "nvmlDeviceGetUtilizationRates").utilization, memory=0
        )

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        gpu = self._gpu(handle, "nvmlDeviceGetMemoryInfo")
        return SimpleNamespace(
            used=gpu.memory_used, total=gpu.memory_total, free=gpu.memory_total - gpu.memory_used
        )

    def nvmlDeviceGetTemperatureV(self, handle: int, sensor: int) -> int:
        assert sensor == NVML_TEMPERATURE_GPU
        return self._gpu(handle, "nvmlDeviceGetTemperatureV").temperature

    def nvmlDeviceGetFieldValues(self, handle: int, field_ids: list[int]) -> list[Any]:
        gpu = self._gpu(handle, "nvmlDeviceGetFieldValues")
        assert field_ids == [NVML_FI_DEV_TEMPERATURE_SLOWDOWN_TLIMIT]
        if gpu.slowdown_field is None:
            return [SimpleNamespace(nvmlReturn=NVML_ERROR_NOT_SUPPORTED, valueType=5, value=None)]
        value = SimpleNamespace(siVal=gpu.slowdown_field)
        return [SimpleNamespace(nvmlReturn=NVML_SUCCESS, valueType=5, value=value)]

    def nvmlDeviceGetTemperatureThreshold(self, handle: int, threshold: int) -> int:
        gpu = self._gpu(handle, "nvmlDeviceGetTemperatureThreshold")
        if gpu.slowdown_threshold is None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return gpu.slowdown_threshold

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        return self._gpu(handle, "nvmlDeviceGetPowerUsage").power_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: int) -> int:
        return self._gpu(handle, "nvmlDeviceGetEnforcedPowerLimit").limit_mw

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: int) -> int:
        return self._gpu(handle, "nvmlDeviceGetCurrentClocksEventReasons").event_reasons
