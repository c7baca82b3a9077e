"""A strict reader of one line of the Prometheus text exposition format (version 0.0.4).

:func:`parse_line` checks a line completely: metric name, label set (escapes included),
value, optional timestamp. Anything that does not fit (a truncated line, a bad name,
malformed or repeated labels, a bad value) is a :class:`LineError`; callers skip that line
and keep the others. Speed comes from the caller (:mod:`.interpret`), which runs this only
for lines it has not seen before.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_PAIR = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\\n]|\\.)*)"\s*(?:,|$)')
_ESCAPES = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}
_ESCAPE = re.compile(r"\\.")
_TIMESTAMP = re.compile(r"-?[0-9]+")


@dataclass(frozen=True, slots=True)
class LineError:
    """A line that is not a valid sample; ``reason`` is a short label for metrics."""

    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class SampleLine:
    """One valid sample line; ``timestamped`` when the line carried its own timestamp."""

    name: str
    labels: dict[str, str]
    value: float
    timestamped: bool


def parse_labels(raw: str) -> dict[str, str]:
    """Parse the inside of ``{...}``; raise ValueError on anything malformed or repeated."""
    labels: dict[str, str] = {}
    position = 0
    while position < len(raw):
        match = _LABEL_PAIR.match(raw, position)
        if match is None:
            raise ValueError(f"malformed labels near {raw[position : position + 40]!r}")
        name, value = match.group(1), match.group(2)
        if name in labels:
            raise ValueError(f"label {name!r} given twice")
        labels[name] = _ESCAPE.sub(lambda e: _ESCAPES.get(e.group(0), e.group(0)), value)
        position = match.end()
    return labels


def parse_value(text: str) -> float:
    """A sample value as Prometheus writes it (``NaN``, ``+Inf`` included); ValueError else."""
    if "_" in text or not text.isascii():  # float() also takes digit separators, other scripts
        raise ValueError(f"bad value {text!r}")
    return float(text)


def parse_line(
    line: str, label_sets: dict[str, dict[str, str]] | None = None
) -> SampleLine | LineError | None:
    """Parse one line; None for blank and comment lines.

    ``label_sets`` caches parsed label sets by their raw text (pages repeat each GPU's
    labels on every metric); the returned label dicts are shared, not to be modified.
    """
    if not line or line[0] == "#" or line.isspace():
        return None
    brace = line.find("{")
    if brace >= 0:
        close = line.rfind("}")
        if close < brace:
            return LineError("truncated", "unterminated label set")
        name, raw, rest = line[:brace], line[brace + 1 : close], line[close + 1 :]
    else:
        name, _, rest = line.partition(" ")
        raw, rest = "", " " + rest
    if _METRIC_NAME.fullmatch(name) is None:
        return LineError("bad_name", f"bad metric name {name[:60]!r}")
    fields = rest.split()
    if rest[:1] not in (" ", "\t") or not 1 <= len(fields) <= 2:
        return LineError("truncated", f"expected a value (and optional timestamp) after {name}")
    if len(fields) == 2 and _TIMESTAMP.fullmatch(fields[1]) is None:
        return LineError("bad_value", f"bad timestamp {fields[1][:40]!r}")
    try:
        value = parse_value(fields[0])
    except ValueError:
        return LineError("bad_value", f"bad value {fields[0][:40]!r}")
    labels = label_sets.get(raw) if label_sets is not None else None
    if labels is None:
        try:
            labels = parse_labels(raw)
        except ValueError as error:
            return LineError("bad_labels", str(error))
        if label_sets is not None:
            label_sets[raw] = labels
    return SampleLine(name, labels, value, timestamped=len(fields) == 2)
