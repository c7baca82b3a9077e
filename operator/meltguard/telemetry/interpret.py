"""From metric series to the core's validated :class:`GpuSample` values.

A :class:`Schema` says which series carry which GPU quantity (the exporter's own names, or
NVIDIA dcgm-exporter's ``DCGM_FI_DEV_*`` names and labels). Series are collected per GPU
(its UUID with its node, model and pod labels) and checked before they become samples:

* a non-finite, negative or implausible value (400 C, utilization 7) or a duplicate series
  is dropped and counted by reason; the rest of the page still counts;
* a GPU left without one of its core quantities (utilization, temperature, memory) is
  reported ``up=False`` (so the core treats it as stale) instead of being guessed;
* unknown metrics are ignored (dcgm-exporter serves many fields meltguard does not use);
* only GPUs whose ``namespace``/``pod`` labels name one of the wanted pods become samples.

Collected series form a table (:class:`Collected`): one row per GPU, one column per
quantity of :data:`COLUMNS`; all endpoints' tables are merged so that the checks run once
per column over the whole fleet, and samples are built per row.

:class:`PageReader` reads successive pages of one endpoint fast. It parses each line it
has not met before through the strict :func:`~.textformat.parse_line`, remembering for
its head (``name{labels}``) which cell of the table the line fills. Series are stable
between scrapes (only values change), so a read costs one split, one dict lookup and one
``float`` per line.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import cast

from meltguard.core.observation import GpuSample
from meltguard.telemetry.devices import throttle_reasons
from meltguard.telemetry.metrics import GPU_GAUGES, GPU_THROTTLED, GPU_UP
from meltguard.telemetry.textformat import LineError, parse_line, parse_value

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

#: Table columns, the same for every schema (a column a schema does not serve stays empty).
COLUMNS = (
    "utilization",
    "temperature_celsius",
    "memory_used_bytes",
    "memory_total_bytes",
    "memory_free_bytes",
    "memory_reserved_bytes",
    "slowdown_temperature_celsius",
    "power_watts",
    "power_limit_watts",
    "up",
)
WIDTH = len(COLUMNS)
_UP = COLUMNS.index("up")
_NO_REASONS: frozenset[str] = frozenset()
_BOUNDS = tuple(PLAUSIBLE.get(column, (0.0, 1.0)) for column in COLUMNS)


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
    #: metric name -> table column, for value and up series
    columns: Mapping[str, int] = field(init=False)
    #: table column -> factor to the core's unit
    scales: tuple[float, ...] = field(init=False)

    def __post_init__(self) -> None:
        columns = {name: COLUMNS.index(quantity) for name, (quantity, _) in self.values.items()}
        if self.up_metric:
            columns[self.up_metric] = _UP
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

    @property
    def pod_key(self) -> tuple[str | None, str | None]:
        """(namespace, pod), as the wanted pods are given."""
        return (self.namespace, self.pod)


#: Where one series goes: a table cell (row * WIDTH + column) for values and up, or
#: (row, reason) for a 0/1 reason series, or (row, None) for a reason bitmask.
Cell = int | tuple[int, str | None]


class Collected:
    """The series of one read as a table: ``values[row * WIDTH + column]``, None where unknown.

    ``rejected`` counts dropped lines and values by reason; ``good_lines`` / ``bad_lines``
    tell a metrics page with a few broken lines from something that is no metrics page.
    """

    def __init__(self, schema: Schema, identities: list[GpuIdentity]) -> None:
        self.schema = schema
        self.identities = identities
        self.values: list[float | None] = [None] * (len(identities) * WIDTH)
        self.reasons: dict[int, set[str]] = {}
        self.duplicates: set[int] = set()
        #: rows that had a line this read whose value was refused (so the GPU is present)
        self.touched: set[int] = set()
        self.rejected: Counter[str] = Counter()
        self.good_lines = 0
        self.bad_lines = 0
        self._present: list[int] | None = None
        self._checked = False

    @property
    def malformed(self) -> bool:
        """Not a metrics page at all: bad lines and no more good lines than bad ones."""
        return self.bad_lines > 0 and self.good_lines <= self.bad_lines

    def add(self, cell: Cell, value: float) -> None:
        """Put one series value in its cell; a second value for a cell makes it unknown."""
        if type(cell) is int:
            if self.values[cell] is None and cell not in self.duplicates:
                self.values[cell] = value
            else:
                self.values[cell] = None
                self.duplicates.add(cell)
                self.touched.add(cell // WIDTH)
                self.rejected["duplicate"] += 1
            return
        row, reason = cell  # type: ignore[misc]
        if reason is not None and value in (0.0, 1.0):
            if value == 1.0:
                self.reasons.setdefault(row, set()).add(reason)
        elif reason is None and value.is_integer() and 0 <= value < 2**64:
            self.reasons.setdefault(row, set()).update(throttle_reasons(int(value)))
        else:
            self.touched.add(row)
            self.rejected["out_of_range"] += 1

    def refuse(self, cell: Cell, reason: str) -> None:
        """Count a line whose value could not be read; its GPU still counts as present."""
        self.bad_lines += 1
        self.rejected[reason] += 1
        self.touched.add(cell // WIDTH if type(cell) is int else cell[0])  # type: ignore[index]

    def served(self) -> dict[str, tuple[str | None, str | None]]:
        """GPU UUID -> (namespace, pod) for every GPU on the page this read."""
        identities = self.identities
        return {identities[row].uuid: identities[row].pod_key for row in self.present_rows()}

    @classmethod
    def merge(cls, schema: Schema, parts: Iterable[Collected]) -> Collected:
        """One table of several reads (e.g. every endpoint's page), so checks run once."""
        merged = cls(schema, [])
        present: list[int] = []
        for part in parts:
            offset = len(merged.identities)
            present.extend(row + offset for row in part.present_rows())
            merged.identities.extend(part.identities)
            merged.values.extend(part.values)
            merged.reasons.update({row + offset: r for row, r in part.reasons.items()})
            merged.touched.update(row + offset for row in part.touched)
            merged.rejected.update(part.rejected)
            merged.good_lines += part.good_lines
            merged.bad_lines += part.bad_lines
        merged._present = present
        return merged

    def samples(self, pods: Collection[tuple[str, str]], sampled_at: float) -> list[GpuSample]:
        """Checked samples of the GPUs held by one of ``pods`` ((namespace, pod) pairs).

        A GPU is in the read when any of its series was on the page, refused ones included;
        a row with no series at all is a GPU that left the page.
        """
        present = self.present_rows()  # before the checks turn refused values into None
        if not self._checked:
            self._checked = True
            self._scale_and_check()
        values, reasons, identities = self.values, self.reasons, self.identities
        samples = []
        for row in present:
            gpu = identities[row]
            if gpu.pod_key in pods:
                cells = values[row * WIDTH : row * WIDTH + WIDTH]
                reasons_now = reasons.get(row, ())
                samples.append(_sample(gpu, cells, reasons_now, sampled_at, self.rejected))
        return samples

    def present_rows(self) -> list[int]:
        """Rows of the GPUs that had any series in this read (rows of a reader's earlier
        pages stay in its layout, empty, once their GPU is gone)."""
        if self._present is None:
            values, seen = self.values, self.touched | self.reasons.keys()
            self._present = [
                row
                for row in range(len(self.identities))
                if row in seen or values[row * WIDTH : row * WIDTH + WIDTH].count(None) != WIDTH
            ]
        return self._present

    def _scale_and_check(self) -> None:
        """Scale every column to the core's units and drop implausible values, column-wise."""
        values = self.values
        for column, scale in enumerate(self.schema.scales):
            cells = values[column::WIDTH]
            if scale != 1.0:
                cells = [None if v is None else v * scale for v in cells]
                values[column::WIDTH] = cells
            low, high = _BOUNDS[column]
            if column == _UP:
                if set(cells) <= {None, 0.0, 1.0}:
                    continue
            elif _all_plausible(cells, low, high):
                continue
            for cell in range(column, len(values), WIDTH):
                value = values[cell]
                if value is None:
                    continue
                if low <= value <= high and (column != _UP or value in (0.0, 1.0)):
                    continue
                values[cell] = None
                self.rejected["out_of_range" if math.isfinite(value) else "not_finite"] += 1


def _all_plausible(cells: list[float | None], low: float, high: float) -> bool:
    """Whether every known value lies in [low, high], at C speed (a NaN makes the sum NaN)."""
    known = cast(list[float], [v for v in cells if v is not None] if None in cells else cells)
    if not known:
        return True
    return math.isfinite(sum(known)) and low <= min(known) and max(known) <= high


def _sample(
    gpu: GpuIdentity,
    cells: list[float | None],
    reasons: Collection[str],
    sampled_at: float,
    rejected: Counter[str],
) -> GpuSample:
    utilization, temperature, used, total, free, reserved, slowdown, power, limit, up = cells
    if total is None and used is not None and free is not None:
        total = used + free + (reserved or 0.0)
    if used is not None and total is not None and used > total:
        used = None
        rejected["out_of_range"] += 1
    complete = utilization is not None and temperature is not None
    complete = complete and used is not None and total is not None
    if up != 0.0 and not complete:
        rejected["incomplete"] += 1
    ok = up != 0.0 and complete
    return GpuSample(
        uuid=gpu.uuid,
        utilization=utilization if ok else 0.0,  # type: ignore[arg-type]
        temperature_celsius=temperature if ok else 0.0,  # type: ignore[arg-type]
        memory_used_bytes=used if ok else 0.0,  # type: ignore[arg-type]
        memory_total_bytes=total if ok else 0.0,  # type: ignore[arg-type]
        sampled_at=sampled_at,
        node=gpu.node,
        namespace=gpu.namespace,
        pod=gpu.pod,
        slowdown_temperature_celsius=slowdown,
        power_watts=power,
        power_limit_watts=limit,
        throttle_reasons=frozenset(reasons) if reasons else _NO_REASONS,
        model=gpu.model,
        up=ok,
    )


class _Layout:
    """Assigns table rows to GPUs and cells to series.

    A row belongs to one GPU identity (UUID *and* node, model, namespace, pod labels), so a
    series always lands in the same row whatever the order of the lines that name it.
    """

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.identities: list[GpuIdentity] = []
        self._rows: dict[GpuIdentity, int] = {}

    def cell(self, name: str, labels: Mapping[str, str], values: list[float | None]) -> Cell | None:
        """The cell a series fills (adding a row to ``values`` for a new GPU identity),
        or None when the series carries nothing the schema knows."""
        schema = self.schema
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
        row = self._rows.get(identity)
        if row is None:
            row = self._rows[identity] = len(self.identities)
            self.identities.append(identity)
            values.extend([None] * WIDTH)
        column = schema.columns.get(name)
        if column is not None:
            return row * WIDTH + column
        if name == schema.reason_metric:
            return (row, labels.get("reason") or "")
        return (row, None)


def collect_series(
    schema: Schema, series: Iterable[tuple[str, Mapping[str, str], float]]
) -> Collected:
    """Collect already-parsed series (the Prometheus API's answers)."""
    layout = _Layout(schema)
    collected = Collected(schema, layout.identities)
    for name, labels, value in series:
        cell = layout.cell(name, labels, collected.values)
        if cell is not None:
            collected.add(cell, value)
    return collected


_UNKNOWN: Cell = -1


class PageReader:
    """Reads successive pages of one endpoint, remembering which cell each line head fills.

    Pages are read as bytes: a known line needs no decoding (``float`` takes bytes), and
    only lines being learnt are decoded (invalid UTF-8 replaced, so it fails as a bad line).
    A new line (a throttle reason starting, a GPU moving to another pod) is learnt on its
    own; when heads that came and went pile up, the reader learns the page afresh.
    """

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self._cells: dict[bytes, Cell | None] = {}
        self._layout = _Layout(schema)
        self._cell_limit = 0
        #: parsed label sets by their raw text, shared by the lines of one learnt layout
        self._label_sets: dict[str, dict[str, str]] = {}

    def read(self, page: bytes) -> Collected:
        lines = page.split(b"\n")
        if lines and not lines[-1]:
            lines.pop()  # the page's final newline
        if b"" in lines:
            lines = [line for line in lines if line]
        return self._read_known(lines) or self._learn(lines)

    def _read_known(self, lines: list[bytes]) -> Collected | None:
        """The fast path; None when the page must be learnt anew."""
        cells = self._cells
        collected = Collected(self.schema, self._layout.identities)
        values, duplicates = collected.values, collected.duplicates
        good = 0
        for line in lines:
            head, _, text = line.rpartition(b" ")
            cell = cells.get(head, _UNKNOWN)
            if cell is None:
                continue
            if cell is _UNKNOWN:
                if len(cells) > self._cell_limit:
                    return None  # too many heads that came and went: start afresh
                self._learn_line(line, collected)
                continue
            if type(cell) is int and values[cell] is None and not duplicates and b"_" not in text:
                try:
                    values[cell] = float(text)
                    good += 1
                    continue
                except ValueError:
                    pass
            self._add_line(collected, text, cell)
        collected.good_lines += good
        return collected

    @staticmethod
    def _add_line(collected: Collected, text: bytes, cell: Cell) -> None:
        try:
            value = parse_value(text.decode("utf-8", errors="replace"))
        except ValueError:
            collected.refuse(cell, "bad_value" if text else "truncated")
            return
        collected.good_lines += 1
        collected.add(cell, value)

    def _learn_line(self, line: bytes, collected: Collected) -> None:
        """Parse one line in full, remember its head, add its value."""
        parsed = parse_line(line.decode("utf-8", errors="replace"), self._label_sets)
        head, _, text = line.rpartition(b" ")
        if parsed is None:
            if head.startswith(b"#"):
                self._cells[head] = None
            return
        if isinstance(parsed, LineError):
            collected.bad_lines += 1
            collected.rejected[parsed.reason] += 1
            return
        collected.good_lines += 1
        cell = self._layout.cell(parsed.name, parsed.labels, collected.values)
        if head and text and not parsed.timestamped:
            # only a plain "name{labels} value" line can be recognised by its head
            self._cells[head] = cell
        if cell is not None:
            collected.add(cell, parsed.value)

    def _learn(self, lines: list[bytes]) -> Collected:
        self._layout = _Layout(self.schema)
        self._cells = {}
        self._label_sets = {}
        collected = Collected(self.schema, self._layout.identities)
        for line in lines:
            self._learn_line(line, collected)
        self._cell_limit = 2 * len(self._cells) + 64
        return collected
