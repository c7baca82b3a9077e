"""Pausing Python's cyclic garbage collector over an allocation burst that makes no cycles.

Reference counting still frees everything; the collector would only rescan the live heap
again and again while the burst allocates. The simulator (a sample per GPU per tick) and the
telemetry ingest (some 10^5 short-lived objects per scrape) both pay for that otherwise.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """Disable the cyclic collector for the block, restoring it only if it was enabled."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
