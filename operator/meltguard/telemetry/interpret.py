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
between scrapes (only values change): a page that is the last one with other values is
read by position, with no Python work per line; other pages cost a dict lookup per line.
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, cast

import orjson

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


class GpuIdentity(NamedTuple):
    """Who a GPU is and which pod holds it, from its series' labels (a NamedTuple: an
    ingest takes its fields apart column-wise for ten thousand GPUs)."""

    uuid: str
    node: str
    model: str
    namespace: str | None
    pod: str | None

    @property
    def pod_key(self) -> tuple[str | None, str | None]:
        """(namespace, pod), as the wanted pods are given."""
        return (self.namespace, self.pod)


_POD_KEY = operator.attrgetter("namespace", "pod")  # GpuIdentity -> pod_key, at C speed
_IS_KNOWN = functools.partial(operator.is_not, None)


class Served(NamedTuple):
    """Which GPUs one read found (rows of ``identities``), kept small between reads: the
    identities are the reader's own list, shared, not copied."""

    identities: Sequence[GpuIdentity]
    rows: Sequence[int]

    def pods(self) -> dict[str, tuple[str | None, str | None]]:
        """GPU UUID -> (namespace, pod)."""
        identities = self.identities
        return {identities[row].uuid: identities[row].pod_key for row in self.rows}


#: Where one series goes: a table cell (row * WIDTH + column) for values and up, or
#: (row, reason) for a 0/1 reason series, or (row, None) for a reason bitmask.
Cell = int | tuple[int, str | None]


