"""The NVML backend: reads every GPU of the node through ``pynvml`` (nvidia-ml-py).

Calls are the non-deprecated ones: ``nvmlDeviceGetTemperatureV``,
``nvmlDeviceGetCurrentClocksEventReasons``, and for the slowdown threshold
``nvmlDeviceGetTemperatureThreshold``, falling back to the
``NVML_FI_DEV_TEMPERATURE_SLOWDOWN_TLIMIT`` field value where that call is not supported
(NVIDIA is moving Ada and later GPUs to field values for temperature limits).

Error policy: NVML missing or failing to initialise raises :class:`BackendUnavailable` (the
sampler logs it and ``/readyz`` answers 503; initialisation is retried on the next sample).
One GPU's error never breaks the others: a failing core read (utilization, memory,
temperature) or any error other than "not supported" marks that GPU ``up=False``;
"not supported" on an optional reading (slowdown threshold, power, throttle reasons)
only leaves that one value out. All calls block and run in the sampler thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar

from meltguard.api.vocabulary import throttle_labels
from meltguard.exporter.devices import BackendUnavailable, DeviceReading

log = logging.getLogger(__name__)
T = TypeVar("T")

#: nvmlValueType_t -> the member of nvmlValue_t holding the value.
_VALUE_MEMBERS = {
    0: "dVal",
    1: "uiVal",
    2: "ulVal",
    3: "ullVal",
    4: "sllVal",
    5: "siVal",
    6: "usVal",
}


class NvmlBackend:
    """Reads all GPUs through NVML. ``nvml`` is the pynvml module (replaceable in tests)."""

    name = "nvml"

    def __init__(self, nvml: ModuleType | None = None) -> None:
        if nvml is None:
            import pynvml

            nvml = pynvml
        self._nvml: Any = nvml
        self._handles: list[Any] | None = None

    def _init(self) -> list[Any]:
        nvml = self._nvml
        try:
            nvml.nvmlInit()
            count = nvml.nvmlDeviceGetCount()
        except nvml.NVMLError as error:
            raise BackendUnavailable(
                f"NVML unavailable ({error}): is the NVIDIA driver loaded and are the GPU "
                "devices and libnvidia-ml.so.1 visible to this container?"
            ) from error
        log.info("NVML initialised, driver sees %d GPUs", count)
        return [self._handle(index) for index in range(count)]

    def _handle(self, index: int) -> Any:
        try:
            return self._nvml.nvmlDeviceGetHandleByIndex(index)
        except self._nvml.NVMLError as error:
            log.warning("GPU %d: no NVML handle (%s)", index, error)
            return None

    def read(self) -> list[DeviceReading]:
        if self._handles is None:
            self._handles = self._init()
        readings = []
        for index, handle in enumerate(self._handles):
            if handle is None:
                handle = self._handles[index] = self._handle(index)
            readings.append(self._read_gpu(index, handle))
        return readings

    def _read_gpu(self, index: int, handle: Any) -> DeviceReading:
        nvml = self._nvml
        if handle is None:
            return DeviceReading(index=index, uuid="", model="", up=False)
        try:
            uuid, model = nvml.nvmlDeviceGetUUID(handle), nvml.nvmlDeviceGetName(handle)
        except nvml.NVMLError as error:
            log.warning("GPU %d: cannot read its identity (%s)", index, error)
            return DeviceReading(index=index, uuid="", model="", up=False)
        try:
            return self._measure(handle, index=index, uuid=uuid, model=model)
        except nvml.NVMLError as error:
            log.warning("GPU %d (%s): read failed (%s), serving it as down", index, uuid, error)
            return DeviceReading(index=index, uuid=uuid, model=model, up=False)

    def _measure(self, handle: Any, *, index: int, uuid: str, model: str) -> DeviceReading:
        nvml = self._nvml
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        power_mw = self._optional(nvml.nvmlDeviceGetPowerUsage, handle)
        limit_mw = self._optional(nvml.nvmlDeviceGetEnforcedPowerLimit, handle)
        mask = self._optional(nvml.nvmlDeviceGetCurrentClocksEventReasons, handle)
        return DeviceReading(
            index=index,
            uuid=uuid,
            model=model,
            utilization=nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0,
            memory_used_bytes=float(memory.used),
            memory_total_bytes=float(memory.total),
            temperature_celsius=float(
                nvml.nvmlDeviceGetTemperatureV(handle, nvml.NVML_TEMPERATURE_GPU)
            ),
            slowdown_temperature_celsius=self._slowdown_temperature(handle),
            power_watts=None if power_mw is None else power_mw / 1000.0,
            power_limit_watts=None if limit_mw is None else limit_mw / 1000.0,
            throttle_reasons=frozenset() if mask is None else throttle_labels(mask),
        )

    def _optional(self, call: Callable[..., T], *args: Any) -> T | None:
        """The call's answer, or None where NVML says the GPU does not support it."""
        try:
            return call(*args)
        except self._nvml.NVMLError as error:
            if error.value == self._nvml.NVML_ERROR_NOT_SUPPORTED:
                return None
            raise

    def _slowdown_temperature(self, handle: Any) -> float | None:
        nvml = self._nvml
        threshold = self._optional(
            nvml.nvmlDeviceGetTemperatureThreshold, handle, nvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN
        )
        if threshold is not None:
            return float(threshold)
        fields = self._optional(
            nvml.nvmlDeviceGetFieldValues, handle, [nvml.NVML_FI_DEV_TEMPERATURE_SLOWDOWN_TLIMIT]
        )
        if fields is None or fields[0].nvmlReturn != nvml.NVML_SUCCESS:
            return None
        field = fields[0]
        value = getattr(field.value, _VALUE_MEMBERS.get(field.valueType, "siVal"))
        return float(value) if value > 0 else None
