"""Which series carry which GPU quantity, for each kind of page the ingest reads.

A :class:`Schema` names a page's GPU quantities and identity labels: the exporter's own
names (:data:`EXPORTER_SCHEMA`, from :mod:`meltguard.wire`), or NVIDIA dcgm-exporter's
``DCGM_FI_DEV_*`` names and labels (:data:`DCGM_SCHEMA`). Every schema reads into the same
table columns (:data:`COLUMNS`), in the core's units, checked against :data:`PLAUSIBLE`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from meltguard.wire import (
    GPU_GAUGES,
    GPU_THROTTLED,
    GPU_UP,
    MODEL_LABEL,
    NAMESPACE_LABEL,
    NODE_LABEL,
    POD_LABEL,
    REASON_LABEL,
    UUID_LABEL,
)

MIB = 1024.0 * 1024.0
_MAX_BYTES = float(2**50)
_MAX_WATTS = 5000.0
_MAX_CELSIUS = 150.0

#: quantity -> inclusive plausible range, in the core's units.
PLAUSIBLE: dict[str, tuple[float, float]] = {
    "utilization": (0.0, 1.0),
    "temperature_celsius": (0.0, _MAX_CELSIUS),
    "slowdown_temperature_celsius": (1.0, _MAX_CELSIUS),
    "memory_used_bytes": (0.0, _MAX_BYTES),
    "memory_total_bytes": (1.0, _MAX_BYTES),
    "memory_free_bytes": (0.0, _MAX_BYTES),
    "memory_reserved_bytes": (0.0, _MAX_BYTES),
    "power_watts": (0.0, _MAX_WATTS),
    "power_limit_watts": (1.0, _MAX_WATTS),
}

#: Table columns, the same for every schema (a column a schema does not serve stays empty):
#: the quantities of :data:`PLAUSIBLE`, then ``up`` (1 or 0).
COLUMNS: tuple[str, ...] = (*PLAUSIBLE, "up")
WIDTH = len(COLUMNS)
UP_COLUMN = COLUMNS.index("up")
#: column -> inclusive plausible range (``up`` is checked to be 0 or 1 on its own)
BOUNDS: tuple[tuple[float, float], ...] = tuple(
    PLAUSIBLE.get(column, (0.0, 1.0)) for column in COLUMNS
)
#: Quantities without which a GPU's sample cannot be judged (it is reported down).
CORE_QUANTITIES = ("utilization", "temperature_celsius", "memory_used_bytes", "memory_total_bytes")


class GpuIdentity(NamedTuple):
    """Who a GPU is and which pod holds it, from its series' labels (a NamedTuple: an
    ingest takes the fields of every GPU apart column-wise)."""

    uuid: str
    node: str
    model: str
    namespace: str | None
    pod: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Schema:
    """How one kind of page names GPU quantities and identity labels."""

    source: str
    uuid_label: str
    node_label: str
    model_label: str
    namespace_label: str = NAMESPACE_LABEL
    pod_label: str = POD_LABEL
    #: metric name -> (quantity, factor to the core's unit)
    values: Mapping[str, tuple[str, float]]
    #: a 0/1 series per active reason, the reason's exporter label in ``reason_label``
    reason_metric: str | None = None
    reason_label: str = REASON_LABEL
    #: series holding an NVML clocks-event bitmask
    reason_mask_metrics: frozenset[str] = frozenset()
    up_metric: str | None = None
    metric_names: frozenset[str] = field(init=False)
    #: metric name -> table column, for value and up series
    columns: Mapping[str, int] = field(init=False)
    #: table column -> factor to the core's unit
    scales: tuple[float, ...] = field(init=False)

    def __post_init__(self) -> None:
        columns = {name: COLUMNS.index(quantity) for name, (quantity, _) in self.values.items()}
        if self.up_metric:
            columns[self.up_metric] = UP_COLUMN
        scales = [1.0] * WIDTH
        for quantity, scale in self.values.values():
            scales[COLUMNS.index(quantity)] = scale
        names = set(columns) | set(self.reason_mask_metrics)
        if self.reason_metric:
            names.add(self.reason_metric)
        object.__setattr__(self, "metric_names", frozenset(names))
        object.__setattr__(self, "columns", columns)
        object.__setattr__(self, "scales", tuple(scales))


EXPORTER_SCHEMA = Schema(
    source="exporter",
    uuid_label=UUID_LABEL,
    node_label=NODE_LABEL,
    model_label=MODEL_LABEL,
    values={gauge.name: (gauge.attribute, 1.0) for gauge in GPU_GAUGES},
    reason_metric=GPU_THROTTLED,
    up_metric=GPU_UP,
)
DCGM_SCHEMA = Schema(
    source="dcgm",
    uuid_label="UUID",
    node_label="Hostname",
    model_label="modelName",
    values={
        "DCGM_FI_DEV_GPU_UTIL": ("utilization", 0.01),
        "DCGM_FI_DEV_GPU_TEMP": ("temperature_celsius", 1.0),
        "DCGM_FI_DEV_SLOWDOWN_TEMP": ("slowdown_temperature_celsius", 1.0),
        "DCGM_FI_DEV_FB_USED": ("memory_used_bytes", MIB),
        "DCGM_FI_DEV_FB_FREE": ("memory_free_bytes", MIB),
        "DCGM_FI_DEV_FB_RESERVED": ("memory_reserved_bytes", MIB),
        "DCGM_FI_DEV_POWER_USAGE": ("power_watts", 1.0),
        "DCGM_FI_DEV_POWER_MGMT_LIMIT": ("power_limit_watts", 1.0),
    },
    reason_mask_metrics=frozenset(
        {"DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", "DCGM_FI_DEV_CLOCKS_EVENT_REASONS"}
    ),
)
