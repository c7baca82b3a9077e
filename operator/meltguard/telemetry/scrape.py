"""Concurrent HTTP/1.1 GETs of metrics pages over keep-alive connections.

Why not aiohttp's client here: an ingest scrapes ~1,000 exporter pages every few seconds,
and aiohttp's per-request cost is about three times this client's (``bench/telemetry.py``
prints both), which alone would eat most of the 250 ms ingest budget on a 2-core machine.
Scraping needs only a tiny slice of HTTP: GET, a ``Content-Length``, chunked or
close-delimited body, keep-alive. This client does exactly that on an asyncio protocol,
with a per-request timeout covering connect and read, a bound on requests in flight, and
a hard cap on page size checked before a body is buffered. Anything else a server answers
(another status, a compressed body we did not ask for, a malformed head) is a
:class:`ScrapeError`, never a crash.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

MAX_PAGE_BYTES = 10 * 1024 * 1024
_HEAD_LIMIT = 64 * 1024
_CHUNK_LINE_LIMIT = 1024


class ScrapeError(Exception):
    """A page could not be fetched; ``reason`` is a short metric label (timeout, refused...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class _StaleConnection(ConnectionError):
    """A kept-alive connection was closed by the server before answering: retry on a new one."""


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """``host:port`` (IPv6 as ``[addr]:port``) -> (host, port); ValueError when malformed."""
    host, colon, port = endpoint.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"endpoint {endpoint!r} is not HOST:PORT")
    return host, int(port)


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    keep_alive: bool


