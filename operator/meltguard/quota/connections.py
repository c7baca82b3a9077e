"""Bounds on the HTTP connections of the quota service.

Idle and half-sent connections cost a file descriptor each; when the process runs out, new
clients and the probes time out. So at most ``limit`` connections are open: a new one
closes the least recently active to make room (an attacker's idle connections go first, a
client that is sending goes last), and the open-files limit is raised to fit them. Read
timeouts (in :mod:`meltguard.quota.app` and the runner's keep-alive timeout) free the
rest.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

#: Descriptors kept for everything but HTTP clients: Redis connections, gRPC, files, logs.
OPEN_FILES_RESERVE = 256


def fit_open_files(connections: int, reserve: int = OPEN_FILES_RESERVE) -> int:
    """Raise the soft open-files limit to hold ``connections`` plus ``reserve`` if the hard
    limit allows; return how many connections fit (fewer than asked, with a warning)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = connections + reserve
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return connections
    raised = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
    if raised >= needed:
        return connections
    fitted = max(1, raised - reserve)
    log.warning(
        "the open-files limit (%d) holds only %d connections, not --max-connections %d",
        raised,
        fitted,
        connections,
    )
    return fitted


class ConnectionCap:
    """At most ``limit`` open connections, ordered by their last activity."""

    def __init__(self, limit: int, on_evict: Callable[[], None] = lambda: None) -> None:
        self.limit = limit
        self.on_evict = on_evict
        self._open: OrderedDict[_Tracked, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._open)

    def protocol_factory(self, make: Callable[[], Any]) -> Callable[[], asyncio.Protocol]:
        """Wrap a protocol factory so that its connections are counted and capped."""
        return lambda: _Tracked(make(), self)

    def opened(self, connection: _Tracked) -> None:
        while len(self._open) >= self.limit:
            oldest, _ = self._open.popitem(last=False)
            oldest.close()
            self.on_evict()
        self._open[connection] = None

    def active(self, connection: _Tracked) -> None:
        if connection in self._open:
            self._open.move_to_end(connection)

    def closed(self, connection: _Tracked) -> None:
        self._open.pop(connection, None)


class _Tracked(asyncio.Protocol):
    """A protocol that tells its :class:`ConnectionCap` about its life, then hands every
    event to the wrapped one (aiohttp's request handler)."""

    __slots__ = ("_cap", "_inner", "_transport")

    def __init__(self, inner: Any, cap: ConnectionCap) -> None:
        self._inner = inner
        self._cap = cap
        self._transport: asyncio.BaseTransport | None = None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._cap.opened(self)
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._cap.active(self)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        result: bool | None = self._inner.eof_received()
        return result

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cap.closed(self)
        self._inner.connection_lost(exc)


class CappedRunner(web.AppRunner):
    """An :class:`aiohttp.web.AppRunner` whose sites accept connections through ``cap``."""

    def __init__(self, app: web.Application, cap: ConnectionCap, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.cap = cap

    @property
    def server(self) -> Any:
        """The protocol factory the sites listen with (None before ``setup()``)."""
        inner = super().server
        return None if inner is None else self.cap.protocol_factory(inner)
