"""Fixed windows aligned to the Unix epoch (see the package docstring)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Window:
    """The ``index``-th window of length ``seconds``: ``[index*seconds, (index+1)*seconds)``."""

    seconds: int
    index: int

    @classmethod
    def containing(cls, now: float, seconds: int) -> Window:
        """The window of length ``seconds`` that holds the instant ``now`` (epoch seconds)."""
        if seconds < 1:
            raise ValueError(f"window length must be at least 1 second, got {seconds}")
        return cls(seconds=seconds, index=math.floor(now / seconds))

    @property
    def end(self) -> int:
        """Epoch second at which this window ends and the next begins."""
        return (self.index + 1) * self.seconds

    def reset_seconds(self, now: float) -> int:
        """Whole seconds until the window resets, rounded up (at least 1)."""
        return max(1, math.ceil(self.end - now))

    @property
    def tag(self) -> str:
        """A short stable name of this window, e.g. ``86400:20415``."""
        return f"{self.seconds}:{self.index}"
