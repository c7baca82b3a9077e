"""Connections cannot starve the server: read timeouts, a connection cap, a bounded shutdown."""

from __future__ import annotations

import contextlib
import resource
import signal
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import launch_quota_server, quotas_json

pytestmark = pytest.mark.slow

IDLE_CONNECTIONS = 2000
HALF_HEADERS = b"POST /v1/consume HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
HALF_BODY = (
    b"POST /v1/consume HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b'Content-Length: 80\r\n\r\n{"policy": "inference/imagegen", '
)


@contextlib.contextmanager
def open_files(soft_limit: int) -> Iterator[None]:
    """This process's soft open-files limit set to ``soft_limit`` (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < soft_limit:
        pytest.skip(f"the hard open-files limit ({hard}) is below {soft_limit}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft_limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def metric(url: str, name: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        lines = response.read().decode().splitlines()
    return next(float(line.split()[1]) for line in lines if line.startswith(name + " "))


def connect(port: int, sent: bytes) -> socket.socket:
    client = socket.create_connection(("127.0.0.1", port), timeout=5)
    if sent:
        client.sendall(sent)
    return client


def is_closed_by_server(client: socket.socket, wait: float) -> bool:
    """True once the server closed ``client`` (EOF or reset), waiting at most ``wait``."""
    client.settimeout(wait)
    try:
        while client.recv(4096):
            pass  # an answer (408), then EOF
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def timed_consume(url: str) -> tuple[int, float]:
    request = urllib.request.Request(
        f"{url}/v1/consume",
        data=b'{"policy": "inference/imagegen", "tier": "free", "subject": "u"}',
        headers={"Content-Type": "application/json"},
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, time.perf_counter() - started


def limits_file(tmp_path: Path) -> str:
    path = tmp_path / "quotas.json"
    path.write_text(quotas_json(free=100))
    return str(path)


def test_two_thousand_idle_connections_neither_starve_a_request_nor_stay_open(
    tmp_path: Path,
) -> None:
    log = tmp_path / "server.log"
    with log.open("wb") as sink, open_files(1024):  # the server starts with 1,024 files
        server, url = launch_quota_server(
            "--limits", limits_file(tmp_path), "--read-timeout", "5", "--max-connections",
            "500", log=sink,
        )  # fmt: skip
    port = int(url.rsplit(":", 1)[1])
    idle: list[socket.socket] = []
    try:
        with open_files(IDLE_CONNECTIONS + 256):
            started = time.monotonic()
            for n in range(IDLE_CONNECTIONS):  # half send nothing, half a slow header
                idle.append(connect(port, b"" if n % 2 else HALF_HEADERS))
            status, seconds = timed_consume(url)
            print(f"{IDLE_CONNECTIONS} idle connections opened in "
                  f"{time.monotonic() - started:.1f} s; a request then took "
                  f"{seconds * 1000:.1f} ms")  # fmt: skip
            assert status == 200
            assert seconds < 1  # before the cap it was never answered (no fd left)
            open_now = metric(url, "meltguard_quota_connections_open")
            evicted = metric(url, "meltguard_quota_connections_evicted_total")
            print(f"open: {open_now}, evicted to make room: {evicted}")
            assert open_now <= 500
            assert evicted > 0
            time.sleep(5)  # the read timeout
            still_open = [c for c in idle if not is_closed_by_server(c, wait=2)]
            assert still_open == []
    finally:
        for client in idle:
            client.close()
        server.send_signal(signal.SIGTERM)
        server.wait(20)
    text = log.read_text()
    assert "out of system resource" not in text
    assert "Traceback" not in text


def test_a_half_sent_body_is_answered_408_after_the_read_timeout(tmp_path: Path) -> None:
    server, url = launch_quota_server("--limits", limits_file(tmp_path), "--read-timeout", "1")
    port = int(url.rsplit(":", 1)[1])
    try:
        with contextlib.closing(connect(port, HALF_BODY)) as client:
            client.settimeout(5)
            answer = client.recv(4096)
        print(answer.decode())
        assert answer.startswith(b"HTTP/1.1 408")
        assert b'"field":"body"' in answer
        assert b"Connection: close" in answer
        assert timed_consume(url)[0] == 200
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(20)


def test_sigterm_with_a_half_sent_body_exits_within_ten_seconds(tmp_path: Path) -> None:
    server, url = launch_quota_server("--limits", limits_file(tmp_path), "--read-timeout", "60")
    port = int(url.rsplit(":", 1)[1])
    with contextlib.closing(connect(port, HALF_BODY)):
        time.sleep(0.2)  # the request is in its handler, waiting for the body
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(10)
        finally:
            server.kill()
        print(f"exited {code} after {time.monotonic() - started:.1f} s")
    assert code == 0
