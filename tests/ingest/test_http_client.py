"""The HTTP client against raw TCP servers that answer exactly the bytes a test chooses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from meltguard.ingest.http_client import MAX_PAGE_BYTES, ScrapeError, Scraper, split_endpoint

StartServer = Callable[[bytes | None], Awaitable[str]]  # reply (None: close unanswered) -> endpoint


@pytest.fixture
async def raw_server() -> AsyncIterator[StartServer]:
    servers: list[asyncio.Server] = []

    async def start(reply: bytes | None) -> str:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            if reply is not None:
                writer.write(reply)
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        return f"127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def fetch(endpoint: str, *, timeout: float = 2.0, max_bytes: int = MAX_PAGE_BYTES) -> bytes:
    """One page's body through a fresh client; raises its :class:`ScrapeError`."""
    scraper = Scraper(timeout=timeout, max_bytes=max_bytes)
    try:
        (outcome,) = (await scraper.fetch_all([endpoint])).values()
    finally:
        await scraper.close()
    if isinstance(outcome, ScrapeError):
        raise outcome
    return outcome


async def test_close_delimited_body(raw_server: StartServer) -> None:
    endpoint = await raw_server(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nup 1\n")
    assert await fetch(endpoint) == b"up 1\n"


async def test_chunked_body_with_extensions_and_trailers(
    raw_server: StartServer,
) -> None:
    reply = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nup 1\n\r\n3\r\nx 2\r\n0\r\nX-Trailer: yes\r\n\r\n"
    )
    assert await fetch(await raw_server(reply)) == b"up 1\nx 2"


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "protocol"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 12x\r\n\r\n", "protocol"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "protocol"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY", "protocol"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", "protocol"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 20000000\r\n\r\n", "too_large"),
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 2\r\n\r\nxx", "protocol"),
        (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", "http_status"),
        (None, "protocol"),
    ],
)
async def test_bad_answers_are_scrape_errors(
    raw_server: StartServer, reply: bytes | None, reason: str
) -> None:
    endpoint = await raw_server(reply)
    with pytest.raises(ScrapeError) as caught:
        await fetch(endpoint, timeout=2.0)
    assert caught.value.reason == reason
    assert str(caught.value).startswith(endpoint)


async def test_close_delimited_body_over_the_cap(
    raw_server: StartServer,
) -> None:
    endpoint = await raw_server(b"HTTP/1.0 200 OK\r\n\r\n" + b"x" * 2048)
    with pytest.raises(ScrapeError) as caught:
        await fetch(endpoint, max_bytes=1024)
    assert caught.value.reason == "too_large"


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [("10.0.0.7:9400", ("10.0.0.7", 9400)), ("[fd00::7]:9400", ("fd00::7", 9400))],
)
def test_split_endpoint(endpoint: str, expected: tuple[str, int]) -> None:
    assert split_endpoint(endpoint) == expected


@pytest.mark.parametrize("endpoint", ["10.0.0.7", "10.0.0.7:http", ":9400", "host:0", "host:70000"])
def test_malformed_endpoints_are_refused(endpoint: str) -> None:
    with pytest.raises(ValueError, match="is not HOST:PORT"):
        split_endpoint(endpoint)


async def test_malformed_endpoint_is_a_scrape_error_not_a_crash() -> None:
    with pytest.raises(ScrapeError) as caught:
        await fetch("no-port-here")
    assert caught.value.reason == "protocol"


