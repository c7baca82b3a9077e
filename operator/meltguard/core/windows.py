"""Quota windows: fixed, aligned to the Unix epoch, the same for the quota service and the
simulator (a window of W seconds resets at every multiple of W, so ``24h`` is the UTC day)."""

from __future__ import annotations

import math
from typing import NamedTuple


class Window(NamedTuple):
    """The ``number``-th window of length ``seconds``: ``[number*seconds, (number+1)*seconds)``
    (a NamedTuple: the quota service's memory store keys its counters with it)."""

    seconds: int
    number: int

    @classmethod
    def containing(cls, now: float, seconds: int) -> Window:
        """The window of length ``seconds`` that holds the instant ``now`` (epoch seconds)."""
        if seconds < 1:
            raise ValueError(f"window length must be at least 1 second, got {seconds}")
        return cls(seconds, math.floor(now / seconds))

    @property
    def start(self) -> int:
        """Epoch second at which this window begins."""
        return self.number * self.seconds

    @property
    def end(self) -> int:
        """Epoch second at which this window ends and the next begins."""
        return self.start + self.seconds

    def reset_seconds(self, now: float) -> int:
        """Whole seconds until the window resets, rounded up (at least 1)."""
        return max(1, math.ceil(self.end - now))

    @property
    def tag(self) -> str:
        """A short stable name of this window, e.g. ``86400:20415``."""
        return f"{self.seconds}:{self.number}"
