"""Envoy's rate limit API (``ShouldRateLimit``) over real gRPC on 127.0.0.1, sharing one
service with the HTTP API: domains, descriptors, costs, answers, unmatched descriptors, and
caller tokens in the call's metadata."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from meltguard.api.quotas import dump_quota_document, parse_quota_document
from meltguard.quota import auth
from meltguard.quota.auth import TokenFile
from meltguard.quota.grpc_service import (
    OK,
    OVER_LIMIT,
    SHOULD_RATE_LIMIT,
    UNAUTHENTICATED,
    RateLimitDescriptor,
    RateLimitRequest,
    RateLimitResponse,
    RateLimitServicer,
    rate_limit_client,
    start_grpc_server,
)
from meltguard.quota.memory_store import MemoryStore

from .conftest import (
    POLICY,
    FakeClock,
    QuotaServer,
    free_port,
    peek,
    quotas_json,
    start_quota_server,
)
from .test_quota_auth import GATEWAY, OTHER, used

Descriptor = RateLimitDescriptor
DAY = RateLimitResponse.RateLimit.DAY
UNKNOWN_UNIT = RateLimitResponse.RateLimit.UNKNOWN


def with_domain(text: str, domain: str, policy: str = POLICY) -> str:
    document = json.loads(text)
    return json.dumps({**document, "envoyDomain": domain, "policy": policy})


def descriptor(addend: int | None = None, **entries: str) -> Any:
    built = Descriptor(entries=[Descriptor.Entry(key=k, value=v) for k, v in entries.items()])
    if addend is not None:
        built.hits_addend.value = addend
    return built


class Gateway:
    """The quota service (HTTP and gRPC) on 127.0.0.1 and a gRPC channel to it."""

    def __init__(self, http: QuotaServer, grpc_server: grpc.aio.Server, port: int) -> None:
        self.http = http
        self.grpc_server = grpc_server
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self._call = rate_limit_client(self.channel)

    async def ask(
        self,
        domain: str,
        *descriptors: Any,
        hits_addend: int = 0,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> Any:
        request = RateLimitRequest(domain=domain, descriptors=descriptors, hits_addend=hits_addend)
        return await self._call(request, timeout=5, metadata=metadata or None)

    def unmatched(self, reason: str) -> float:
        value = self.http.service.metrics.envoy_unmatched.labels(reason)._value.get()
        return float(value)


async def open_gateway(*, strict: bool = False, callers: TokenFile | None = None) -> Gateway:
    """Both APIs on one memory store, each behind ``callers``' tokens when given."""
    clock = FakeClock()
    http = await start_quota_server(
        MemoryStore(), clock, limits=with_domain(quotas_json(), "images"), callers=callers
    )
    port = free_port()
    servicer = RateLimitServicer(http.service, strict)
    server = await start_grpc_server(servicer, "127.0.0.1", port, callers=callers)
    return Gateway(http, server, port)


async def close_gateway(gateway: Gateway) -> None:
    await gateway.channel.close()
    await gateway.grpc_server.stop(0)
    await gateway.http.close()


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    running = await open_gateway()
    yield running
    await close_gateway(running)


def test_envoy_domain_is_optional_in_quotas_json() -> None:
    old = parse_quota_document(quotas_json())
    assert old.envoy_domain is None and "envoyDomain" not in dump_quota_document(old)
    new = parse_quota_document(with_domain(quotas_json(), "images"))
    assert json.loads(dump_quota_document(new))["envoyDomain"] == "images"


async def test_the_domain_names_the_policy_and_answers_carry_limit_remaining_reset(
    gateway: Gateway,
) -> None:
    first = await gateway.ask("images", descriptor(tier="free", subject="u1"))
    assert first.overall_code == OK
    (status,) = first.statuses
    assert status.code == OK
    assert (status.current_limit.requests_per_unit, status.current_limit.unit) == (3, DAY)
    assert status.current_limit.name == "free"
    assert status.limit_remaining == 2
    assert 0 < status.duration_until_reset.seconds <= 86400
    # the policy's own name is not its domain once envoyDomain is set
    stray = await gateway.ask("imagegen", descriptor(tier="free", subject="u1"))
    assert stray.overall_code == OK and not stray.statuses[0].HasField("current_limit")
    assert gateway.unmatched("unknown-domain") == 1


async def test_hits_addend_is_the_cost_and_the_descriptor_addend_wins(
    gateway: Gateway, http: aiohttp.ClientSession
) -> None:
    answer = await gateway.ask("images", descriptor(tier="free", subject="u2"), hits_addend=2)
    assert answer.statuses[0].limit_remaining == 1
    over = await gateway.ask(
        "images", descriptor(addend=2, tier="free", subject="u2"), hits_addend=1
    )
    assert over.overall_code == OVER_LIMIT and over.statuses[0].limit_remaining == 1
    # the HTTP API sees the very same counter
    assert (await peek(http, gateway.http.url, subject="u2"))["used"] == 2


