"""Run the quota service: build the store, the limits sources and the app, serve until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from aiohttp import web

from meltguard.quota.app import create_app, create_metrics_app
from meltguard.quota.auth import TokenFile
from meltguard.quota.connections import CappedRunner, ConnectionCap, fit_open_files
from meltguard.quota.grpc_service import RateLimitServicer, start_grpc_server
from meltguard.quota.limits import LimitsRegistry
from meltguard.quota.memory_store import DEFAULT_MAX_REQUESTS, MemoryStore
from meltguard.quota.metrics import QuotaMetrics
from meltguard.quota.redis_clients import CLUSTER_SCHEME
from meltguard.quota.redis_store import RedisStore, redacted_url
from meltguard.quota.service import OnStoreError, QuotaService
from meltguard.quota.sources import FileLimitsSource
from meltguard.quota.store import QuotaStore

if TYPE_CHECKING:  # imported when used: only --watch-configmaps needs lightkube
    from meltguard.quota.configmaps import ConfigMapLimitsSource

log = logging.getLogger(__name__)

#: How long in-flight gRPC calls may finish after SIGTERM.
GRPC_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class ServerOptions:
    """The quota-server flags."""

    host: str = "0.0.0.0"
    port: int = 8080
    store_url: str = "memory"
    limits_path: str | None = None
    watch_namespace: str | None = None
    on_store_error: OnStoreError = "open"
    reload_interval: float = 1.0
    store_timeout: float = 1.0
    fail_open_seconds: float = 300.0
    read_timeout: float = 10.0
    max_connections: int = 1000
    max_request_ids: int = DEFAULT_MAX_REQUESTS
    #: Envoy's rate limit API; 0 turns it off
    grpc_port: int = 8081
    strict: bool = False
    #: a caller-name:token file; None leaves the API open
    auth_tokens: str | None = None
    #: /metrics on this port only; 0 keeps it on the API port
    metrics_port: int = 0


def open_store(
    url: str, timeout_seconds: float = 1.0, max_request_ids: int = DEFAULT_MAX_REQUESTS
) -> QuotaStore:
    """``memory``, a ``redis://`` / ``rediss://`` / ``unix://`` URL, or a
    ``redis-cluster://HOST:PORT[,HOST:PORT...]`` URL (a ValueError names what is wrong)."""
    if url == "memory":
        return MemoryStore(max_request_ids)
    if url.startswith(("redis://", "rediss://", "unix://", f"{CLUSTER_SCHEME}://")):
        return RedisStore(url, timeout_seconds)
    raise ValueError(
        "--store must be 'memory', a redis:// URL or a redis-cluster:// URL, "
        f"got {redacted_url(url)!r}"
    )


def start_limits(
    options: ServerOptions, registry: LimitsRegistry, metrics: QuotaMetrics
) -> asyncio.Task[None]:
    """Load the limits once, then keep them current in a background task."""

    def count(result: str) -> None:
        metrics.limit_reloads.labels(result).inc()

    if options.limits_path is not None:
        files = FileLimitsSource(
            Path(options.limits_path), registry, count, options.reload_interval
        )
        files.scan()
        if not registry.sources:
            log.warning(
                "no valid quotas.json under %s yet; not ready until one appears", files.path
            )
        return asyncio.create_task(files.run(), name="limits-files")
    if options.watch_namespace is not None:
        from meltguard.quota.configmaps import ConfigMapLimitsSource, default_client

        client = default_client()
        watchers = [
            ConfigMapLimitsSource(namespace.strip(), registry, count, client)
            for namespace in options.watch_namespace.split(",")
        ]
        return asyncio.create_task(_watch_all(watchers), name="limits-configmaps")
    raise ValueError("give --limits PATH or --watch-configmaps NS")


async def _watch_all(watchers: list[ConfigMapLimitsSource]) -> None:
    """Run one ConfigMap watcher per namespace until cancelled."""
    async with asyncio.TaskGroup() as group:
        for watcher in watchers:
            group.create_task(watcher.run(), name=f"configmaps-{watcher.namespace}")


