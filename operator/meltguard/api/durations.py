"""Durations as users write them in a policy: ``90s``, ``30m``, ``3h``, ``24h``, ``1d``."""

from __future__ import annotations

import re

DURATION_PATTERN = r"^[1-9][0-9]{0,6}(s|m|h|d)$"
#: The longest duration the pattern admits (``9999999d``), in seconds.
MAX_DURATION_SECONDS = 9_999_999 * 86400
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(DURATION_PATTERN)


def duration_seconds(text: str) -> int:
    """Seconds in a duration string; raises ValueError naming the accepted forms."""
    if not _DURATION.match(text):
        raise ValueError(
            f"{text!r} is not a duration: write a positive whole number followed by "
            "s, m, h or d (e.g. 90s, 30m, 3h, 24h, 1d)"
        )
    return int(text[:-1]) * _UNIT_SECONDS[text[-1]]


def format_duration(seconds: int) -> str:
    """The shortest exact duration string for a number of seconds (86400 -> ``1d``)."""
    for unit in ("d", "h", "m"):
        size = _UNIT_SECONDS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
