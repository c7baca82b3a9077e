"""Simulated GPUs for ``meltguard exporter --simulate N`` and fire drills (``POST /simulate``).

The GPUs look like H100 80GB boards idling: plausible model name, memory, slowdown
threshold and power limit. A :class:`FireDrill` sets utilization, temperature, memory use,
throttle reasons or up/down on some of them; power draw follows utilization.
"""

from __future__ import annotations

import math
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace

from meltguard.api.vocabulary import THROTTLE_NAME_OF_LABEL
from meltguard.exporter.devices import DeviceReading

MODEL = "NVIDIA H100 80GB HBM3"
MEMORY_TOTAL_BYTES = 81559 * 1024 * 1024
IDLE_MEMORY_USED_BYTES = 512 * 1024 * 1024
IDLE_TEMPERATURE_CELSIUS = 34.0
SLOWDOWN_TEMPERATURE_CELSIUS = 87.0
IDLE_POWER_WATTS = 70.0
POWER_LIMIT_WATTS = 700.0
#: Highest temperature a drill may set: above any real GPU's shutdown point, still finite.
MAX_DRILL_TEMPERATURE_CELSIUS = 130.0

_UUID_NAMESPACE = uuid.UUID("5f0c1e36-6f3a-4d4e-9a51-6d656c746775")


class DrillInvalid(ValueError):
    """A fire-drill body is wrong; ``field`` names the offending key."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True, kw_only=True)
class FireDrill:
    """Which simulated GPUs to change (None = all) and what to set; None fields stay as they are.

    ``reset`` first returns the GPUs to idle, then the other fields apply.
    """

    gpus: tuple[int, ...] | None
    reset: bool = False
    utilization: float | None = None
    temperature_celsius: float | None = None
    memory_used_ratio: float | None = None
    throttle_reasons: frozenset[str] | None = None
    up: bool | None = None


def _number(body: Mapping[str, object], key: str, *, low: float, high: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DrillInvalid(key, f"must be a number, got {value!r}")
    if not low <= value <= high:
        raise DrillInvalid(key, f"must be between {low:g} and {high:g}, got {value!r}")
    return float(value)


def _gpu_indexes(value: object, gpu_count: int) -> tuple[int, ...] | None:
    if value == "all":
        return None
    if not isinstance(value, list) or not value:
        raise DrillInvalid(
            "gpus", f'must be "all" or a non-empty list of GPU indexes, got {value!r}'
        )
    for index in value:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < gpu_count:
            raise DrillInvalid("gpus", f"{index!r} is not a GPU index 0..{gpu_count - 1}")
    return tuple(sorted(set(value)))


def _reasons(value: object) -> frozenset[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise DrillInvalid("throttleReasons", f"must be a list of reason names, got {value!r}")
    unknown = sorted(set(value) - THROTTLE_NAME_OF_LABEL.keys())
    if unknown:
        known = ", ".join(THROTTLE_NAME_OF_LABEL)
        raise DrillInvalid("throttleReasons", f"unknown reason {unknown[0]!r} (known: {known})")
    return frozenset(value)


DRILL_FIELDS = (
    "gpus",
    "reset",
    "utilization",
    "temperatureCelsius",
    "memoryUsedRatio",
    "throttleReasons",
    "up",
)


def _flag(body: Mapping[str, object], key: str) -> bool | None:
    value = body.get(key)
    if value is not None and not isinstance(value, bool):
        raise DrillInvalid(key, f"must be true or false, got {value!r}")
    return value


def parse_drill(body: object, gpu_count: int) -> FireDrill:
    """Validate a ``POST /simulate`` JSON body; raise :class:`DrillInvalid` naming the field."""
    if not isinstance(body, dict):
        raise DrillInvalid("body", f"must be a JSON object, got {type(body).__name__}")
    for key in body:
        if key not in DRILL_FIELDS:
            raise DrillInvalid(key, f"unknown field (known: {', '.join(DRILL_FIELDS)})")
    if "gpus" not in body:
        raise DrillInvalid("gpus", 'required: "all" or a list of GPU indexes')
    return FireDrill(
        gpus=_gpu_indexes(body["gpus"], gpu_count),
        reset=bool(_flag(body, "reset")),
        utilization=_number(body, "utilization", low=0.0, high=1.0),
        temperature_celsius=_number(
            body, "temperatureCelsius", low=0.0, high=MAX_DRILL_TEMPERATURE_CELSIUS
        ),
        memory_used_ratio=_number(body, "memoryUsedRatio", low=0.0, high=1.0),
        throttle_reasons=_reasons(body.get("throttleReasons")),
        up=_flag(body, "up"),
    )


def simulated_uuid(node: str, index: int) -> str:
    """A stable, node-unique GPU UUID in NVML's ``GPU-xxxxxxxx-...`` shape."""
    return f"GPU-{uuid.uuid5(_UUID_NAMESPACE, f'{node}/{index}')}"


