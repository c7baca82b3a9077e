"""What the exporter knows about one GPU, independent of where the reading came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceReading:
    """One read of one GPU by a backend.

    A field is None when the GPU does not report it (NVML "not supported"). ``up`` is False
    when the read failed as a whole; the other measurements are then None.
    ``utilization`` is 0..1; temperatures Celsius; memory bytes; power watts;
    ``throttle_reasons`` holds the reasons' exporter labels (hw_thermal, ...: the ``label`` of
    :data:`meltguard.api.vocabulary.THROTTLE_REASONS`).
    """

    index: int
    uuid: str
    model: str
    up: bool = True
    utilization: float | None = None
    memory_used_bytes: float | None = None
    memory_total_bytes: float | None = None
    temperature_celsius: float | None = None
    slowdown_temperature_celsius: float | None = None
    power_watts: float | None = None
    power_limit_watts: float | None = None
    throttle_reasons: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True, slots=True)
class PodRef:
    """The pod (and, where known, container) that holds a GPU."""

    namespace: str
    pod: str
    container: str | None = None


class GpuBackend(Protocol):
    """A source of device readings. ``read`` may block (NVML), so callers run it off the loop."""

    name: str

    def read(self) -> list[DeviceReading]:
        """Read every GPU; raise :class:`BackendUnavailable` when no GPU can be read at all."""
        ...


class BackendUnavailable(RuntimeError):
    """The backend cannot read any GPU (NVML library missing, driver not loaded...)."""
