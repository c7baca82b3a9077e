"""Benchmark the quota service over loopback against a bare aiohttp handler, in one run.

Each server runs in its own process (the bare handler answering a constant JSON body, the
quota service with the memory store, and with Redis when ``redis-server`` is installed); a
concurrent keep-alive HTTP/1.1 client in this process sends a fixed number of ``POST /v1/consume``
requests and measures decisions/s and latency. Then it offers each server half of its own
peak rate, paced, and measures latency again. Every figure is the median of ``--repeats``.

    .venv/bin/python bench/quota.py [--requests 20000] [--concurrency 32] [--repeats 3]

Targets (issue 5): memory store >= 50% of the bare handler's throughput, Redis >= 30%, and
p99 <= 5 ms at half of peak. The last column, the server process's CPU time per decision,
is the figure least disturbed by other work on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

POLICY = "bench/imagegen"
LIMITS = {
    "policy": POLICY,
    "observedGeneration": 1,
    "phase": "Cool",
    "updated": "2026-11-23T00:00:00Z",
    "tiers": [{"name": "free", "limit": 10**12, "baseline": 10**12, "windowSeconds": 86400}],
}
SUBJECTS = 1000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serve(kind: str, port: int, store: str) -> None:
    """Process entry point: serve the bare handler or the quota service until killed."""
    from aiohttp import web

    if kind == "bare":
        body = json.dumps({"allowed": True, "tier": "free", "limit": 3, "remaining": 2})

        async def constant(request: web.Request) -> web.Response:
            return web.Response(text=body, content_type="application/json")

        app = web.Application()
        app.router.add_post("/v1/consume", constant)
        app.router.add_get("/healthz", constant)
        web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)
        return
    from meltguard.api.quotas import parse_quota_document
    from meltguard.quota.app import create_app
    from meltguard.quota.limits import LimitsRegistry
    from meltguard.quota.metrics import QuotaMetrics
    from meltguard.quota.server import open_store
    from meltguard.quota.service import QuotaService

    registry = LimitsRegistry()
    registry.put("bench", parse_quota_document(json.dumps(LIMITS)))
    service = QuotaService(registry, open_store(store), QuotaMetrics())
    web.run_app(create_app(service), host="127.0.0.1", port=port, print=None, access_log=None)


@dataclass
class Run:
    rate: float
    p50_ms: float
    p99_ms: float
    refused: int


class Connection:
    """A minimal keep-alive HTTP/1.1 client: far lighter than aiohttp's, so that on a small
    machine the servers, not the client, set the pace."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def consume(self, n: int) -> int:
        """POST /v1/consume for one of SUBJECTS subjects; returns the status code."""
        body = json.dumps({"policy": POLICY, "tier": "free", "subject": f"user-{n % SUBJECTS}"})
        self.writer.write(
            b"POST /v1/consume HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body.encode())
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await self.reader.readexactly(length)
        return int(head[9:12])

    def close(self) -> None:
        self.writer.close()


async def _one(connection: Connection, n: int, latencies: list[float]) -> bool:
    started = time.perf_counter()
    status = await connection.consume(n)
    latencies.append(time.perf_counter() - started)
    return status == 200


def _summary(latencies: list[float], elapsed: float, failures: int) -> Run:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return Run(len(latencies) / elapsed, statistics.median(ordered) * 1e3, p99 * 1e3, failures)


async def closed_loop(port: int, requests: int, concurrency: int) -> Run:
    """``concurrency`` connections send ``requests`` back to back: the peak rate."""
    latencies: list[float] = []
    failures = 0
    counter = iter(range(requests))
    connections = [await Connection.open(port) for _ in range(concurrency)]

    async def worker(connection: Connection) -> None:
        nonlocal failures
        for n in counter:
            failures += not await _one(connection, n, latencies)

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in connections))
    elapsed = time.perf_counter() - started
    for connection in connections:
        connection.close()
    return _summary(latencies, elapsed, failures)


