"""The series of one read as a table of GPUs, checked and turned into the core's samples.

Series are collected per GPU (its UUID with its node, model and pod labels) into a table:
one row per GPU, one column per quantity of :data:`~.schema.COLUMNS`. All endpoints'
tables are merged so the checks run once per column over the whole fleet, then:

* a non-finite, negative or implausible value (400 C, utilization 7) or a duplicate series
  is dropped and counted by reason; the rest of the page still counts;
* a GPU left without one of its core quantities (utilization, temperature, memory) is
  reported ``up=False`` (so the core treats it as stale) instead of being guessed;
* unknown metrics are ignored (dcgm-exporter serves many fields meltguard does not use);
* only GPUs whose ``namespace``/``pod`` labels name one of the wanted pods become samples.
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import NamedTuple, cast

from meltguard.api.vocabulary import throttle_labels
from meltguard.core.observation import GpuSample
from meltguard.ingest.samples import samples_of
from meltguard.ingest.schema import BOUNDS, UP_COLUMN, WIDTH, GpuIdentity, Schema

_NO_REASONS: frozenset[str] = frozenset()
_IS_KNOWN = functools.partial(operator.is_not, None)


_POD_KEY = operator.attrgetter("namespace", "pod")  # GpuIdentity -> (namespace, pod)


class ReasonSeries(NamedTuple):
    """A throttle-reason series of the GPU in table row ``row``: a 0/1 flag for the reason
    labelled ``label``, or, when ``label`` is None, an NVML clocks-event reasons bitmask."""

    row: int
    label: str | None


Placement = int | ReasonSeries | None
"""Where a series' value goes: the table cell ``row * WIDTH + column`` of a quantity (or
``up``), a :class:`ReasonSeries`, or None for a series the schema does not use."""


class Served(NamedTuple):
    """Which GPUs one read found (rows of ``identities``), kept small between reads: the
    identities are the reader's own list, shared, not copied."""

    identities: Sequence[GpuIdentity]
    rows: Sequence[int]

    def pods(self) -> dict[str, tuple[str | None, str | None]]:
        """GPU UUID -> (namespace, pod)."""
        identities = self.identities
        return {identities[row].uuid: _POD_KEY(identities[row]) for row in self.rows}


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
        *,
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

    def put(self, placement: Placement, value: float) -> None:
        """Put one series value where it goes (nowhere for a series the schema does not use)."""
        if isinstance(placement, int):
            self.add(placement, value)
        elif placement is not None:
            self.add_reason(placement, value)

    def add(self, cell: int, value: float) -> None:
        """Put one value in its cell; a second value for a cell makes it unknown."""
        if self.values[cell] is None and cell not in self.duplicates:
            self.values[cell] = value
        else:
            self.values[cell] = None
            self.duplicates.add(cell)
            self.touched.add(cell // WIDTH)
            self.rejected["duplicate"] += 1

    def add_reason(self, series: ReasonSeries, value: float) -> None:
        """Add the reasons a flag (0 or 1) or a bitmask series says are active."""
        row, label = series
        if label is not None and value in (0.0, 1.0):
            if value == 1.0:
                self.reasons.setdefault(row, set()).add(label)
        elif label is None and value.is_integer() and 0 <= value < 2**64:
            self.reasons.setdefault(row, set()).update(throttle_labels(int(value)))
        else:
            self.touched.add(row)
            self.rejected["out_of_range"] += 1

    def refuse(self, placement: Placement, reason: str) -> None:
        """Count a line whose value could not be read; its GPU (if any) still counts as
        present."""
        self.bad_lines += 1
        self.rejected[reason] += 1
        if isinstance(placement, int):
            self.touched.add(placement // WIDTH)
        elif placement is not None:
            self.touched.add(placement.row)

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

    def samples(self, pods: Collection[tuple[str, str]] | None,
                sampled_at: float) -> list[GpuSample]:
        """Checked samples of the GPUs held by one of ``pods`` ((namespace, pod) pairs), or
        of every GPU when ``pods`` is None.

        A GPU is in the read when any of its series was on the page, refused ones included;
        a row with no series at all is a GPU that left the page.
        """
        present = self.present_rows()  # before the checks turn refused values into None
        if not self._checked:
            self._checked = True
            self._scale_and_check()
        gpus = list(map(self.identities.__getitem__, present))
        if pods is None:
            rows = list(present)
        else:
            wanted = list(map(pods.__contains__, map(_POD_KEY, gpus)))
            rows = list(itertools.compress(present, wanted))
            gpus = list(itertools.compress(gpus, wanted))
        if not rows:
            return []
        columns = [self.values[column::WIDTH] for column in range(WIDTH)]
        if len(rows) < len(self.identities):  # else every row is wanted, in order
            columns = [list(map(column.__getitem__, rows)) for column in columns]
        reasons = {row: frozenset(reasons) for row, reasons in self.reasons.items()}
        reason_column = list(map(reasons.get, rows, itertools.repeat(_NO_REASONS)))
        return samples_of(
            gpus, columns, reasons=reason_column, sampled_at=sampled_at, rejected=self.rejected
        )

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
            low, high = BOUNDS[column]
            if column == UP_COLUMN:
                if cells.count(None) + cells.count(0.0) + cells.count(1.0) == len(cells):
                    continue
            elif _all_plausible(cells, low, high):
                continue
            for cell in range(column, len(values), WIDTH):
                value = values[cell]
                if value is None:
                    continue
                if low <= value <= high and (column != UP_COLUMN or value in (0.0, 1.0)):
                    continue
                values[cell] = None
                self.rejected["out_of_range" if math.isfinite(value) else "not_finite"] += 1


def _all_plausible(cells: list[float | None], low: float, high: float) -> bool:
    """Whether every known value lies in [low, high], at C speed (a NaN makes the sum NaN)."""
    known = cast(list[float], list(filter(_IS_KNOWN, cells)) if None in cells else cells)
    if not known:
        return True
    return math.isfinite(sum(known)) and low <= min(known) and max(known) <= high


class Layout:
    """Assigns table rows to GPUs and cells to series.

    A row belongs to one GPU identity (UUID *and* node, model, namespace, pod labels), so a
    series always lands in the same row whatever the order of the lines that name it.
    """

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.identities: list[GpuIdentity] = []
        self._rows: dict[GpuIdentity, int] = {}

    def place(self, name: str, labels: Mapping[str, str], values: list[float | None]) -> Placement:
        """Where a series' value goes (adding a row to ``values`` for a new GPU identity);
        None when the series carries nothing the schema knows."""
        schema = self.schema
        uuid = labels.get(schema.uuid_label)
        if not uuid or name not in schema.metric_names:
            return None
        identity = GpuIdentity(
            uuid=uuid,
            node=labels.get(schema.node_label, ""),
            model=labels.get(schema.model_label, ""),
            namespace=labels.get(schema.namespace_label) or None,
            pod=labels.get(schema.pod_label) or None,
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
            return ReasonSeries(row, labels.get(schema.reason_label) or "")
        return ReasonSeries(row, None)


def collect_series(
    schema: Schema, series: Iterable[tuple[str, Mapping[str, str], float]]
) -> Collected:
    """Collect already-parsed series (the Prometheus API's answers)."""
    layout = Layout(schema)
    collected = Collected(schema, layout.identities)
    for name, labels, value in series:
        collected.put(layout.place(name, labels, collected.values), value)
    return collected
