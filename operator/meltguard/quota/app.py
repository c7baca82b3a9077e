"""The HTTP shell of the quota service (aiohttp): parse, call :class:`QuotaService`, answer.

Every refusal is JSON ``{"error": "...", "field": "..."}`` naming what is wrong, and happens
before any counter is touched. With caller tokens (``--auth-tokens``) every ``/v1/`` request
must carry ``Authorization: Bearer <token>`` (401 without a known one), and a refund is
answered 403 unless its caller is the one that consumed. A failure inside one request is
logged and answered 500; it never stops the server.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ValidationError

from meltguard.core.demand import RATE_SECONDS, DemandSignal
from meltguard.quota.auth import TokenFile, Unauthenticated
from meltguard.quota.limits import UnknownQuota
from meltguard.quota.openapi import OPENAPI_DOCUMENT
from meltguard.quota.requests import (
    MAX_BODY_BYTES,
    BadRequest,
    ConsumeRequest,
    DemandQuery,
    PeekRequest,
    RefundRequest,
    bad_request_from,
    refuse_duplicate_keys,
)
from meltguard.quota.service import QuotaAnswer, QuotaService
from meltguard.quota.store import StoreUnavailable

log = logging.getLogger(__name__)

SERVICE_KEY = web.AppKey("quota_service", QuotaService)
READ_TIMEOUT_KEY = web.AppKey("read_timeout", float)
CALLERS_KEY = web.AppKey("callers", TokenFile)
#: The authenticated caller's name in a request (absent when authentication is off).
CALLER = web.RequestKey("caller", str)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
RequestModel = TypeVar("RequestModel", bound=BaseModel)

#: Seconds a client should wait before retrying when the store is failing closed.
STORE_RETRY_AFTER_SECONDS = 1
#: Seconds a client has to send a request's headers, and then its body (--read-timeout).
DEFAULT_READ_TIMEOUT_SECONDS = 10.0


def json_answer(
    body: object, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A JSON response, encoded by orjson (the cheapest encoder for a decision's small body)."""
    return web.Response(
        body=orjson.dumps(body), status=status, headers=headers, content_type="application/json"
    )


def error_response(status: int, field: str, message: str, **headers: str) -> web.Response:
    """The JSON body of every refusal."""
    return json_answer({"error": message, "field": field}, status=status, headers=headers)


def _endpoint(request: web.Request) -> str:
    route = request.match_info.route
    return route.resource.canonical if route.resource is not None else "unmatched"


def _http_error(error: web.HTTPException, request: web.Request) -> web.Response:
    if isinstance(error, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(error.allowed_methods))
        message = f"method {request.method} is not allowed on {request.path} (allowed: {allowed})"
        return error_response(405, "method", message, Allow=allowed)
    if isinstance(error, web.HTTPRequestEntityTooLarge):
        return error_response(413, "body", f"body is larger than {MAX_BODY_BYTES} bytes")
    if error.status == 404:
        return error_response(404, "path", f"no such path: {request.path}")
    return error_response(error.status, "request", error.reason)


@web.middleware
async def answer_errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map refusals to JSON, count them, time every request, and contain crashes."""
    service = request.app[SERVICE_KEY]
    endpoint = _endpoint(request)
    started = time.perf_counter()
    try:
        return await handler(request)
    except BadRequest as error:
        response = error_response(error.status, error.field, str(error))
        if error.status == 408:  # the rest of the body may still come: do not wait for it
            response.force_close()
        if error.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="meltguard"'

    except UnknownQuota as error:
        response = error_response(404, error.field, str(error))
    except StoreUnavailable as error:
        return error_response(
            503,
            "store",
            f"quota store unavailable: {error}",
            **{"Retry-After": str(STORE_RETRY_AFTER_SECONDS)},
        )
    except web.HTTPException as error:
        response = _http_error(error, request)
    except Exception:
        log.exception("unexpected failure answering %s %s", request.method, request.path)
        return error_response(500, "server", "internal error (logged by the server)")
    finally:
        service.metrics.observe_latency(endpoint, time.perf_counter() - started)
    service.metrics.invalid_requests.labels(endpoint, str(response.status)).inc()
    return response


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Name the caller of a ``/v1/`` request from its bearer token, or refuse it with 401;
    probes, metrics and the OpenAPI document stay open."""
    if request.path.startswith("/v1/"):
        try:
            caller = request.app[CALLERS_KEY].authenticate(request.headers.get("Authorization"))
        except Unauthenticated as problem:
            raise BadRequest(
                "Authorization", f"{problem}: send Authorization: Bearer <token>", status=401
            ) from None
        request[CALLER] = caller
    return await handler(request)