async def paced(port: int, requests: int, rate: float, concurrency: int) -> Run:
    """Offered load: ``concurrency`` connections each send at ``rate / concurrency`` per
    second on a fixed schedule (request ``k`` of a connection is due at ``k x concurrency /
    rate``, staggered); a late answer makes the next send late, which shows as a lower rate."""
    latencies: list[float] = []
    failures = 0
    interval = concurrency / rate
    connections = [await Connection.open(port) for _ in range(concurrency)]
    started = time.perf_counter()

    async def worker(index: int, connection: Connection) -> None:
        nonlocal failures
        for k in range(index, requests, concurrency):
            due = started + (k // concurrency) * interval + index * interval / concurrency
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            failures += not await _one(connection, k, latencies)

    await asyncio.gather(*(worker(i, c) for i, c in enumerate(connections)))
    elapsed = time.perf_counter() - started
    for connection in connections:
        connection.close()
    return _summary(latencies, elapsed, failures)


def wait_ready(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server on port {port} did not start")


def median_run(runs: list[Run]) -> Run:
    return Run(
        statistics.median(r.rate for r in runs),
        statistics.median(r.p50_ms for r in runs),
        statistics.median(r.p99_ms for r in runs),
        sum(r.refused for r in runs),
    )


def start_server(kind: str, store: str) -> tuple[multiprocessing.process.BaseProcess, int]:
    port = free_port()
    process = multiprocessing.get_context("spawn").Process(
        target=serve, args=(kind, port, store), daemon=True
    )
    process.start()
    wait_ready(port)
    return process, port


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    servers: dict[str, tuple[int, int]], args: argparse.Namespace
) -> tuple[dict[str, tuple[Run, Run]], dict[str, float]]:
    """(peak, half-peak) medians per server, and the server's median CPU microseconds per
    decision at peak (its own process: steadier than rates on a busy machine). Servers take
    turns within each repeat, so a load spike hits them all alike instead of skewing one."""
    ports = {label: port for label, (_, port) in servers.items()}
    peaks: dict[str, list[Run]] = {label: [] for label in ports}
    halves: dict[str, list[Run]] = {label: [] for label in ports}
    cpu: dict[str, list[float]] = {label: [] for label in ports}
    for port in ports.values():
        asyncio.run(closed_loop(port, min(2000, args.requests), args.concurrency))  # warm up
    for _ in range(args.repeats):
        for label, (pid, port) in servers.items():
            before = cpu_seconds(pid)
            peaks[label].append(asyncio.run(closed_loop(port, args.requests, args.concurrency)))
            cpu[label].append((cpu_seconds(pid) - before) / args.requests * 1e6)
    for _ in range(args.repeats):
        for label, port in ports.items():
            rate = median_run(peaks[label]).rate / 2
            halves[label].append(
                asyncio.run(paced(port, args.requests // 2, rate, args.concurrency))
            )
    runs = {label: (median_run(peaks[label]), median_run(halves[label])) for label in ports}
    return runs, {label: statistics.median(values) for label, values in cpu.items()}


def start_redis(directory: str) -> tuple[subprocess.Popen[bytes], str] | None:
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            directory,
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    wait_ready(port)
    return process, f"redis://127.0.0.1:{port}/0"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000, help="requests per measurement")
    parser.add_argument("--concurrency", type=int, default=32, help="client connections")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per figure")
    args = parser.parse_args()
    kinds = [("bare handler", "bare", ""), ("memory store", "quota", "memory")]
    with tempfile.TemporaryDirectory() as scratch:
        redis = start_redis(scratch)
        if redis is None:
            print("redis-server not installed: the Redis store is not measured", file=sys.stderr)
        else:
            kinds.append(("redis store", "quota", redis[1]))
        servers = {label: start_server(kind, store) for label, kind, store in kinds}
        try:
            pids = {label: (p.pid or 0, port) for label, (p, port) in servers.items()}
            results, cpu = measure(pids, args)
        finally:
            for process, _ in servers.values():
                process.kill()
            if redis is not None:
                redis[0].kill()
    report(results, cpu, args)
    return 0


def report(
    results: dict[str, tuple[Run, Run]], cpu: dict[str, float], args: argparse.Namespace
) -> None:
    print(
        f"quota service over loopback: {args.requests} requests x {args.repeats} runs, "
        f"{args.concurrency} connections, medians"
    )
    print(
        f"{'server':<14}{'decisions/s':>12}{'vs bare':>9}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'  | half-peak/s':>15}{'p50 ms':>8}{'p99 ms':>8}{'non-200':>9}{'cpu us/dec':>12}"
    )
    bare = results["bare handler"][0].rate
    for label, (peak, half) in results.items():
        print(
            f"{label:<14}{peak.rate:>12.0f}{peak.rate / bare:>9.0%}{peak.p50_ms:>8.2f}"
            f"{peak.p99_ms:>8.2f}{half.rate:>15.0f}{half.p50_ms:>8.2f}{half.p99_ms:>8.2f}"
            f"{peak.refused + half.refused:>9}{cpu[label]:>12.0f}"
        )
    targets = [("memory store", 0.50), ("redis store", 0.30)]
    for label, share in targets:
        if label in results:
            peak, half = results[label]
            print(
                f"target {label}: >= {share:.0%} of bare -> {peak.rate / bare:.0%} "
                f"({'met' if peak.rate >= share * bare else 'MISSED'}); "
                f"p99 at half peak <= 5 ms -> {half.p99_ms:.2f} ms "
                f"({'met' if half.p99_ms <= 5 else 'MISSED'})"
            )


if __name__ == "__main__":
    sys.exit(main())
