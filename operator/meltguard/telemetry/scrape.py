"""Concurrent HTTP/1.1 GETs of metrics pages over keep-alive connections.

Why not aiohttp's client here: an ingest scrapes ~1,000 exporter pages every few seconds,
and on the 2-core reference machine aiohttp's per-request overhead alone (~0.3 ms) takes
the whole 250 ms ingest budget (measured by ``bench/telemetry.py``). Scraping needs only a
tiny slice of HTTP: GET, ``Content-Length`` or chunked bodies, keep-alive. This client does
exactly that over asyncio streams, with a per-request timeout covering connect and read,
a bound on concurrent requests, and a hard cap on page size that is checked before a
body is buffered. Anything else a server answers (another status, a compressed body we did
not ask for, a malformed header) is a :class:`ScrapeError`, never a crash.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

MAX_PAGE_BYTES = 10 * 1024 * 1024
_HEADER_LIMIT = 64 * 1024


class ScrapeError(Exception):
    """A page could not be fetched; ``reason`` is a short metric label (timeout, refused...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """``host:port`` (IPv6 as ``[addr]:port``) -> (host, port); ValueError when malformed."""
    host, colon, port = endpoint.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"endpoint {endpoint!r} is not HOST:PORT")
    return host, int(port)


_Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Scraper:
    """Fetches ``http://<endpoint><path>`` pages; reuses one idle connection per endpoint."""

    def __init__(
        self,
        path: str = "/metrics",
        timeout: float = 2.0,
        concurrency: int = 128,
        max_bytes: int = MAX_PAGE_BYTES,
    ) -> None:
        self.path = path
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._limit = asyncio.Semaphore(concurrency)
        self._idle: dict[str, _Connection] = {}

    async def fetch_all(self, endpoints: Iterable[str]) -> dict[str, bytes | ScrapeError]:
        """Every endpoint's page or its error; never raises for one endpoint's failure."""
        endpoints = list(dict.fromkeys(endpoints))
        results = await asyncio.gather(*(self._fetch_or_error(e) for e in endpoints))
        return dict(zip(endpoints, results, strict=True))

    async def _fetch_or_error(self, endpoint: str) -> bytes | ScrapeError:
        try:
            return await self.fetch(endpoint)
        except ScrapeError as error:
            return error

    async def fetch(self, endpoint: str) -> bytes:
        """One page's body; raises :class:`ScrapeError`."""
        async with self._limit:
            try:
                async with asyncio.timeout(self.timeout):
                    return await self._fetch_retrying_stale(endpoint)
            except TimeoutError:
                raise ScrapeError(
                    "timeout", f"{endpoint}: no answer within {self.timeout:g}s"
                ) from None
            except (ValueError, asyncio.LimitOverrunError) as error:
                raise ScrapeError("protocol", f"{endpoint}: {error}") from None
            except OSError as error:
                reason = "refused" if isinstance(error, ConnectionRefusedError) else "connection"
                raise ScrapeError(reason, f"{endpoint}: {error.strerror or error}") from None

    async def _fetch_retrying_stale(self, endpoint: str) -> bytes:
        idle = self._idle.pop(endpoint, None)
        if idle is not None:
            try:
                return await self._request(endpoint, idle)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass  # the server closed an idle keep-alive connection: retry on a new one
        host, port = split_endpoint(endpoint)
        connection = await asyncio.open_connection(host, port, limit=_HEADER_LIMIT)
        try:
            return await self._request(endpoint, connection)
        except asyncio.IncompleteReadError:
            raise ScrapeError("protocol", f"{endpoint}: connection closed mid-response") from None

    async def _request(self, endpoint: str, connection: _Connection) -> bytes:
        reader, writer = connection
        keep = False
        try:
            writer.write(
                f"GET {self.path} HTTP/1.1\r\nHost: {endpoint}\r\nAccept: text/plain\r\n"
                "Accept-Encoding: identity\r\nUser-Agent: meltguard\r\n\r\n".encode()
            )
            status, headers = await _read_head(reader)
            body = await self._read_body(reader, headers, endpoint)
            keep = headers.get("connection", "").lower() != "close"
            if status != 200:
                raise ScrapeError("http_status", f"{endpoint}: HTTP {status}")
            if headers.get("content-encoding", "identity").lower() != "identity":
                raise ScrapeError("protocol", f"{endpoint}: unrequested content encoding")
            return body
        finally:
            if keep and self._idle.get(endpoint) is None:
                self._idle[endpoint] = connection
            else:
                writer.close()

    async def _read_body(
        self, reader: asyncio.StreamReader, headers: dict[str, str], endpoint: str
    ) -> bytes:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return await self._read_chunked(reader, endpoint)
        length_text = headers.get("content-length")
        if length_text is None:
            headers["connection"] = "close"
            body = await reader.read(self.max_bytes + 1)
            while len(body) <= self.max_bytes and (more := await reader.read(self.max_bytes + 1)):
                body += more
            self._check_size(len(body), endpoint)
            return body
        if not length_text.isdigit():
            raise ValueError(f"bad Content-Length {length_text!r}")
        self._check_size(int(length_text), endpoint)
        return await reader.readexactly(int(length_text))

    async def _read_chunked(self, reader: asyncio.StreamReader, endpoint: str) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass  # trailers
                return b"".join(parts)
            total += size
            self._check_size(total, endpoint)
            parts.append(await reader.readexactly(size))
            if await reader.readexactly(2) != b"\r\n":
                raise ValueError("chunk not followed by CRLF")

    def _check_size(self, size: int, endpoint: str) -> None:
        if size > self.max_bytes:
            raise ScrapeError("too_large", f"{endpoint}: page over {self.max_bytes} bytes")

    async def close(self) -> None:
        """Close idle connections."""
        idle, self._idle = self._idle, {}
        for _, writer in idle.values():
            writer.close()


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise ValueError("response headers too long") from None
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise ValueError(f"not an HTTP/1.x response: {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return int(code), headers
