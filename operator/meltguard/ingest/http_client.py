"""Concurrent HTTP/1.1 GETs of metrics pages over keep-alive connections.

Why not aiohttp's client here: an ingest scrapes every exporter of the fleet every few
seconds, and aiohttp's per-request cost is well above this client's (``bench/telemetry.py``
prints both), which would eat most of an ingest's time budget. Scraping needs only a tiny
slice of HTTP: GET, a ``Content-Length``, chunked or close-delimited body, keep-alive. This
client does exactly that on an asyncio protocol, with a per-request timeout covering connect
and read, a bound on requests in flight, and a hard cap on page size checked before a body
is buffered. Anything else a server answers (another status, a compressed body we did not
ask for, a malformed head) is a :class:`ScrapeError`, never a crash.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import KW_ONLY, dataclass

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
    """One answer: status, headers (names lower-cased), body, and whether the connection
    may carry the next request."""

    status: int
    headers: dict[str, str]
    body: bytes
    _: KW_ONLY
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
            body = bytes(memoryview(buffer)[: self.length])  # one copy, not two
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
            self.parts.append(bytes(memoryview(buffer)[: self.chunk]))
            del buffer[: self.chunk + 2]
            self.chunk = None

    def _check_size(self, size: int) -> None:
        if size > self.max_bytes:
            raise ScrapeError("too_large", f"page over {self.max_bytes} bytes")

    def _response(self, body: bytes) -> Response:
        keep = self.headers.get("connection", "").lower() != "close"
        return Response(self.status, self.headers, body, keep_alive=keep)


Answer = Callable[["Response | Exception"], None]


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time.

    The answer (a :class:`Response`, or the exception that ended the exchange) goes to the
    callback given with the request, exactly once; :meth:`abandon` withdraws it.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.closed = False
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._parser = _ResponseParser(max_bytes)
        self._on_answer: Answer | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def request(self, request: bytes, on_answer: Answer) -> None:
        assert self._transport is not None
        self._on_answer = on_answer
        self._parser = _ResponseParser(self.max_bytes)
        self._transport.write(request)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._on_answer is None:
            self.close()  # bytes nobody asked for: this connection is out of step
            return
        try:
            response = self._parser.feed(self._buffer)
        except (ValueError, ScrapeError) as error:
            self.close()
            self._answer(error)
            return
        if response is not None:
            self._answer(response)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._on_answer is None:
            return
        if self._parser.mode == "close":
            self._answer(self._parser.finish_at_close(self._buffer))
        elif not self._parser.started and not self._buffer:
            self._answer(_StaleConnection("closed before answering"))
        else:
            self._answer(ValueError("connection closed mid-response"))

    def _answer(self, outcome: Response | Exception) -> None:
        on_answer, self._on_answer = self._on_answer, None
        if on_answer is not None:
            on_answer(outcome)

    def abandon(self) -> None:
        """Give up on the request in flight: no answer will be reported."""
        self._on_answer = None
        self.close()

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()


class _Fetch:
    """One endpoint's request within a :class:`_Batch`, driven by callbacks, not a task.

    ``deadline`` (loop time) bounds connect plus answer; the batch enforces it. A
    kept-alive connection that the server closed before answering is retried once on a
    new connection.
    """

    def __init__(self, batch: _Batch, endpoint: str) -> None:
        self.batch = batch
        self.endpoint = endpoint
        self.scraper = batch.scraper
        self.finished = False
        self.connection: _Connection | None = None
        self.connecting: asyncio.Task[None] | None = None
        self.deadline = batch.loop.time() + self.scraper.timeout

    def start(self) -> None:
        idle = self.scraper.take_idle(self.endpoint)
        if idle is not None:
            self.connection = idle
            idle.request(self.scraper.request_for(self.endpoint), self._answered_on_kept)
        else:
            self.connecting = self.batch.loop.create_task(self._connect())

    def _answered_on_kept(self, outcome: Response | Exception) -> None:
        if isinstance(outcome, _StaleConnection):
            self.connecting = self.batch.loop.create_task(self._connect())
        else:
            self._answered(outcome)

    async def _connect(self) -> None:
        try:
            host, port = split_endpoint(self.endpoint)
            _, connection = await self.batch.loop.create_connection(
                lambda: _Connection(self.scraper.max_bytes), host, port
            )
        except (OSError, ValueError) as error:
            self._finish(error)
            return
        self.connecting = None
        self.connection = connection
        connection.request(self.scraper.request_for(self.endpoint), self._answered)

    def _answered(self, outcome: Response | Exception) -> None:
        connection = self.connection
        assert connection is not None
        if isinstance(outcome, Response) and outcome.keep_alive and not connection.closed:
            self.scraper.keep_idle(self.endpoint, connection)
        else:
            connection.close()
        if isinstance(outcome, _StaleConnection):
            outcome = ValueError("connection closed without an answer")
        self._finish(outcome)

    def time_out(self) -> None:
        self.abandon()
        self._finish(TimeoutError())

    def abandon(self) -> None:
        """Stop waiting: close the connection, stop connecting."""
        if self.connecting is not None:
            self.connecting.cancel()
        if self.connection is not None:
            self.connection.abandon()

    def _finish(self, outcome: Response | Exception) -> None:
        if not self.finished:
            self.finished = True
            self.batch.finish(self.endpoint, self.scraper.page_or_error(self.endpoint, outcome))


class _Batch:
    """One :meth:`Scraper.fetch_all`: keeps up to ``concurrency`` requests in flight, each
    answer starting the next endpoint's request.

    Every request gets the same timeout and requests start in order, so the oldest one in
    flight has the nearest deadline: one timer, set for it, serves them all (a timer per
    request was a measurable share of a scrape's cost).
    """

    def __init__(self, scraper: Scraper, endpoints: list[str]) -> None:
        self.scraper = scraper
        self.loop = asyncio.get_running_loop()
        self.results: dict[str, bytes | ScrapeError] = {}
        self.done: asyncio.Future[None] = self.loop.create_future()
        self._waiting = iter(endpoints)
        #: in start order, so the first one has the nearest deadline
        self._in_flight: dict[str, _Fetch] = {}
        self._starting = False
        self._timer: asyncio.TimerHandle | None = None

    async def run(self, concurrency: int) -> dict[str, bytes | ScrapeError]:
        for _ in range(concurrency):
            if not self._start_next():
                break
        self._check_done()
        self._watch_deadlines()
        try:
            await self.done
        except asyncio.CancelledError:
            for fetch in self._in_flight.values():
                fetch.abandon()
            raise
        finally:
            if self._timer is not None:
                self._timer.cancel()
        return self.results

    def _watch_deadlines(self) -> None:
        """Time out every request past its deadline, then wake again at the next one."""
        now = self.loop.time()
        while self._in_flight:
            oldest = next(iter(self._in_flight.values()))
            if oldest.deadline > now:
                self._timer = self.loop.call_at(oldest.deadline, self._watch_deadlines)
                return
            oldest.time_out()

    def _start_next(self) -> bool:
        endpoint = next(self._waiting, None)
        if endpoint is None:
            return False
        fetch = self._in_flight[endpoint] = _Fetch(self, endpoint)
        fetch.start()
        return True

    def finish(self, endpoint: str, outcome: bytes | ScrapeError) -> None:
        self.results[endpoint] = outcome
        del self._in_flight[endpoint]
        if not self._starting:  # an answer given while starting must not recurse
            self._starting = True
            try:
                while len(self._in_flight) < self.scraper.concurrency and self._start_next():
                    pass
            finally:
                self._starting = False
        self._check_done()

    def _check_done(self) -> None:
        if not self._in_flight and not self.done.done():
            self.done.set_result(None)


class Scraper:
    """Fetches ``http://<endpoint><path>`` pages; reuses one idle connection per endpoint."""

    def __init__(
        self,
        *,
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

        At most ``concurrency`` requests are in flight. Requests are driven by protocol
        callbacks, with no task and no timer of their own (see :class:`_Batch`), so a page
        costs the event loop little more than its write and its read.
        """
        endpoints = list(dict.fromkeys(endpoints))
        for gone in self._idle.keys() - set(endpoints):
            self._idle.pop(gone).close()  # that endpoint is no longer asked for
        results = await _Batch(self, endpoints).run(self.concurrency)
        return {endpoint: results[endpoint] for endpoint in endpoints}

    def request_for(self, endpoint: str) -> bytes:
        return (
            f"GET {self.path} HTTP/1.1\r\nHost: {endpoint}\r\nAccept: text/plain\r\n"
            "Accept-Encoding: identity\r\nUser-Agent: meltguard\r\n\r\n"
        ).encode()

    def page_or_error(self, endpoint: str, outcome: Response | Exception) -> bytes | ScrapeError:
        """The page of a good answer; a :class:`ScrapeError` naming the endpoint else."""
        if isinstance(outcome, Response):
            return self._page(endpoint, outcome)
        if isinstance(outcome, ScrapeError):
            return ScrapeError(outcome.reason, f"{endpoint}: {outcome}")
        if isinstance(outcome, TimeoutError):
            return ScrapeError("timeout", f"{endpoint}: no answer within {self.timeout:g}s")
        if isinstance(outcome, ValueError):
            return ScrapeError("protocol", f"{endpoint}: {outcome}")
        if isinstance(outcome, OSError):
            reason = "refused" if isinstance(outcome, ConnectionRefusedError) else "connection"
            return ScrapeError(reason, f"{endpoint}: {outcome.strerror or outcome}")
        return ScrapeError("connection", f"{endpoint}: {outcome!r}")

    @staticmethod
    def _page(endpoint: str, response: Response) -> bytes | ScrapeError:
        if response.status != 200:
            return ScrapeError("http_status", f"{endpoint}: HTTP {response.status}")
        if response.headers.get("content-encoding", "identity").lower() != "identity":
            return ScrapeError("protocol", f"{endpoint}: unrequested content encoding")
        return response.body

    def take_idle(self, endpoint: str) -> _Connection | None:
        """The endpoint's kept-alive connection, if it has one still open."""
        idle = self._idle.pop(endpoint, None)
        return idle if idle is not None and not idle.closed else None

    def keep_idle(self, endpoint: str, connection: _Connection) -> None:
        """Keep a connection for the endpoint's next request (one per endpoint)."""
        if endpoint in self._idle:
            connection.close()
        else:
            self._idle[endpoint] = connection

    async def close(self) -> None:
        """Close idle connections."""
        idle, self._idle = self._idle, {}
        for connection in idle.values():
            connection.close()