class _ResponseParser:
    """Parses one response from a growing buffer, consuming what it uses."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.status = 0
        self.headers: dict[str, str] = {}
        self.mode = "head"  # head | length | chunked | trailers | close
        self.length = 0
        self.chunk: int | None = None
        self.parts: list[bytes] = []

    @property
    def started(self) -> bool:
        return self.mode != "head"

    def feed(self, buffer: bytearray) -> Response | None:
        """The response once complete; raises ValueError/ScrapeError on a bad one."""
        if self.mode == "head" and not self._head(buffer):
            return None
        if self.mode == "length":
            if len(buffer) < self.length:
                return None
            body = bytes(buffer[: self.length])
            del buffer[: self.length]
            return self._response(body)
        if self.mode == "close":
            self._check_size(len(buffer))
            return None
        return self._chunked(buffer)

    def finish_at_close(self, buffer: bytearray) -> Response:
        """A close-delimited body ends when the server closes."""
        return Response(self.status, self.headers, bytes(buffer), keep_alive=False)

    def _head(self, buffer: bytearray) -> bool:
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > _HEAD_LIMIT:
                raise ValueError("response head too long")
            return False
        lines = buffer[:end].decode("latin-1").split("\r\n")
        del buffer[: end + 4]
        version, _, rest = lines[0].partition(" ")
        if not version.startswith("HTTP/1.") or not rest[:3].isdigit():
            raise ValueError(f"not an HTTP/1.x response: {lines[0][:80]!r}")
        self.status = int(rest[:3])
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if colon:
                self.headers[name.strip().lower()] = value.strip()
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            self.mode = "chunked"
        elif "content-length" in self.headers:
            text = self.headers["content-length"]
            if not text.isdigit():
                raise ValueError(f"bad Content-Length {text!r}")
            self.length = int(text)
            self._check_size(self.length)
            self.mode = "length"
        else:
            self.mode = "close"
        return True

    def _chunked(self, buffer: bytearray) -> Response | None:
        while True:
            if self.mode == "trailers":
                end = buffer.find(b"\r\n")
                if end < 0:
                    return None
                del buffer[: end + 2]
                if end == 0:
                    return self._response(b"".join(self.parts))
                continue
            if self.chunk is None:
                end = buffer.find(b"\r\n")
                if end < 0:
                    if len(buffer) > _CHUNK_LINE_LIMIT:
                        raise ValueError("chunk size line too long")
                    return None
                size = int(bytes(buffer[:end]).split(b";", 1)[0].strip(), 16)
                del buffer[: end + 2]
                if size == 0:
                    self.mode = "trailers"
                    continue
                self.length += size
                self._check_size(self.length)
                self.chunk = size
            if len(buffer) < self.chunk + 2:
                return None
            if buffer[self.chunk : self.chunk + 2] != b"\r\n":
                raise ValueError("chunk not followed by CRLF")
            self.parts.append(bytes(buffer[: self.chunk]))
            del buffer[: self.chunk + 2]
            self.chunk = None

    def _check_size(self, size: int) -> None:
        if size > self.max_bytes:
            raise ScrapeError("too_large", f"page over {self.max_bytes} bytes")

    def _response(self, body: bytes) -> Response:
        keep = self.headers.get("connection", "").lower() != "close"
        return Response(self.status, self.headers, body, keep)


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.closed = False
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[Response] | None = None
        self._parser = _ResponseParser(max_bytes)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    async def get(self, request: bytes) -> Response:
        assert self._transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._parser = _ResponseParser(self.max_bytes)
        self._transport.write(request)
        return await self._waiter

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        waiter = self._waiter
        if waiter is None or waiter.done():
            self.close()  # bytes nobody asked for: this connection is out of step
            return
        try:
            response = self._parser.feed(self._buffer)
        except (ValueError, ScrapeError) as error:
            waiter.set_exception(error)
            self.close()
            return
        if response is not None:
            waiter.set_result(response)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._parser.mode == "close":
            waiter.set_result(self._parser.finish_at_close(self._buffer))
        elif not self._parser.started and not self._buffer:
            waiter.set_exception(_StaleConnection("closed before answering"))
        else:
            waiter.set_exception(ValueError("connection closed mid-response"))

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()


class Scraper:
    """Fetches ``http://<endpoint><path>`` pages; reuses one idle connection per endpoint."""

    def __init__(
        self,
        path: str = "/metrics",
        timeout: float = 2.0,
        concurrency: int = 256,
        max_bytes: int = MAX_PAGE_BYTES,
    ) -> None:
        self.path = path
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.concurrency = concurrency
        self._idle: dict[str, _Connection] = {}

    async def fetch_all(self, endpoints: Iterable[str]) -> dict[str, bytes | ScrapeError]:
        """Every endpoint's page or its error; never raises for one endpoint's failure.

        ``concurrency`` workers share one queue of endpoints (cheaper than a semaphore,
        whose release scans every waiter), so at most that many requests are in flight.
        """
        endpoints = list(dict.fromkeys(endpoints))
        for gone in self._idle.keys() - set(endpoints):
            self._idle.pop(gone).close()  # that endpoint is no longer asked for
        results: dict[str, bytes | ScrapeError] = {}
        queue = iter(endpoints)

        async def worker() -> None:
            for endpoint in queue:
                results[endpoint] = await self._fetch_or_error(endpoint)

        await asyncio.gather(*(worker() for _ in range(min(self.concurrency, len(endpoints)))))
        return {endpoint: results[endpoint] for endpoint in endpoints}

    async def _fetch_or_error(self, endpoint: str) -> bytes | ScrapeError:
        try:
            return await self.fetch(endpoint)
        except ScrapeError as error:
            return error

    async def fetch(self, endpoint: str) -> bytes:
        """One page's body; raises :class:`ScrapeError`."""
        try:
            async with asyncio.timeout(self.timeout):
                response = await self._get(endpoint)
        except ScrapeError as error:
            raise ScrapeError(error.reason, f"{endpoint}: {error}") from None
        except TimeoutError:
            message = f"{endpoint}: no answer within {self.timeout:g}s"
            raise ScrapeError("timeout", message) from None
        except ValueError as error:
            raise ScrapeError("protocol", f"{endpoint}: {error}") from None
        except OSError as error:
            reason = "refused" if isinstance(error, ConnectionRefusedError) else "connection"
            raise ScrapeError(reason, f"{endpoint}: {error.strerror or error}") from None
        if response.status != 200:
            raise ScrapeError("http_status", f"{endpoint}: HTTP {response.status}")
        if response.headers.get("content-encoding", "identity").lower() != "identity":
            raise ScrapeError("protocol", f"{endpoint}: unrequested content encoding")
        return response.body

    async def _get(self, endpoint: str) -> Response:
        request = (
            f"GET {self.path} HTTP/1.1\r\nHost: {endpoint}\r\nAccept: text/plain\r\n"
            "Accept-Encoding: identity\r\nUser-Agent: meltguard\r\n\r\n"
        ).encode()
        idle = self._idle.pop(endpoint, None)
        if idle is not None and not idle.closed:
            try:
                return await self._exchange(endpoint, idle, request)
            except _StaleConnection:
                pass  # the server closed an idle keep-alive connection: retry on a new one
        host, port = split_endpoint(endpoint)
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(
            lambda: _Connection(self.max_bytes), host, port
        )
        try:
            return await self._exchange(endpoint, connection, request)
        except _StaleConnection:
            raise ValueError("connection closed without an answer") from None

    async def _exchange(self, endpoint: str, connection: _Connection, request: bytes) -> Response:
        try:
            response = await connection.get(request)
        except BaseException:
            connection.close()
            raise
        if response.keep_alive and not connection.closed and endpoint not in self._idle:
            self._idle[endpoint] = connection
        else:
            connection.close()
        return response

    async def close(self) -> None:
        """Close idle connections."""
        idle, self._idle = self._idle, {}
        for connection in idle.values():
            connection.close()
