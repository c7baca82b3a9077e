"""The one error the simulator raises for bad input: which file, and each field that is wrong."""

from __future__ import annotations

from collections.abc import Sequence

from meltguard.api.validation import FieldError


class SimulationInputInvalid(ValueError):
    """A scenario or policy file that cannot be simulated; ``errors`` name the fields."""

    def __init__(self, source: str, errors: Sequence[FieldError]) -> None:
        self.source = source
        self.errors = tuple(errors)
        lines = "\n".join(f"  {error}" for error in self.errors)
        super().__init__(f"{source} is invalid:\n{lines}")