async def _read_raw_body(request: web.Request) -> bytes:
    """The body, at most MAX_BODY_BYTES. With a Content-Length it is read in one call (the
    common case, and measurably cheaper than aiohttp's chunk loop); a chunked body goes
    through ``request.read()``, which refuses more than ``client_max_size`` with 413."""
    length = request.content_length
    timeout = request.app[READ_TIMEOUT_KEY]
    if length is None:
        return await _within(timeout, request.read())
    if length > MAX_BODY_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY_BYTES, actual_size=length)
    content = request.content
    try:
        # usually the whole body came with the head: take it without a coroutine round
        if content.is_eof():
            raw = content.read_nowait()
        else:
            raw = await _within(timeout, content.readexactly(length))
    except asyncio.IncompleteReadError:
        raw = b""
    if len(raw) != length:
        raise BadRequest("body", "body is shorter than its Content-Length")
    return raw


async def _within(seconds: float, reading: Awaitable[bytes]) -> bytes:
    """``reading``'s bytes, or a 408 :class:`BadRequest` after ``seconds`` (a client that
    sends half a body must not hold a connection, nor the shutdown, forever)."""
    try:
        async with asyncio.timeout(seconds):
            return await reading
    except TimeoutError:
        raise BadRequest("body", f"body not received within {seconds:g} s", status=408) from None


async def read_body(request: web.Request, model: type[RequestModel]) -> RequestModel:
    """The JSON body as ``model``, or a :class:`BadRequest` naming the problem."""
    if request.content_type != "application/json":
        raise BadRequest(
            "Content-Type",
            f"Content-Type must be application/json, got {request.content_type!r}",
            status=415,
        )
    raw = await _read_raw_body(request)
    try:
        body = model.model_validate_json(raw)
    except ValidationError as error:
        raise bad_request_from(error) from None
    refuse_duplicate_keys(raw, model)
    return body


def answer_body(answer: QuotaAnswer) -> dict[str, Any]:
    """The JSON fields shared by consume, refund and peek answers."""
    tier = answer.tier
    body: dict[str, Any] = {"policy": answer.policy, "tier": tier.name}
    if answer.allowed is not None:
        body["allowed"] = answer.allowed
    if tier.unlimited:
        body["unlimited"] = True
    else:
        body |= {
            "limit": answer.limit,
            "baseline": tier.baseline,
            "windowSeconds": tier.window_seconds,
        }
    body["tightened"] = answer.tightened
    if answer.remaining is not None:
        body |= {"used": answer.used, "remaining": answer.remaining}
        body["resetSeconds"] = answer.reset_seconds
    if answer.replayed:
        body["replayed"] = True
    if answer.degraded:
        body["degraded"] = True
    return body


def ratelimit_headers(answer: QuotaAnswer) -> dict[str, str]:
    """RateLimit-Policy / RateLimit of draft-ietf-httpapi-ratelimit-headers (-10)."""
    tier = answer.tier
    if answer.limit is None or tier.window_seconds is None:
        return {}
    headers = {"RateLimit-Policy": f'"{tier.name}";q={answer.limit};w={tier.window_seconds}'}
    if answer.remaining is not None:
        headers["RateLimit"] = f'"{tier.name}";r={answer.remaining};t={answer.reset_seconds}'
    return headers


async def consume(request: web.Request) -> web.Response:
    """POST /v1/consume: 200 allowed, 429 refused, 503 when the store fails closed."""
    body = await read_body(request, ConsumeRequest)
    answer = await request.app[SERVICE_KEY].consume(body, request.get(CALLER, ""))
    headers = ratelimit_headers(answer)
    status = 200
    if not answer.allowed:
        status = 503 if answer.degraded else 429
        retry_after = STORE_RETRY_AFTER_SECONDS if answer.degraded else answer.reset_seconds
        headers["Retry-After"] = str(retry_after)
    return json_answer(answer_body(answer), status=status, headers=headers)


async def refund(request: web.Request) -> web.Response:
    """POST /v1/refund: 200 with ``refunded`` true exactly once per consumed request; 403
    when another caller consumed it."""
    body = await read_body(request, RefundRequest)
    result = await request.app[SERVICE_KEY].refund(body, request.get(CALLER, ""))
    if result.reason == "other-caller":
        message = f"request {body.request_id!r} was consumed by another caller"
        raise BadRequest("requestId", message, status=403)
    payload = {"refunded": result.refunded, "reason": result.reason, **answer_body(result.answer)}
    return json_answer(payload, headers=ratelimit_headers(result.answer))


