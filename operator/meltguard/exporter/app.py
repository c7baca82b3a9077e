"""The exporter's HTTP app: /metrics, /healthz, /readyz and, in simulate mode, POST /simulate."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from meltguard.exporter.devices import DeviceReading
from meltguard.exporter.exposition import GpuCollector
from meltguard.exporter.sampler import Sampler
from meltguard.exporter.simulated import DrillInvalid, SimulatedBackend, parse_drill

#: Fire-drill bodies are a few hundred bytes; anything much larger is a mistake.
MAX_DRILL_BODY_BYTES = 64 * 1024

SAMPLER = web.AppKey("sampler", Sampler)
REGISTRY = web.AppKey("registry", CollectorRegistry)
SIMULATED = web.AppKey("simulated", SimulatedBackend)


def create_app(
    sampler: Sampler, node: str, simulated: SimulatedBackend | None = None
) -> web.Application:
    """The exporter app around a sampler; pass the simulated backend to enable fire drills."""
    app = web.Application(client_max_size=MAX_DRILL_BODY_BYTES)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GpuCollector(lambda: sampler.snapshot, node))
    app[SAMPLER] = sampler
    app[REGISTRY] = registry
    if simulated is not None:
        app[SIMULATED] = simulated
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_post("/simulate", simulate)
    app.cleanup_ctx.append(_run_sampler)
    return app


async def _run_sampler(app: web.Application) -> AsyncIterator[None]:
    sampler = app[SAMPLER]
    await asyncio.to_thread(sampler.start)
    yield
    await asyncio.to_thread(sampler.stop)


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    sampler = request.app[SAMPLER]
    if sampler.is_fresh(time.time()):
        return web.Response(text="ready\n")
    snapshot = sampler.snapshot
    reason = snapshot.error or f"last GPU sample is {time.time() - snapshot.sampled_at:.0f}s old"
    return web.Response(status=503, text=f"not ready: {reason}\n")


def _error(status: int, field: str, message: str) -> web.Response:
    return web.json_response({"error": f"{field}: {message}", "field": field}, status=status)


async def simulate(request: web.Request) -> web.Response:
    """Apply a fire drill to the simulated GPUs and answer with their new state."""
    simulated = request.app.get(SIMULATED)
    if simulated is None:
        return web.json_response(
            {"error": "POST /simulate is only served in simulate mode (exporter --simulate N)"},
            status=404,
        )
    try:
        body = json.loads(await request.read())
    except web.HTTPRequestEntityTooLarge:
        return _error(413, "body", f"larger than {MAX_DRILL_BODY_BYTES} bytes")
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return _error(400, "body", f"not valid JSON ({error})")
    try:
        drill = parse_drill(body, simulated.count)
    except DrillInvalid as error:
        return _error(400, error.field, error.message)
    changed = simulated.apply(drill)
    await asyncio.to_thread(request.app[SAMPLER].sample_once)
    return web.json_response({"gpus": [_state(gpu) for gpu in changed]})


def _state(gpu: DeviceReading) -> dict[str, object]:
    return {
        "index": gpu.index,
        "uuid": gpu.uuid,
        "up": gpu.up,
        "utilization": gpu.utilization,
        "temperatureCelsius": gpu.temperature_celsius,
        "memoryUsedBytes": gpu.memory_used_bytes,
        "throttleReasons": sorted(gpu.throttle_reasons),
    }
