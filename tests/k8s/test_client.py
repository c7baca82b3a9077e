"""The operator's small API client against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from meltguard.k8s.client import (
    ApiError,
    Conflict,
    Connection,
    KubeClient,
    NotFound,
)

from .harness import free_port


async def answer(request: web.Request) -> web.StreamResponse:
    seen = {"auth": request.headers.get("Authorization"),
            "type": request.headers.get("Content-Type")}
    match request.path:
        case "/ok":
            return web.json_response({"seen": seen, "body": await request.json()
                                      if request.can_read_body else None})
        case "/missing":
            return web.json_response({"kind": "Status", "reason": "NotFound",
                                      "message": "pods \"x\" not found"}, status=404)
        case "/stale":
            return web.json_response({"reason": "Conflict", "message": "modified"}, status=409)
        case "/broken":
            return web.Response(text="<html>bad gateway</html>", status=502)
        case _:
            return web.json_response(["not", "an", "object"])


@pytest_asyncio.fixture()
async def client() -> AsyncIterator[KubeClient]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    async with TestServer(app, host="127.0.0.1") as server:
        kube = KubeClient(Connection(server=str(server.make_url("")).rstrip("/"),
                                     token="s3cret"))
        yield kube
        await kube.close()


async def test_json_answers_and_credentials(client: KubeClient) -> None:
    answer = await client.merge_patch("/ok", {"spec": {"replicas": 3}})
    assert answer["seen"] == {"auth": "Bearer s3cret", "type": "application/merge-patch+json"}
    assert answer["body"] == {"spec": {"replicas": 3}}


@pytest.mark.parametrize(("path", "kind", "status", "reason"), [
    ("/missing", NotFound, 404, "NotFound"),
    ("/stale", Conflict, 409, "Conflict"),
    ("/broken", ApiError, 502, "Bad Gateway"),
    ("/list", ApiError, 200, "BadResponse"),
])
async def test_failures_are_api_errors_with_the_servers_words(
        client: KubeClient, path: str, kind: type[ApiError], status: int, reason: str) -> None:
    with pytest.raises(kind) as caught:
        await client.get(path)
    assert (type(caught.value), caught.value.status, caught.value.reason) == (kind, status, reason)


async def test_an_unreachable_server_is_status_0() -> None:
    kube = KubeClient(Connection(server=f"http://127.0.0.1:{free_port()}"))
    try:
        with pytest.raises(ApiError) as caught:
            await kube.get("/api")
        assert caught.value.status == 0
    finally:
        await kube.close()


def test_tls_settings() -> None:
    assert Connection(server="https://k", insecure=True).ssl_context() is False
    assert Connection(server="https://k").ssl_context() is True
