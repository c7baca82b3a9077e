"""One scrape per source and tick, whatever the number of policies reading it.

Policies that name the same exporter (the same namespace, selector and port) share one
:class:`~.scrape.ScrapeSource`. Their ticks start together (the operator ticks on the
multiples of each interval), so the first reader starts the scrape, the others wait for
that same scrape, and one that comes a little later takes the scrape just made; each takes
its own pods' GPUs from it (:meth:`~.scrape.Scrape.reading`).
"""

from __future__ import annotations

import asyncio

from meltguard.ingest.scrape import Scrape, ScrapeSource
from meltguard.ingest.source import Pods, TelemetryReading

#: A scrape younger than this serves a reader instead of a new one: well under the shortest
#: tick (1 s), well over the spread of the start of the ticks due together.
REUSE_SECONDS = 0.5


class SharedScrape:
    """A :class:`ScrapeSource` read by many policies: concurrent reads share one scrape."""

    def __init__(self, source: ScrapeSource, *, reuse_seconds: float = REUSE_SECONDS) -> None:
        self.source = source
        self.reuse_seconds = reuse_seconds
        self.scrapes = 0
        self._last: Scrape | None = None
        self._pending: asyncio.Task[Scrape] | None = None

    async def read(self, pods: Pods, now: float) -> TelemetryReading:
        """The GPUs of ``pods`` from the current scrape (never raises for telemetry)."""
        return (await self._current(now)).reading(pods)

    async def _current(self, now: float) -> Scrape:
        last = self._last
        if last is not None and now - last.at < self.reuse_seconds:
            return last
        if self._pending is None:
            self.scrapes += 1
            self._pending = asyncio.ensure_future(self.source.scrape(now))
            self._pending.add_done_callback(self._finished)
        # one reader cancelled (its policy deleted) must not cancel the others' scrape
        return await asyncio.shield(self._pending)

    def _finished(self, task: asyncio.Task[Scrape]) -> None:
        self._pending = None
        if not task.cancelled() and task.exception() is None:
            self._last = task.result()

    async def close(self) -> None:
        """Stop a scrape in flight and close the source's connections."""
        if self._pending is not None:
            self._pending.cancel()
            await asyncio.gather(self._pending, return_exceptions=True)
        await self.source.close()