async def test_connections_to_endpoints_no_longer_asked_for_are_closed() -> None:
    closed: dict[int, asyncio.Event] = {}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        port = writer.get_extra_info("sockname")[1]
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nup 1\n")
        except asyncio.IncompleteReadError:
            closed[port].set()  # the client hung up
        writer.close()

    servers = [await asyncio.start_server(handle, "127.0.0.1", 0) for _ in range(2)]
    ports = [server.sockets[0].getsockname()[1] for server in servers]
    closed.update({port: asyncio.Event() for port in ports})
    first, second = (f"127.0.0.1:{port}" for port in ports)
    scraper = Scraper()
    try:
        assert await scraper.fetch_all([first, second]) == {first: b"up 1\n", second: b"up 1\n"}
        assert await scraper.fetch_all([first]) == {first: b"up 1\n"}
        await asyncio.wait_for(closed[ports[1]].wait(), timeout=5)
        assert not closed[ports[0]].is_set()  # still kept alive for the next scrape
    finally:
        await scraper.close()
        for server in servers:
            server.close()
            await server.wait_closed()


class _CountingServer:
    """Answers each request after ``delay`` seconds, counting requests in flight at once;
    ``hung_up`` is set once a client closes its connection."""

    def __init__(self, delays: list[float]) -> None:
        self.delays = delays
        self.in_flight = 0
        self.most_in_flight = 0
        self.hung_up = asyncio.Event()
        self.servers: list[asyncio.Server] = []

    async def start(self) -> list[str]:
        for delay in self.delays:
            server = await asyncio.start_server(
                lambda r, w, delay=delay: self._handle(r, w, delay), "127.0.0.1", 0
            )
            self.servers.append(server)
        return [f"127.0.0.1:{server.sockets[0].getsockname()[1]}" for server in self.servers]

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float
    ) -> None:
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                self.in_flight += 1
                self.most_in_flight = max(self.most_in_flight, self.in_flight)
                try:  # wait out the delay, unless the client hangs up first
                    await asyncio.wait_for(reader.read(1), timeout=delay)
                    break
                except TimeoutError:
                    pass
                finally:
                    self.in_flight -= 1
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nup 1\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        self.hung_up.set()
        writer.close()

    async def stop(self) -> None:
        for server in self.servers:
            server.close()


async def test_requests_in_flight_stay_within_the_bound_each_with_its_own_timeout() -> None:
    server = _CountingServer([0.3] * 6)
    endpoints = await server.start()
    scraper = Scraper(timeout=0.5, concurrency=2)
    try:
        started = asyncio.get_running_loop().time()
        pages = await scraper.fetch_all(endpoints)
        elapsed = asyncio.get_running_loop().time() - started
    finally:
        await scraper.close()
        await server.stop()
    # three rounds of two: every request took 0.3 s of its own 0.5 s, none timed out
    assert pages == {endpoint: b"up 1\n" for endpoint in endpoints}
    assert server.most_in_flight == 2
    assert elapsed >= 0.85


async def test_a_hung_endpoint_times_out_while_the_others_are_served() -> None:
    server = _CountingServer([30.0, 0.0, 0.0, 0.0, 0.0])
    hung, *others = await server.start()
    scraper = Scraper(timeout=0.5, concurrency=2)
    try:
        started = asyncio.get_running_loop().time()
        pages = await scraper.fetch_all([hung, *others])
        elapsed = asyncio.get_running_loop().time() - started
    finally:
        await scraper.close()
        await server.stop()
    failure = pages.pop(hung)
    assert isinstance(failure, ScrapeError) and failure.reason == "timeout"
    assert str(failure) == f"{hung}: no answer within 0.5s"
    assert pages == {endpoint: b"up 1\n" for endpoint in others}
    assert elapsed < 2.0


async def test_a_cancelled_scrape_hangs_up_its_connections() -> None:
    server = _CountingServer([30.0])
    endpoints = await server.start()
    scraper = Scraper(timeout=60.0)
    fetching = asyncio.create_task(scraper.fetch_all(endpoints))
    try:
        while server.in_flight == 0:
            await asyncio.sleep(0.01)
        fetching.cancel()
        with pytest.raises(asyncio.CancelledError):
            await fetching
        await asyncio.wait_for(server.hung_up.wait(), timeout=5)
    finally:
        await scraper.close()
        await server.stop()
