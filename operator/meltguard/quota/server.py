"""Run the quota service: build the store, the limits sources and the app, serve until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from meltguard.quota.app import create_app
from meltguard.quota.limits import LimitsRegistry
from meltguard.quota.memory_store import MemoryStore
from meltguard.quota.metrics import QuotaMetrics
from meltguard.quota.redis_store import RedisStore
from meltguard.quota.service import OnStoreError, QuotaService
from meltguard.quota.sources import FileLimitsSource
from meltguard.quota.store import QuotaStore

if TYPE_CHECKING:  # imported when used: only --watch-configmaps needs lightkube
    from meltguard.quota.configmaps import ConfigMapLimitsSource

log = logging.getLogger(__name__)


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


def open_store(url: str, timeout_seconds: float = 1.0) -> QuotaStore:
    """``memory`` or a ``redis://`` / ``rediss://`` / ``unix://`` URL."""
    if url == "memory":
        return MemoryStore()
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisStore(url, timeout_seconds)
    raise ValueError(f"--store must be 'memory' or a redis:// URL, got {url!r}")


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


async def serve(options: ServerOptions) -> None:
    """Serve until SIGINT/SIGTERM, then close the listener, the sources and the store."""
    store = open_store(options.store_url, options.store_timeout)
    metrics = QuotaMetrics()
    registry = LimitsRegistry()
    service = QuotaService(registry, store, metrics, options.on_store_error)
    limits_task = start_limits(options, registry, metrics)
    runner = web.AppRunner(create_app(service), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, options.host, options.port).start()
    log.info("quota service on %s:%d, store %s", options.host, options.port, options.store_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        limits_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await limits_task
        await store.close()
