"""From metric series to the core's validated :class:`GpuSample` values.

A :class:`Schema` says which series carry which GPU quantity (the exporter's own names, or
NVIDIA dcgm-exporter's ``DCGM_FI_DEV_*`` names and labels). Series are collected per GPU
(by UUID) and checked before they become samples:

* a non-finite, negative or implausible value (400 C, utilization 7) or a duplicate series
  is dropped and counted by reason; the rest of the page still counts;
* a GPU left without one of its core quantities (utilization, temperature, memory) is
  reported ``up=False`` (so the core treats it as stale) instead of being guessed;
* unknown metrics are ignored (dcgm-exporter serves many fields meltguard does not use);
* only GPUs whose ``namespace``/``pod`` labels name one of the wanted pods become samples.

:class:`PageReader` reads successive pages of one endpoint fast: it remembers, for every
line head (``name{labels}``) it has seen, which GPU and quantity that line feeds. A page
like the previous one then costs one split, one dict lookup and one ``float`` per line;
a new head goes through the strict :func:`~.textformat.parse_line`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from meltguard.core.observation import GpuSample
from meltguard.telemetry.devices import throttle_reasons
from meltguard.telemetry.metrics import GPU_GAUGES, GPU_THROTTLED, GPU_UP
from meltguard.telemetry.textformat import LineError, parse_line

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
REQUIRED = ("utilization", "temperature_celsius", "memory_used_bytes", "memory_total_bytes")

# What a series contributes to its GPU.
VALUE, UP, REASON, REASON_MASK = "value", "up", "reason", "reason_mask"


@dataclass(frozen=True, slots=True)
class Schema:
    """How one kind of page names GPU quantities and identity labels."""

    source: str
    uuid_label: str
    node_label: str
    model_label: str
    #: metric name -> (quantity, factor to the core's unit)
    values: Mapping[str, tuple[str, float]]
    #: a 0/1 series per active reason, the reason in label ``reason``
    reason_metric: str | None = None
    #: series holding an NVML clocks-event bitmask
    reason_mask_metrics: frozenset[str] = frozenset()
    up_metric: str | None = None
    metric_names: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        names = set(self.values) | set(self.reason_mask_metrics)
        names.update(n for n in (self.reason_metric, self.up_metric) if n)
        object.__setattr__(self, "metric_names", frozenset(names))


EXPORTER_SCHEMA = Schema(
    source="exporter",
    uuid_label="uuid",
    node_label="node",
    model_label="model",
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


@dataclass(frozen=True, slots=True)
class GpuIdentity:
    """Who a GPU is and which pod holds it, from its series' labels."""

    uuid: str
    node: str
    model: str
    namespace: str | None
    pod: str | None


@dataclass(frozen=True, slots=True)
class Plan:
    """What one series (metric + label set) contributes: to which GPU, and how."""

    gpu: GpuIdentity
    kind: str
    quantity: str = ""
    scale: float = 1.0


class GpuSeries:
    """The series of one GPU collected during one read."""

    __slots__ = ("identity", "reasons", "rejected", "up", "values")

    def __init__(self, identity: GpuIdentity) -> None:
        self.identity = identity
        self.values: dict[str, float] = {}
        self.rejected: set[str] = set()
        self.reasons: set[str] = set()
        self.up: float | None = None


def plan_series(schema: Schema, name: str, labels: Mapping[str, str]) -> Plan | None:
    """The plan for a series, or None when it carries nothing the schema knows."""
    uuid = labels.get(schema.uuid_label)
    if not uuid or name not in schema.metric_names:
        return None
    identity = GpuIdentity(
        uuid=uuid,
        node=labels.get(schema.node_label, ""),
        model=labels.get(schema.model_label, ""),
        namespace=labels.get("namespace") or None,
        pod=labels.get("pod") or None,
    )
    spec = schema.values.get(name)
    if spec is not None:
        return Plan(identity, VALUE, spec[0], spec[1])
    if name == schema.up_metric:
        return Plan(identity, UP)
    if name == schema.reason_metric:
        return Plan(identity, REASON, labels.get("reason", ""))
    return Plan(identity, REASON_MASK)


def apply_series(
    gpus: dict[str, GpuSeries], plan: Plan, value: float, rejected: Counter[str]
) -> None:
    """Add one series value to its GPU; duplicates and malformed flags are counted."""
    gpu = gpus.get(plan.gpu.uuid)
    if gpu is None:
        gpu = gpus[plan.gpu.uuid] = GpuSeries(plan.gpu)
    kind = plan.kind
    if kind is VALUE:
        quantity = plan.quantity
        if quantity in gpu.values or quantity in gpu.rejected:
            gpu.values.pop(quantity, None)
            gpu.rejected.add(quantity)
            rejected["duplicate"] += 1
        else:
            gpu.values[quantity] = value * plan.scale
    elif value not in (0.0, 1.0) and kind is not REASON_MASK:
        rejected["out_of_range"] += 1
    elif kind is UP:
        gpu.up = value if gpu.up is None else min(gpu.up, value)
    elif kind is REASON:
        if value == 1.0 and plan.quantity:
            gpu.reasons.add(plan.quantity)
    elif value.is_integer() and 0 <= value < 2**64:
        gpu.reasons.update(throttle_reasons(int(value)))
    else:
        rejected["out_of_range"] += 1


