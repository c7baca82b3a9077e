"""A progress bar on a terminal (tqdm), nothing at all when output goes elsewhere."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO


@contextmanager
def progress_bar(total: int, stream: TextIO) -> Iterator[Callable[[int], None] | None]:
    """Yield a function advancing the bar by n steps, or None when ``stream`` is no TTY."""
    if not stream.isatty():
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=total, file=stream, unit="step", desc="simulating", leave=False) as bar:
        yield bar.update
