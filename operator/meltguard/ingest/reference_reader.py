"""The reference page reader: every line parsed in full, nothing remembered between pages.

It defines what reading a page gives. :class:`~.reader.PageReader` reads the same pages
faster by remembering earlier ones, and must give the same table for every page (same
samples, same counts by reason, same good and bad lines); a property test compares them.
"""

from __future__ import annotations

from meltguard.ingest.schema import Schema
from meltguard.ingest.table import Collected, Layout, Placement
from meltguard.ingest.textformat import LineError, SampleLine, parse_line


def read_line(
    line: bytes, *, layout: Layout, table: Collected, label_sets: dict[str, dict[str, str]]
) -> tuple[SampleLine, Placement] | None:
    """Parse one line in full and count it in ``table``, its value put where ``layout``
    places it; the parsed sample and its placement, or None for a line that is no sample.

    Lines are decoded with invalid UTF-8 replaced, so that such a line fails as a bad one.
    A line whose value is bad but which names a GPU series still makes that GPU present.
    """
    parsed = parse_line(line.decode("utf-8", errors="replace"), label_sets)
    if parsed is None:
        return None
    if isinstance(parsed, LineError):
        placement = None
        if parsed.name is not None and parsed.labels is not None:
            placement = layout.place(parsed.name, parsed.labels, table.values)
        table.refuse(placement, parsed.reason)
        return None
    table.good_lines += 1
    placement = layout.place(parsed.name, parsed.labels, table.values)
    table.put(placement, parsed.value)
    return parsed, placement


def read_page(schema: Schema, page: bytes) -> Collected:
    """The table of one page, read line by line."""
    layout = Layout(schema)
    table = Collected(schema, layout.identities)
    label_sets: dict[str, dict[str, str]] = {}
    for line in page.split(b"\n"):
        read_line(line, layout=layout, table=table, label_sets=label_sets)
    return table