@dataclass
class PageResult:
    """One page read: its GPUs' series, the count of good and bad lines, rejections by reason."""

    gpus: dict[str, GpuSeries]
    good_lines: int
    bad_lines: int
    rejected: Counter[str]

    @property
    def malformed(self) -> bool:
        """Not a metrics page at all: bad lines and no more good lines than bad ones."""
        return self.bad_lines > 0 and self.good_lines <= self.bad_lines


_UNSEEN = Plan(GpuIdentity("", "", "", None, None), "unseen")


class PageReader:
    """Reads successive pages of one endpoint, remembering each line head's plan."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self._plans: dict[str, Plan | None] = {}

    def read(self, text: str) -> PageResult:
        plans = self._plans
        seen: dict[str, Plan | None] = {}
        result = PageResult({}, 0, 0, Counter())
        gpus, rejected = result.gpus, result.rejected
        for line in text.split("\n"):
            head, _, value_text = line.rpartition(" ")
            plan = plans.get(head, _UNSEEN)
            if plan is _UNSEEN:
                self._first_sight(line, head, seen, result)
                continue
            seen[head] = plan
            if plan is None:
                continue
            if "_" in value_text:
                value = math.nan
            else:
                try:
                    value = float(value_text)
                except ValueError:
                    value = math.nan
            if math.isnan(value) and value_text != "NaN":
                result.bad_lines += 1
                rejected["bad_value"] += 1
                continue
            result.good_lines += 1
            apply_series(gpus, plan, value, rejected)
        self._plans = seen
        return result

    def _first_sight(
        self, line: str, head: str, seen: dict[str, Plan | None], result: PageResult
    ) -> None:
        parsed = parse_line(line)
        if parsed is None:
            seen[head] = None
            return
        if isinstance(parsed, LineError):
            result.bad_lines += 1
            result.rejected[parsed.reason] += 1
            return
        result.good_lines += 1
        plan = plan_series(self.schema, parsed.name, parsed.labels)
        if not parsed.timestamped:  # with a timestamp the head holds the value: not reusable
            seen[head] = plan
        if plan is not None:
            apply_series(result.gpus, plan, parsed.value, result.rejected)


def collect_series(
    schema: Schema, series: Iterable[tuple[str, Mapping[str, str], float]]
) -> tuple[dict[str, GpuSeries], Counter[str]]:
    """Collect already-parsed series (the Prometheus API's answers) per GPU."""
    gpus: dict[str, GpuSeries] = {}
    rejected: Counter[str] = Counter()
    for name, labels, value in series:
        plan = plan_series(schema, name, labels)
        if plan is not None:
            apply_series(gpus, plan, value, rejected)
    return gpus, rejected


def build_sample(gpu: GpuSeries, sampled_at: float, rejected: Counter[str]) -> GpuSample:
    """Check a GPU's collected values and turn them into the core's sample."""
    values = _plausible_values(gpu, rejected)
    up = gpu.up != 0.0 and all(quantity in values for quantity in REQUIRED)
    if gpu.up != 0.0 and not up:
        rejected["incomplete"] += 1
    identity = gpu.identity
    return GpuSample(
        uuid=identity.uuid,
        utilization=values.get("utilization", 0.0) if up else 0.0,
        temperature_celsius=values.get("temperature_celsius", 0.0) if up else 0.0,
        memory_used_bytes=values.get("memory_used_bytes", 0.0) if up else 0.0,
        memory_total_bytes=values.get("memory_total_bytes", 0.0) if up else 0.0,
        sampled_at=sampled_at,
        node=identity.node,
        namespace=identity.namespace,
        pod=identity.pod,
        slowdown_temperature_celsius=values.get("slowdown_temperature_celsius"),
        power_watts=values.get("power_watts"),
        power_limit_watts=values.get("power_limit_watts"),
        throttle_reasons=frozenset(gpu.reasons),
        model=identity.model,
        up=up,
    )


def _plausible_values(gpu: GpuSeries, rejected: Counter[str]) -> dict[str, float]:
    values = {}
    for quantity, value in gpu.values.items():
        low, high = PLAUSIBLE[quantity]
        if low <= value <= high:  # False for NaN too
            values[quantity] = value
        else:
            rejected["out_of_range" if math.isfinite(value) else "not_finite"] += 1
    derivable = "memory_free_bytes" in values and "memory_used_bytes" in values
    if derivable and "memory_total_bytes" not in values:
        values["memory_total_bytes"] = (
            values["memory_used_bytes"]
            + values["memory_free_bytes"]
            + values.get("memory_reserved_bytes", 0.0)
        )
    if values.get("memory_used_bytes", 0.0) > values.get("memory_total_bytes", math.inf):
        del values["memory_used_bytes"]
        rejected["out_of_range"] += 1
    return values


def wanted_samples(
    gpus: Iterable[GpuSeries],
    pods: Collection[tuple[str, str]],
    sampled_at: float,
    rejected: Counter[str],
) -> list[GpuSample]:
    """Samples of the GPUs held by one of ``pods`` ((namespace, pod) pairs)."""
    return [
        build_sample(gpu, sampled_at, rejected)
        for gpu in gpus
        if (gpu.identity.namespace, gpu.identity.pod) in pods
    ]