def idle_gpu(node: str, index: int) -> DeviceReading:
    """A simulated GPU at rest."""
    return DeviceReading(
        index=index,
        uuid=simulated_uuid(node, index),
        model=MODEL,
        utilization=0.0,
        memory_used_bytes=float(IDLE_MEMORY_USED_BYTES),
        memory_total_bytes=float(MEMORY_TOTAL_BYTES),
        temperature_celsius=IDLE_TEMPERATURE_CELSIUS,
        slowdown_temperature_celsius=SLOWDOWN_TEMPERATURE_CELSIUS,
        power_watts=IDLE_POWER_WATTS,
        power_limit_watts=POWER_LIMIT_WATTS,
    )


def idle_gpu_like(gpu: DeviceReading) -> DeviceReading:
    """The same GPU (index, UUID) back at rest."""
    return replace(idle_gpu("", gpu.index), uuid=gpu.uuid)


def apply_drill(gpu: DeviceReading, drill: FireDrill) -> DeviceReading:
    """The GPU after the drill: only the fields the drill sets change; power follows load."""
    changed = idle_gpu_like(gpu) if drill.reset else gpu
    if drill.utilization is not None:
        power = IDLE_POWER_WATTS + drill.utilization * (POWER_LIMIT_WATTS - IDLE_POWER_WATTS)
        changed = replace(changed, utilization=drill.utilization, power_watts=round(power, 1))
    if drill.temperature_celsius is not None:
        changed = replace(changed, temperature_celsius=drill.temperature_celsius)
    if drill.memory_used_ratio is not None:
        used = round(drill.memory_used_ratio * MEMORY_TOTAL_BYTES)
        changed = replace(changed, memory_used_bytes=float(used))
    if drill.throttle_reasons is not None:
        changed = replace(changed, throttle_reasons=drill.throttle_reasons)
    if drill.up is not None:
        changed = replace(changed, up=drill.up)
    return changed


class SimulatedBackend:
    """N simulated GPUs; thread-safe, since the sampler thread reads while the app applies drills.

    A GPU set ``up: false`` by a drill is served like an NVML read failure (only
    ``meltguard_gpu_up 0``) while its simulated state is kept for when it comes back.
    """

    name = "simulated"

    def __init__(self, count: int, node: str) -> None:
        if count < 1:
            raise ValueError(f"--simulate needs at least 1 GPU, got {count}")
        self._gpus = [idle_gpu(node, index) for index in range(count)]
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        return len(self._gpus)

    def apply(self, drill: FireDrill) -> list[DeviceReading]:
        """Apply a fire drill; return the changed GPUs' new state."""
        indexes = range(len(self._gpus)) if drill.gpus is None else drill.gpus
        with self._lock:
            for index in indexes:
                self._gpus[index] = apply_drill(self._gpus[index], drill)
            return [self._gpus[index] for index in indexes]

    def read(self) -> list[DeviceReading]:
        with self._lock:
            gpus = list(self._gpus)
        return [gpu if gpu.up else _failed_read(gpu) for gpu in gpus]


def _failed_read(gpu: DeviceReading) -> DeviceReading:
    return DeviceReading(index=gpu.index, uuid=gpu.uuid, model=gpu.model, up=False)