class Collected:
    """The series of one read as a table: ``values[row * WIDTH + column]``, None where unknown.

    ``rejected`` counts dropped lines and values by reason; ``good_lines`` / ``bad_lines``
    tell a metrics page with a few broken lines from something that is no metrics page.
    """

    __slots__ = (
        "_checked",
        "_present",
        "bad_lines",
        "duplicates",
        "good_lines",
        "identities",
        "reasons",
        "rejected",
        "schema",
        "touched",
        "values",
    )

    def __init__(
        self,
        schema: Schema,
        identities: list[GpuIdentity],
        values: list[float | None] | None = None,
        present: Sequence[int] | None = None,
    ) -> None:
        """``values`` and ``present`` (the rows with a series) are given when already known."""
        self.schema = schema
        self.identities = identities
        self.values: list[float | None] = (
            [None] * (len(identities) * WIDTH) if values is None else values
        )
        self.reasons: dict[int, set[str]] = {}
        self.duplicates: set[int] = set()
        #: rows that had a line this read whose value was refused (so the GPU is present)
        self.touched: set[int] = set()
        self.rejected: Counter[str] = Counter()
        self.good_lines = 0
        self.bad_lines = 0
        self._present = present
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

    def refuse(self, cell: Cell | None, reason: str) -> None:
        """Count a line whose value could not be read; its GPU (if any) still counts as
        present."""
        self.bad_lines += 1
        self.rejected[reason] += 1
        if cell is not None:
            self.touched.add(cell // WIDTH if type(cell) is int else cell[0])  # type: ignore[index]

    def served(self) -> Served:
        """The GPUs on the page this read, and their pods."""
        return Served(self.identities, self.present_rows())

    @classmethod
    def merge(cls, schema: Schema, parts: Iterable[Collected]) -> Collected:
        """One table of several reads (e.g. every endpoint's page), so checks run once."""
        merged = cls(schema, [])
        present: list[int] = []
        for part in parts:
            offset = len(merged.identities)
            present.extend(map(offset.__add__, part.present_rows()))
            merged.identities.extend(part.identities)
            merged.values.extend(part.values)
            if part.reasons:
                merged.reasons.update({row + offset: r for row, r in part.reasons.items()})
            if part.touched:
                merged.touched.update(row + offset for row in part.touched)
            if part.rejected:
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
        gpus = list(map(self.identities.__getitem__, present))
        wanted = list(map(pods.__contains__, map(_POD_KEY, gpus)))
        rows = list(itertools.compress(present, wanted))
        if not rows:
            return []
        columns = [self.values[column::WIDTH] for column in range(WIDTH)]
        if len(rows) < len(self.identities):  # else every row is wanted, in order
            columns = [list(map(column.__getitem__, rows)) for column in columns]
        reasons = {row: frozenset(reasons) for row, reasons in self.reasons.items()}
        reason_column = list(map(reasons.get, rows, itertools.repeat(_NO_REASONS)))
        gpus = list(itertools.compress(gpus, wanted))
        return _samples(gpus, columns, reason_column, sampled_at, self.rejected)

    def present_rows(self) -> Sequence[int]:
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
                if cells.count(None) + cells.count(0.0) + cells.count(1.0) == len(cells):
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
    known = cast(list[float], list(filter(_IS_KNOWN, cells)) if None in cells else cells)
    if not known:
        return True
    return math.isfinite(sum(known)) and low <= min(known) and max(known) <= high


def _samples(
    gpus: list[GpuIdentity],
    columns: list[list[float | None]],
    reasons: list[frozenset[str]],
    sampled_at: float,
    rejected: Counter[str],
) -> list[GpuSample]:
    """One sample per GPU from its table columns, built column-wise (ten thousand GPUs per
    ingest): only GPUs with a missing or inconsistent value are visited one by one."""
    utilization, temperature, used, total, free, reserved, slowdown, power, limit, up = columns
    _fill_memory_total(used, total, free, reserved)
    _drop_used_over_total(used, total, rejected)
    core = (utilization, temperature, used, total)
    ok = [True] * len(gpus)
    for gpu in _unusable(core, up, rejected):
        ok[gpu] = False
        for column in core:
            column[gpu] = 0.0
    uuids, nodes, models, namespaces, pods = zip(*gpus, strict=True)
    fields = zip(
        uuids,
        *core,
        [sampled_at] * len(gpus),
        nodes,
        namespaces,
        pods,
        slowdown,
        power,
        limit,
        reasons,
        models,
        ok,
        strict=True,
    )
    # tuple.__new__ in GpuSample's field order skips NamedTuple's Python-level __new__
    new = tuple.__new__
    return cast(list[GpuSample], [new(GpuSample, gpu) for gpu in fields])


def _fill_memory_total(
    used: list[float | None],
    total: list[float | None],
    free: list[float | None],
    reserved: list[float | None],
) -> None:
    """dcgm-exporter serves no total: it is used + free + reserved."""
    if None in total:
        for gpu, (u, t, f, r) in enumerate(zip(used, total, free, reserved, strict=True)):
            if t is None and u is not None and f is not None:
                total[gpu] = u + f + (r or 0.0)


def _drop_used_over_total(
    used: list[float | None], total: list[float | None], rejected: Counter[str]
) -> None:
    """More memory used than there is: the used figure is wrong."""
    if None in used or None in total or any(map(operator.gt, used, total)):  # type: ignore[arg-type]
        for gpu, (u, t) in enumerate(zip(used, total, strict=True)):
            if u is not None and t is not None and u > t:
                used[gpu] = None
                rejected["out_of_range"] += 1


def _unusable(
    core: tuple[list[float | None], ...], up: list[float | None], rejected: Counter[str]
) -> set[int]:
    """GPUs reported down, or missing a core quantity (counted ``incomplete``)."""
    down = {gpu for gpu, flag in enumerate(up) if flag == 0.0} if 0.0 in up else set()
    incomplete = {
        gpu for column in core if None in column for gpu, v in enumerate(column) if v is None
    }
    if incomplete - down:
        rejected["incomplete"] += len(incomplete - down)
    return down | incomplete


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
#: every byte that plain decimal sample values joined by commas can hold (NaN, Inf and
#: digit separators excluded)
_DECIMAL_LIST_BYTES = b"0123456789.eE+-,"


def _decimals(texts: list[bytes]) -> list[float] | None:
    """Plain decimal texts as floats, parsed in one go; None when one is anything else
    (NaN, Inf, a digit separator, a comma, a typo) for the line-by-line path to judge."""
    joined = b",".join(texts)
    if joined.translate(None, _DECIMAL_LIST_BYTES):
        return None
    try:
        # orjson parses a list of numbers several times faster than float() one by one, and
        # rounds them as float() does
        numbers = orjson.loads(b"[" + joined + b"]")
    except orjson.JSONDecodeError:  # forms that float() takes and JSON does not: ".5", "1e999"
        try:
            return list(map(float, texts))
        except ValueError:
            return None
    if len(numbers) != len(texts):  # a value held a comma
        return None
    return list(map(float, numbers))  # JSON integers as floats


@dataclass(frozen=True, slots=True)
class _Shape:
    """A page layout read before: the page's bytes around its sample values, and where
    each value goes.

    A page that is exactly these bytes with other values in the slots is read with no work
    per line: the values are cut out of its lines by position (the page rebuilt around
    them must equal it), parsed in one go and put in the table by position, all at C speed.
    """

    #: the page with its sample values cut out: fixed bytes at even positions, an (empty)
    #: slot for a value at odd ones
    frame: tuple[bytes, ...]
    #: how many lines the page splits into
    line_count: int
    #: picks the line of every slot from the page's lines, in page order
    slot_lines: Callable[[list[bytes]], Sequence[bytes]]
    #: where each slot's value starts in its line
    slot_starts: tuple[slice, ...]
    #: whether some slot holds a series the schema does not use (its value is checked,
    #: not kept)
    ignores_slots: bool
    #: the slots whose values the table uses
    value_slots: tuple[int, ...]
    #: per table cell, its index in ``value_slots``, or ``len(value_slots)`` for none
    table_sources: tuple[int, ...]
    #: (index in ``value_slots``, cell) of the throttle reason series
    reason_values: tuple[tuple[int, Cell], ...]
    #: the rows of the GPUs on the page (those with a value series), or None when a GPU has
    #: only reason series: whether it is on the page then depends on their values
    present_rows: tuple[int, ...] | None


class _Frame(NamedTuple):
    """A page cut around its sample values (see :class:`_Shape`)."""

    frame: tuple[bytes, ...]
    line_count: int
    slot_lines: tuple[int, ...]
    slot_starts: tuple[slice, ...]
    #: (slot, cell) of each value the table uses
    values: tuple[tuple[int, Cell], ...]


def _picker(indices: Sequence[int]) -> Callable[[list[bytes]], Sequence[bytes]]:
    """Picks the items at ``indices`` out of a list in one C call (``itemgetter`` gives a
    lone item rather than a tuple of one, so one item or none is picked as a slice)."""
    if len(indices) > 1:
        return operator.itemgetter(*indices)
    return operator.itemgetter(slice(indices[0], indices[0] + 1) if indices else slice(0, 0))


def _present_rows(cells: Iterable[Cell]) -> tuple[int, ...] | None:
    """The rows that ``cells`` put a GPU's value in, or None when some row has only reason
    series (a reason series of 0 alone does not make a GPU present)."""
    value_rows, reason_rows = set(), set()
    for cell in cells:
        if type(cell) is int:
            value_rows.add(cell // WIDTH)
        else:
            reason_rows.add(cell[0])  # type: ignore[index]
    return tuple(sorted(value_rows)) if reason_rows <= value_rows else None


class PageReader:
    """Reads successive pages of one endpoint, remembering which cell each line head fills.

    Pages are read as bytes: a known line needs no decoding (``float`` takes bytes), and
    only lines being learnt are decoded (invalid UTF-8 replaced, so it fails as a bad line).
    A page that differs from the last one only in its values (the usual case: series are
    stable between scrapes) is read through its :class:`_Shape`. A new line (a throttle
    reason starting, a GPU moving to another pod) is learnt on its own; when heads that
    came and went pile up, the reader learns the page afresh.
    """

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self._cells: dict[bytes, Cell | None] = {}
        self._layout = _Layout(schema)
        self._cell_limit = 0
        #: parsed label sets by their raw text, shared by the lines of one learnt layout
        self._label_sets: dict[str, dict[str, str]] = {}
        self._shape: _Shape | None = None

    def read(self, page: bytes) -> Collected:
        lines = page.split(b"\n")
        if self._shape is not None:
            collected = self._read_shaped(self._shape, page, lines)
            if collected is not None:
                return collected
        filled = [line for line in lines if line] if b"" in lines else lines
        collected = self._read_known(filled) or self._learn(filled)
        self._shape = self._learn_shape(lines)
        return collected

    def _read_shaped(self, shape: _Shape, page: bytes, lines: list[bytes]) -> Collected | None:
        """The fastest path (``lines``: the page split at newlines); None when the page is
        not the shape with plain decimal values in its slots (then it is read line by line)."""
        if len(lines) != shape.line_count:
            return None
        slots = list(map(bytes.__getitem__, shape.slot_lines(lines), shape.slot_starts))
        rebuilt = list(shape.frame)
        rebuilt[1::2] = slots
        if b"".join(rebuilt) != page:
            return None
        values = _decimals(slots)
        if values is None:
            return None
        if shape.ignores_slots:
            values = list(map(values.__getitem__, shape.value_slots))
        numbers: list[float | None] = [*values, None]  # None for the cells with no line
        table = list(map(numbers.__getitem__, shape.table_sources))
        collected = Collected(self.schema, self._layout.identities, table, shape.present_rows)
        for position, cell in shape.reason_values:
            collected.add(cell, numbers[position])  # type: ignore[arg-type]
        collected.good_lines = len(slots)
        return collected

    def _learn_shape(self, lines: list[bytes]) -> _Shape | None:
        """The shape of the page just read (its ``lines``, empty ones kept), or None when it
        has none (see :meth:`_frame`) or a cell is filled twice (a duplicate series: the
        line path counts it)."""
        cut = self._frame(lines)
        if cut is None:
            return None
        table_sources = [len(cut.values)] * (len(self._layout.identities) * WIDTH)
        reason_values: list[tuple[int, Cell]] = []
        for position, (_, cell) in enumerate(cut.values):
            if type(cell) is not int:
                reason_values.append((position, cell))
            elif table_sources[cell] != len(cut.values):
                return None
            else:
                table_sources[cell] = position
        return _Shape(
            frame=cut.frame,
            line_count=cut.line_count,
            slot_lines=_picker(cut.slot_lines),
            slot_starts=cut.slot_starts,
            ignores_slots=len(cut.slot_lines) > len(cut.values),
            value_slots=tuple(slot for slot, _ in cut.values),
            table_sources=tuple(table_sources),
            reason_values=tuple(reason_values),
            present_rows=_present_rows(cell for _, cell in cut.values),
        )

    def _frame(self, lines: list[bytes]) -> _Frame | None:
        """The page cut around its sample values; None when a sample line can only be read
        alone (one not learnt, e.g. a bad or timestamped one)."""
        frame: list[bytes] = []
        fixed: list[bytes] = []  # the page's bytes since the last slot
        slot_lines: list[int] = []
        slot_starts: list[slice] = []
        values: list[tuple[int, Cell]] = []
        for number, line in enumerate(lines):
            if line and not line.startswith(b"#"):
                head = line.rpartition(b" ")[0]
                cell = self._cells.get(head, _UNKNOWN)
                if cell is _UNKNOWN:
                    return None
                if cell is not None:
                    values.append((len(slot_lines), cell))
                slot_lines.append(number)
                slot_starts.append(slice(len(head) + 1, None))
                frame.extend((b"".join(fixed) + head + b" ", b""))
                fixed = []
            else:
                fixed.append(line)
            fixed.append(b"\n")
        fixed.pop()  # no newline after the last line
        frame.append(b"".join(fixed))
        return _Frame(
            tuple(frame), len(lines), tuple(slot_lines), tuple(slot_starts), tuple(values)
        )

    def _read_known(self, lines: list[bytes]) -> Collected | None:
        """Line by line, parsing only new lines; None when the page must be learnt anew."""
        cells = self._cells
        collected = Collected(self.schema, self._layout.identities)
        values, duplicates = collected.values, collected.duplicates
        good = 0
        for line in lines:
            head, _, text = line.rpartition(b" ")
            cell = cells.get(head, _UNKNOWN)
            if cell is None:
                if not head.startswith(b"#"):  # a series the schema does not use
                    self._add_line(collected, text, None)
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
    def _add_line(collected: Collected, text: bytes, cell: Cell | None) -> None:
        """Count a line good or bad by its value, and add the value to its cell; a line of
        a series the schema does not use (no cell) is only counted, as learning it would."""
        try:
            value = parse_value(text.decode("utf-8", errors="replace"))
        except ValueError:
            collected.refuse(cell, "bad_value" if text else "truncated")
            return
        collected.good_lines += 1
        if cell is not None:
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