async def _start_grpc(
    service: QuotaService, options: ServerOptions, callers: TokenFile | None
) -> grpc.aio.Server | None:
    """Envoy's rate limit API on ``--grpc-port``, unless that is 0, behind ``callers``' tokens
    when there are any."""
    if options.grpc_port == 0:
        return None
    servicer = RateLimitServicer(service, strict=options.strict)
    server = await start_grpc_server(servicer, options.host, options.grpc_port, callers=callers)
    log.info("Envoy rate limit service (gRPC) on %s:%d", options.host, options.grpc_port)
    return server


#: Seconds requests in flight get to finish after SIGTERM, well inside Kubernetes' 30 s grace.
HTTP_DRAIN_SECONDS = 5.0


async def _start_metrics(service: QuotaService, options: ServerOptions) -> web.AppRunner | None:
    """``/metrics`` alone on ``--metrics-port``, unless that is 0."""
    if options.metrics_port == 0:
        return None
    runner = web.AppRunner(create_metrics_app(service), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, options.host, options.metrics_port).start()
    log.info("metrics on %s:%d", options.host, options.metrics_port)
    return runner


async def _start_http(
    service: QuotaService, options: ServerOptions, callers: TokenFile | None
) -> web.AppRunner:
    """The HTTP API on ``--port``: at most ``--max-connections`` open, each given
    ``--read-timeout`` to send a request's headers (or to stay idle), then as long for its
    body, and ``HTTP_DRAIN_SECONDS`` to finish after SIGTERM."""
    metrics = service.metrics
    cap = ConnectionCap(fit_open_files(options.max_connections), metrics.connections_evicted.inc)
    metrics.connections_open.set_function(lambda: len(cap))
    runner = CappedRunner(
        create_app(
            service,
            read_timeout=options.read_timeout,
            callers=callers,
            serve_metrics=options.metrics_port == 0,
        ),
        cap,
        access_log=None,
        keepalive_timeout=options.read_timeout,
        shutdown_timeout=HTTP_DRAIN_SECONDS,
    )
    await runner.setup()
    await web.TCPSite(runner, options.host, options.port).start()
    return runner


def check_bounds(options: ServerOptions) -> None:
    """Raise ValueError naming a hardening flag whose value cannot work."""
    positive = {
        "--read-timeout": options.read_timeout,
        "--max-connections": options.max_connections,
        "--max-request-ids": options.max_request_ids,
    }
    for flag, value in positive.items():
        if value <= 0:
            raise ValueError(f"{flag} must be positive, got {value:g}")
    if not 0 <= options.metrics_port <= 65535:
        raise ValueError(f"--metrics-port must be 0 to 65535, got {options.metrics_port}")
    if options.fail_open_seconds < 0:
        raise ValueError(f"--fail-open-for must be 0 or more, got {options.fail_open_seconds:g}")


async def serve(options: ServerOptions) -> None:
    """Serve until SIGINT/SIGTERM, then close the listener, the sources and the store."""
    check_bounds(options)
    callers = None if options.auth_tokens is None else TokenFile(Path(options.auth_tokens))
    store = open_store(options.store_url, options.store_timeout, options.max_request_ids)
    metrics = QuotaMetrics()
    metrics.watch_request_records(store)
    registry = LimitsRegistry()
    service = QuotaService(
        registry,
        store,
        metrics,
        options.on_store_error,
        fail_open_seconds=options.fail_open_seconds,
    )
    limits_task = start_limits(options, registry, metrics)
    runner = await _start_http(service, options, callers)
    metrics_runner = await _start_metrics(service, options)
    grpc_server = await _start_grpc(service, options, callers)
    store_name = redacted_url(options.store_url)
    log.info("quota service on %s:%d, store %s", options.host, options.port, store_name)
    if callers is None:
        grpc_too = f" (gRPC: {options.grpc_port})" if options.grpc_port else ""
        log.warning(
            "no --auth-tokens: anyone reaching port %d%s may consume and refund",
            options.port,
            grpc_too,
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        if grpc_server is not None:
            await grpc_server.stop(GRPC_GRACE_SECONDS)
        await runner.cleanup()
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        limits_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await limits_task
        await store.close()