async def test_any_descriptor_over_the_limit_makes_the_whole_answer_over(
    gateway: Gateway,
) -> None:
    for _ in range(3):
        await gateway.ask("images", descriptor(tier="free", subject="u3"))
    answer = await gateway.ask(
        "images",
        descriptor(tier="pro", subject="u3"),
        descriptor(tier="free", subject="u3"),
        descriptor(tier="plus", subject="u3"),
    )
    assert answer.overall_code == OVER_LIMIT
    assert [s.code for s in answer.statuses] == [OK, OVER_LIMIT, OK]
    pro, _, plus = answer.statuses
    assert not pro.HasField("current_limit")  # unlimited: nothing to count down
    assert plus.current_limit.unit == UNKNOWN_UNIT  # 3 h is none of Envoy's units
    assert plus.current_limit.requests_per_unit == 200 and plus.limit_remaining == 199


@pytest.mark.parametrize(
    ("domain", "entries", "reason"),
    [
        ("elsewhere", {"tier": "free", "subject": "u"}, "unknown-domain"),
        ("images", {"tier": "gold", "subject": "u"}, "unknown-tier"),
        ("images", {"tier": "free"}, "malformed"),
        ("images", {"tier": "free", "subject": "x" * 300}, "malformed"),
        ("images", {"tier": "free", "subject": "u", "policy": "other"}, "unknown-policy"),
    ],
)
@pytest.mark.parametrize("strict", [False, True])
async def test_unmatched_descriptors_pass_and_are_counted_or_refused_when_strict(
    domain: str, entries: dict[str, str], reason: str, strict: bool
) -> None:
    gateway = await open_gateway(strict=strict)
    try:
        answer = await gateway.ask(domain, descriptor(**entries))
        assert answer.overall_code == (OVER_LIMIT if strict else OK)
        assert gateway.unmatched(reason) == 1
    finally:
        await close_gateway(gateway)


async def test_one_domain_for_two_policies_needs_the_policy_entry(gateway: Gateway) -> None:
    gateway.http.publish(with_domain(quotas_json(free=1), "images", "other/video"), "video")
    ambiguous = await gateway.ask("images", descriptor(tier="free", subject="u4"))
    assert ambiguous.overall_code == OK and gateway.unmatched("unknown-policy") == 1
    video = descriptor(tier="free", subject="u4", policy="video")
    assert (await gateway.ask("images", video)).statuses[0].limit_remaining == 0
    assert (await gateway.ask("images", video)).overall_code == OVER_LIMIT
    images = descriptor(tier="free", subject="u4", policy=POLICY)
    assert (await gateway.ask("images", images)).statuses[0].limit_remaining == 2


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """The metadata Envoy sends with ``initial_metadata: [{key: authorization, ...}]``."""
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture
async def guarded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Gateway]:
    """Both APIs behind the gateway's token, the token file looked at on every call."""
    monkeypatch.setattr(auth, "RECHECK_SECONDS", 0.0)
    tokens = tmp_path / "tokens"
    tokens.write_text(f"gateway:{GATEWAY}\n")
    running = await open_gateway(callers=TokenFile(tokens))
    yield running
    await close_gateway(running)


async def test_with_tokens_a_call_carrying_a_known_one_is_answered_and_consumes(
    guarded: Gateway, http: aiohttp.ClientSession
) -> None:
    answer = await guarded.ask(
        "images", descriptor(tier="free", subject="user-1"), metadata=bearer(GATEWAY)
    )
    assert answer.overall_code == OK and answer.statuses[0].limit_remaining == 2
    assert await used(http, guarded.http.url) == 1


@pytest.mark.parametrize(
    ("metadata", "problem"),
    [
        ((), "no bearer token"),
        (bearer("not-a-known-token-at-all"), "unknown token or scheme"),
        ((("authorization", f"Basic {GATEWAY}"),), "unknown token or scheme"),
    ],
    ids=["none", "unknown", "not-bearer"],
)
async def test_with_tokens_a_call_without_a_known_one_is_unauthenticated_and_moves_nothing(
    guarded: Gateway,
    http: aiohttp.ClientSession,
    metadata: tuple[tuple[str, str], ...],
    problem: str,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await guarded.ask("images", descriptor(tier="free", subject="user-1"), metadata=metadata)
    print(f"metadata {metadata}: {refused.value.code().name} {refused.value.details()!r}")
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert refused.value.details() == (
        f"{problem} in the authorization metadata: send authorization: Bearer <token>"
    )
    assert await used(http, guarded.http.url) == 0
    invalid = guarded.http.service.metrics.invalid_requests
    assert invalid.labels(SHOULD_RATE_LIMIT, UNAUTHENTICATED)._value.get() == 1


async def test_the_grpc_api_follows_the_token_file_as_it_changes(
    guarded: Gateway, tmp_path: Path
) -> None:
    free = descriptor(tier="free", subject="user-2")
    assert (await guarded.ask("images", free, metadata=bearer(GATEWAY))).overall_code == OK
    (tmp_path / "tokens").write_text(f"other:{OTHER}\n")
    assert (await guarded.ask("images", free, metadata=bearer(OTHER))).overall_code == OK
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await guarded.ask("images", free, metadata=bearer(GATEWAY))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
