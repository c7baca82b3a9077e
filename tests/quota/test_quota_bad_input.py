"""Bad input gets a 4xx naming the problem, and changes no counter."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest

from meltguard.quota.memory_store import MemoryStore
from meltguard.quota.redis_store import RedisStore

from .conftest import POLICY, QuotaServer, metric_total, peek

pytestmark = pytest.mark.slow

GOOD = {"policy": POLICY, "tier": "free", "subject": "user-1", "requestId": "r-1"}


def body(**changes: object) -> bytes:
    fields = {**GOOD, **changes}
    return json.dumps({k: v for k, v in fields.items() if v is not ...}).encode()


@dataclass(frozen=True)
class Case:
    name: str
    status: int
    field: str
    data: bytes = b""
    method: str = "POST"
    path: str = "/v1/consume"
    content_type: str | None = "application/json"


CASES = [
    Case("malformed JSON", 400, "body", b'{"policy": "inference/imagegen", '),
    Case("empty body", 400, "body", b""),
    Case("not an object", 400, "body", b'["free", "user-1"]'),
    Case("NaN for a string", 400, "policy", b'{"policy": NaN}'),
    Case("policy not a string", 400, "policy", body(policy=7)),
    Case("subject not a string", 400, "subject", body(subject=["user-1"])),
    Case("cost as a string", 400, "cost", body(cost="1")),
    Case("cost as a float", 400, "cost", body(cost=1.5)),
    Case("cost as a boolean", 400, "cost", body(cost=True)),
    Case("missing subject", 400, "subject", body(subject=...)),
    Case("missing tier", 400, "tier", body(tier=...)),
    Case("unexpected field", 400, "user", body(user="user-1")),
    Case("unknown policy", 404, "policy", body(policy="inference/other")),
    Case("unknown tier", 404, "tier", body(tier="enterprise")),
    Case("cost zero", 400, "cost", body(cost=0)),
    Case("cost negative", 400, "cost", body(cost=-3)),
    Case("cost huge", 400, "cost", body(cost=10**30)),
    Case("cost over the maximum", 400, "cost", body(cost=1_000_001)),
    Case("empty subject", 400, "subject", body(subject="")),
    Case("subject of 10 KB", 400, "subject", body(subject="u" * 10_240)),
    Case("subject of 257 bytes (multibyte)", 400, "subject", body(subject="é" * 128 + "x")),
    Case("subject with a newline", 400, "subject", body(subject="user-1\nuser-2")),
    Case("subject with NUL", 400, "subject", body(subject="user\x00")),
    Case("subject with DEL", 400, "subject", body(subject="user\x7f")),
    Case("subject with a C1 control", 400, "subject", body(subject="user\x85")),
    Case("subject with a lone surrogate", 400, "body", b'{"subject": "\\ud800"}'),
    Case("requestId with a tab", 400, "requestId", body(requestId="r\t1")),
    Case("requestId of 10 KB", 400, "requestId", body(requestId="r" * 10_240)),
    Case("body over 64 KB", 413, "body", body(padding="x" * 70_000)),
    Case("wrong method GET", 405, "method", method="GET"),
    Case("wrong method PUT", 405, "method", body(), method="PUT"),
    Case("wrong method DELETE on refund", 405, "method", method="DELETE", path="/v1/refund"),
    Case("POST to the peek endpoint", 405, "method", body(), path="/v1/quota"),
    Case("text/plain", 415, "Content-Type", body(), content_type="text/plain"),
    Case(
        "form encoded",
        415,
        "Content-Type",
        b"policy=x",
        content_type="application/x-www-form-urlencoded",
    ),
    Case("no content type", 415, "Content-Type", body(), content_type=None),
    Case("refund without requestId", 400, "requestId", body(requestId=...), path="/v1/refund"),
    Case("refund with cost", 400, "cost", body(cost=1), path="/v1/refund"),
    Case("refund of unknown tier", 404, "tier", body(tier="gold"), path="/v1/refund"),
    Case(
        "peek without subject",
        400,
        "subject",
        method="GET",
        path=f"/v1/quota?policy={POLICY}&tier=free",
    ),
    Case(
        "peek with a repeated subject",
        400,
        "subject",
        method="GET",
        path=f"/v1/quota?policy={POLICY}&tier=free&subject=a&subject=b",
    ),
    Case(
        "peek of unknown policy",
        404,
        "policy",
        method="GET",
        path="/v1/quota?policy=a/b&tier=free&subject=a",
    ),
    Case(
        "peek with a control character",
        400,
        "subject",
        method="GET",
        path=f"/v1/quota?policy={POLICY}&tier=free&subject=a%0Ab",
    ),
    Case("unknown path", 404, "path", method="GET", path="/v1/consumed"),
    Case("cost given twice", 400, "cost", body()[:-1] + b', "cost": 1, "cost": 3}'),
    Case(
        "subject given twice, once escaped",
        400,
        "subject",
        body()[:-1] + b', "subj\\u0065ct": "x"}',
    ),
    Case(
        "refund with requestId twice",
        400,
        "requestId",
        body()[:-1] + b', "requestId": "r-2"}',
        path="/v1/refund",
    ),
]


async def counted_keys(server: QuotaServer) -> int:
    """Everything the store holds: counters and request records."""
    store = server.service.store
    if isinstance(store, MemoryStore):
        return len(store._counters) + len(store._requests)
    assert isinstance(store, RedisStore)
    size: int = await store._client.dbsize()
    return size


async def test_every_bad_request_is_refused_by_name_and_counts_nothing(
    server: QuotaServer, http: aiohttp.ClientSession
) -> None:
    for case in CASES:
        headers = {"Content-Type": case.content_type} if case.content_type else {}
        if case.content_type is None:
            headers["Content-Type"] = ""
        async with http.request(
            case.method, server.url + case.path, data=case.data, headers=headers
        ) as response:
            answer = await response.json()
            assert response.status == case.status, (case.name, answer)
        assert answer["field"] == case.field, (case.name, answer)
        assert case.field in answer["error"], (case.name, answer)
    assert await counted_keys(server) == 0
    assert (await peek(http, server.url))["used"] == 0
    metrics = server.service.metrics.registry
    assert metric_total(metrics, "meltguard_quota_decisions_total") == 0
    assert metric_total(metrics, "meltguard_quota_invalid_requests_total") == len(CASES)


async def test_a_chunked_body_over_64_kb_is_refused_too(
    server: QuotaServer, http: aiohttp.ClientSession
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"policy": "inference/imagegen", "tier": "free", "subject": "'
        for _ in range(70):
            yield b"x" * 1024
        yield b'"}'

    async with http.post(
        f"{server.url}/v1/consume", data=chunks(), headers={"Content-Type": "application/json"}
    ) as response:
        assert response.status == 413
        assert (await response.json())["field"] == "body"
    assert await counted_keys(server) == 0