def read_query(request: web.Request, model: type[RequestModel]) -> RequestModel:
    """The query string as ``model``, or a :class:`BadRequest` naming the problem."""
    query = request.query
    repeated = sorted(key for key in set(query) if len(query.getall(key)) > 1)
    if repeated:
        raise BadRequest(repeated[0], f"query parameter {repeated[0]} is given more than once")
    try:
        return model.model_validate(dict(query))
    except ValidationError as error:
        raise bad_request_from(error) from None


async def peek(request: web.Request) -> web.Response:
    """GET /v1/quota?policy=&tier=&subject=: the standing, consuming nothing."""
    answer = await request.app[SERVICE_KEY].peek(read_query(request, PeekRequest))
    return json_answer(answer_body(answer), headers=ratelimit_headers(answer))


def demand_body(policy: str, signal: DemandSignal) -> dict[str, Any]:
    """The JSON of ``GET /v1/demand`` (what :mod:`meltguard.ingest.demand` reads)."""
    return {
        "policy": policy,
        "observedAt": signal.observed_at,
        "intervalSeconds": RATE_SECONDS,
        "tiers": [
            {
                "tier": tier.tier,
                "attemptsPerSecond": tier.attempts_per_second,
                "admittedPerSecond": tier.admitted_per_second,
                "refusedPerSecond": tier.refused_per_second,
                "reaching": list(tier.reaching),
            }
            for tier in signal.tiers
        ],
    }


async def demand(request: web.Request) -> web.Response:
    """GET /v1/demand?policy=: per tier, the recent rates and the current window's spread of
    attempts per subject, as counted by this replica."""
    policy = read_query(request, DemandQuery).policy
    return json_answer(demand_body(policy, request.app[SERVICE_KEY].demand(policy)))


async def healthz(request: web.Request) -> web.Response:
    """Alive: the event loop answers."""
    return json_answer({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """200 when limits are loaded and the store answers (or, for a while, fails open)."""
    readiness = await request.app[SERVICE_KEY].readiness()
    body: dict[str, Any] = {
        "ready": readiness.ready,
        "limitsLoaded": readiness.limits_loaded,
        "store": "ok" if readiness.store_reachable else "unreachable",
        "onStoreError": readiness.on_store_error,
    }
    if readiness.store_error is not None:
        body["storeError"] = readiness.store_error
        body["storeEverAnswered"] = readiness.store_ever_answered
    if readiness.fail_open_seconds_left is not None:
        body["failingOpenSecondsLeft"] = round(readiness.fail_open_seconds_left, 1)
    return json_answer(body, status=200 if readiness.ready else 503)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format."""
    exposition = request.app[SERVICE_KEY].metrics.exposition()
    return web.Response(body=exposition, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3 document of this API."""
    return json_answer(OPENAPI_DOCUMENT)


def create_app(
    service: QuotaService,
    *,
    read_timeout: float = DEFAULT_READ_TIMEOUT_SECONDS,
    callers: TokenFile | None = None,
    serve_metrics: bool = True,
) -> web.Application:
    """The aiohttp application serving ``service``; the caller owns the store's lifetime.
    With ``callers`` the ``/v1/`` routes require one of their tokens; without
    ``serve_metrics``, ``/metrics`` is left to :func:`create_metrics_app` on its own port."""
    middlewares = [answer_errors_as_json]
    if callers is not None:
        middlewares.append(authenticate)
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=middlewares)
    app[SERVICE_KEY] = service
    app[READ_TIMEOUT_KEY] = read_timeout
    if callers is not None:
        app[CALLERS_KEY] = callers
    app.router.add_post("/v1/consume", consume)
    app.router.add_post("/v1/refund", refund)
    app.router.add_get("/v1/quota", peek, allow_head=False)
    app.router.add_get("/v1/demand", demand, allow_head=False)
    for path, handler in (
        ("/healthz", healthz),
        ("/readyz", readyz),
        ("/openapi.json", openapi),
    ):
        app.router.add_get(path, handler, allow_head=False)
    if serve_metrics:
        app.router.add_get("/metrics", metrics, allow_head=False)
    return app


def create_metrics_app(service: QuotaService) -> web.Application:
    """``/metrics`` and ``/v1/demand`` for ``--metrics-port``: Prometheus and the operator are
    let in there, not to the API, and neither needs a caller token (both pages hold per-tier
    sums only)."""
    app = web.Application(middlewares=[answer_errors_as_json])
    app[SERVICE_KEY] = service
    app.router.add_get("/metrics", metrics, allow_head=False)
    app.router.add_get("/v1/demand", demand, allow_head=False)
    return app
