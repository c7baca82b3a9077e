"""Fast reads of successive pages of one endpoint.

Series are stable between scrapes: only their values change. :class:`PageReader` remembers,
for every line head (``name{labels}``) it has met, where that line's value goes, and the
:class:`_Shape` of the last page. A page that is that shape with other values is read by
position: the values are cut out of their lines, parsed in one go and put in the table by
position, all at C speed, with no Python work per line. Any other page is read line by
line: a line whose head is known costs a dict lookup and a number parse; every other line
(a new head, a value that does not parse on its own) goes through the reference reader's
:func:`~.reference_reader.read_line`. What a read gives must equal what
:func:`~.reference_reader.read_page` gives for the same page.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from meltguard.ingest.reference_reader import read_line
from meltguard.ingest.schema import WIDTH, GpuIdentity, Schema
from meltguard.ingest.table import Collected, Layout, Placement, ReasonSeries
from meltguard.ingest.textformat import parse_value, parse_values

_HASH = ord("#")


class PageReader:
    """Reads successive pages of one endpoint, remembering where each line head's value goes.

    Pages are read as bytes: a known line needs no decoding, and only lines read in full
    are decoded. When heads that came and went pile up, the reader forgets them all and
    learns the next page afresh.
    """

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self._layout = Layout(schema)
        #: line head -> where the value of a plain ``head value`` line goes
        self._heads: dict[bytes, Placement] = {}
        self._head_limit = 0
        #: parsed label sets by their raw text, shared by the lines of one layout
        self._label_sets: dict[str, dict[str, str]] = {}
        self._shape: _Shape | None = None

    def read(self, page: bytes) -> Collected:
        lines = page.split(b"\n")
        if self._shape is not None:
            table = self._shape.read(
                page, lines, schema=self.schema, identities=self._layout.identities
            )
            if table is not None:
                return table
        table = self._read_lines(lines)
        self._shape = _Shape.learn(lines, self._heads, len(self._layout.identities))
        return table

    def _read_lines(self, lines: list[bytes]) -> Collected:
        """Line by line, parsing in full only the lines whose head is new, or whose value (the
        text after the head) does not parse on its own: the full parse tells what it is."""
        if len(self._heads) > self._head_limit:
            self._layout = Layout(self.schema)
            self._heads = {}
            self._label_sets = {}
        fresh = not self._heads
        layout, heads, label_sets = self._layout, self._heads, self._label_sets
        table = Collected(self.schema, layout.identities)
        values, duplicates = table.values, table.duplicates
        good = 0
        for line in lines:
            if not line or line[0] == _HASH:
                continue
            head, _, text = line.rpartition(b" ")
            cell = heads.get(head)
            if isinstance(cell, int) and values[cell] is None and not duplicates:
                try:
                    values[cell] = parse_value(text)
                    good += 1
                    continue
                except ValueError:
                    pass
            elif head in heads and _put_known(table, heads[head], text):
                continue  # a cell already filled, a reason series, a series not used
            learnt = read_line(line, layout=layout, table=table, label_sets=label_sets)
            if learnt is not None and head and text and not learnt[0].timestamped:
                # only a plain "name{labels} value" line can be recognised by its head
                heads[head] = learnt[1]
        table.good_lines += good
        if fresh:
            self._head_limit = 2 * len(heads) + 64
        return table


def _put_known(table: Collected, placement: Placement, text: bytes) -> bool:
    """Count a line whose head is known good and put its value where the head says; False
    when the value does not parse on its own (the line is then read in full)."""
    try:
        value = parse_value(text)
    except ValueError:
        return False
    table.good_lines += 1
    table.put(placement, value)
    return True


@dataclass(frozen=True, slots=True, kw_only=True)
class _Shape:
    """A page read before: its bytes around its sample values, and where each value goes.

    A page that is exactly these bytes with other values in the slots is read with no work
    per line: the values are cut out of its lines by position (the page rebuilt around
    them must equal it), parsed in one go and put in the table by position.
    """

    #: the page with its sample values cut out: fixed bytes at even positions, an (empty)
    #: slot for a value at odd ones
    frame: tuple[bytes, ...]
    #: how many lines the page splits into
    line_count: int
    #: picks the line of every slot from the page's lines, in page order
    pick_slot_lines: Callable[[list[bytes]], Sequence[bytes]]
    #: where each slot's value starts in its line
    slot_starts: tuple[slice, ...]
    #: per table cell, the slot holding its value, or the number of slots for none
    table_sources: tuple[int, ...]
    #: (slot, series) of every throttle reason series
    reason_slots: tuple[tuple[int, ReasonSeries], ...]
    #: the rows of the GPUs on the page (those with a value series), or None when a GPU has
    #: only reason series: whether it is on the page then depends on their values
    present_rows: tuple[int, ...] | None

    @classmethod
    def learn(cls, lines: list[bytes], heads: dict[bytes, Placement], rows: int) -> _Shape | None:
        """The shape of a page just read (its ``lines``, empty ones kept) by a reader that
        knows ``heads`` and ``rows`` GPUs; None when a sample line can only be read alone
        (one whose head is not known: a bad or timestamped one) or a cell is filled twice
        (a duplicate series: the line path counts it)."""
        frame: list[bytes] = []
        fixed: list[bytes] = []  # the page's bytes since the last slot
        slot_lines: list[int] = []
        slot_starts: list[slice] = []
        table_sources = [-1] * (rows * WIDTH)
        reason_slots: list[tuple[int, ReasonSeries]] = []
        for number, line in enumerate(lines):
            if line and line[0] != _HASH:
                head = line.rpartition(b" ")[0]
                if head not in heads:
                    return None
                placement = heads[head]
                if isinstance(placement, int):
                    if table_sources[placement] >= 0:
                        return None
                    table_sources[placement] = len(slot_lines)
                elif placement is not None:
                    reason_slots.append((len(slot_lines), placement))
                slot_lines.append(number)
                slot_starts.append(slice(len(head) + 1, None))
                frame.extend((b"".join(fixed) + head + b" ", b""))
                fixed = []
            else:
                fixed.append(line)
            fixed.append(b"\n")
        fixed.pop()  # no newline after the last line
        frame.append(b"".join(fixed))
        value_rows = {cell // WIDTH for cell, slot in enumerate(table_sources) if slot >= 0}
        reason_rows = {series.row for _, series in reason_slots}
        return cls(
            frame=tuple(frame),
            line_count=len(lines),
            pick_slot_lines=_picker(slot_lines),
            slot_starts=tuple(slot_starts),
            table_sources=tuple(len(slot_lines) if slot < 0 else slot for slot in table_sources),
            reason_slots=tuple(reason_slots),
            present_rows=tuple(sorted(value_rows)) if reason_rows <= value_rows else None,
        )

    def read(
        self, page: bytes, lines: list[bytes], *, schema: Schema, identities: list[GpuIdentity]
    ) -> Collected | None:
        """The table of ``page`` (split into ``lines``); None when the page is not this shape
        with plain decimal values in its slots (then it is read line by line)."""
        if len(lines) != self.line_count:
            return None
        slots = list(map(bytes.__getitem__, self.pick_slot_lines(lines), self.slot_starts))
        rebuilt = list(self.frame)
        rebuilt[1::2] = slots
        if b"".join(rebuilt) != page:
            return None
        numbers = parse_values(slots)
        if numbers is None:
            return None
        cells: list[float | None] = [*numbers, None]  # None for the cells with no line
        table = Collected(
            schema,
            identities,
            values=list(map(cells.__getitem__, self.table_sources)),
            present=self.present_rows,
        )
        for slot, series in self.reason_slots:
            table.add_reason(series, numbers[slot])
        table.good_lines = len(slots)
        return table


def _picker(indices: Sequence[int]) -> Callable[[list[bytes]], Sequence[bytes]]:
    """Picks the items at ``indices`` out of a list in one C call (``itemgetter`` gives a
    lone item rather than a tuple of one, so one item or none is picked as a slice)."""
    if len(indices) > 1:
        return operator.itemgetter(*indices)
    return operator.itemgetter(slice(indices[0], indices[0] + 1) if indices else slice(0, 0))
