"""A strict reader of one line of the Prometheus text exposition format (version 0.0.4).

:func:`parse_line` checks a line completely: metric name, label set (escapes included),
value, optional timestamp. Anything that does not fit (a truncated line, a bad name,
malformed or repeated labels, a bad value) is a :class:`LineError`; callers skip that line
and keep the others. Speed comes from the caller (:mod:`.reader`), which runs this only
for lines it has not met before.

:func:`parse_value` is the one number parser of the ingest: every path that reads a sample
value gives what it gives. :func:`parse_values` is its batch form for plain decimals.
"""

from __future__ import annotations

import re
from dataclasses import KW_ONLY, dataclass

import orjson

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_PAIR = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\\n]|\\.)*)"\s*(?:,|$)')
_ESCAPES = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}
_ESCAPE = re.compile(r"\\.")
_TIMESTAMP = re.compile(r"-?[0-9]+")
#: every byte that plain decimal values joined by commas can hold (NaN, Inf and digit
#: separators excluded)
_DECIMAL_LIST_BYTES = b"0123456789.eE+-,"


@dataclass(frozen=True, slots=True)
class LineError:
    """A line that is not a valid sample; ``reason`` is a short label for metrics.

    ``name`` and ``labels`` are set when only the value (or timestamp) is wrong, so the
    reader can still tell which series, and so which GPU, the line was about.
    """

    reason: str
    message: str
    _: KW_ONLY
    name: str | None = None
    labels: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class SampleLine:
    """One valid sample line; ``timestamped`` when the line carried its own timestamp."""

    name: str
    labels: dict[str, str]
    value: float
    _: KW_ONLY
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


def parse_value(text: bytes) -> float:
    """A sample value as Prometheus writes it (``NaN``, ``+Inf`` included); ValueError else."""
    if b"_" in text or not text.isascii():  # float() also takes digit separators
        raise ValueError(f"bad value {text!r}")
    return float(text)


def parse_values(texts: list[bytes]) -> list[float] | None:
    """The values :func:`parse_value` gives for ``texts``, parsed in one go; None when one
    is not a plain decimal (NaN, Inf, a digit separator, a typo), for the caller to read
    those texts one by one."""
    joined = b",".join(texts)
    if joined.translate(None, _DECIMAL_LIST_BYTES):
        return None
    try:
        # orjson parses a list of numbers faster than float() one by one, and rounds them
        # as float() does
        numbers = orjson.loads(b"[" + joined + b"]")
    except orjson.JSONDecodeError:  # forms that float() takes and JSON does not: ".5", "1e999"
        try:
            return list(map(parse_value, texts))
        except ValueError:
            return None
    if len(numbers) != len(texts):  # a value held a comma
        return None
    return list(map(float, numbers))  # JSON integers as floats


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
    labels = label_sets.get(raw) if label_sets is not None else None
    label_error = ""
    if labels is None:
        labels, label_error = _parse_label_set(raw, label_sets)
    fields = rest.split()
    if rest[:1] not in (" ", "\t") or not 1 <= len(fields) <= 2:
        message = f"expected a value (and optional timestamp) after {name}"
        return LineError("truncated", message, name=name, labels=labels)
    if len(fields) == 2 and _TIMESTAMP.fullmatch(fields[1]) is None:
        return LineError("bad_value", f"bad timestamp {fields[1][:40]!r}", name=name, labels=labels)
    try:
        value = parse_value(fields[0].encode())
    except ValueError:
        return LineError("bad_value", f"bad value {fields[0][:40]!r}", name=name, labels=labels)
    if labels is None:
        return LineError("bad_labels", label_error)
    return SampleLine(name, labels, value, timestamped=len(fields) == 2)


def _parse_label_set(
    raw: str, label_sets: dict[str, dict[str, str]] | None
) -> tuple[dict[str, str] | None, str]:
    """The parsed label set, remembered in ``label_sets``; or None and why it is malformed."""
    try:
        labels = parse_labels(raw)
    except ValueError as error:
        return None, str(error)
    if label_sets is not None:
        label_sets[raw] = labels
    return labels, ""
