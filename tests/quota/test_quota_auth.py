"""Caller authentication (--auth-tokens) and metrics on their own port (--metrics-port).

An unauthenticated request changes nothing, and a refund is given only to the caller that
consumed, on both stores; the token file is read again when it changes.
"""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from meltguard.quota import auth
from meltguard.quota.auth import TokenFile, bearer_token, parse_tokens

from .conftest import (
    POLICY,
    FakeClock,
    QuotaServer,
    free_port,
    launch_quota_server,
    make_store,
    quotas_json,
    start_quota_server,
)

GATEWAY = "token-of-the-gateway-0001"
OTHER = "token-of-another-caller-02"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("gateway", "tokens line 1: expected caller-name:token"),
        ("# callers\n\n-bad:" + GATEWAY, "tokens line 3: caller name '-bad' must be"),
        ("gateway:short", "tokens line 1: the token of gateway is shorter than 16"),
        (f"a:{GATEWAY}\nb:{GATEWAY}", "tokens line 2: the token of b is also a's"),
        ("# nothing\n", "tokens: no caller-name:token line"),
    ],
)
def test_a_bad_token_file_is_refused_naming_the_line(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(")):
        parse_tokens(text, "tokens")


def test_only_the_bearer_scheme_gives_a_token() -> None:
    assert bearer_token(f"Bearer {GATEWAY}") == GATEWAY
    assert bearer_token(f"bearer  {GATEWAY} ") == GATEWAY
    assert bearer_token(f"Basic {GATEWAY}") is None
    assert bearer_token("Bearer ") is None
    assert bearer_token(None) is None


def test_the_token_file_is_read_again_on_change_and_a_bad_version_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth, "RECHECK_SECONDS", 0.0)
    path = tmp_path / "tokens"
    path.write_text(f"gateway:{GATEWAY}\n")
    callers = TokenFile(path)
    assert callers.caller(GATEWAY) == "gateway"
    assert callers.caller(OTHER) is None
    path.write_text(f"other:{OTHER}\n")
    assert callers.caller(OTHER) == "other"
    assert callers.caller(GATEWAY) is None
    path.write_text("not a token line, and longer than before\n")
    assert callers.caller(OTHER) == "other"


@pytest.fixture
async def guarded(
    store_kind: str, clock: FakeClock, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[QuotaServer]:
    """A quota server on each store whose /v1/ routes need the gateway's or other's token."""
    tokens = tmp_path / "tokens"
    tokens.write_text(f"gateway:{GATEWAY}\nother:{OTHER}\n")
    redis = request.getfixturevalue("redis_server") if store_kind == "redis" else None
    running = await start_quota_server(
        make_store(store_kind, redis), clock, callers=TokenFile(tokens)
    )
    yield running
    await running.close()


async def post(
    http: aiohttp.ClientSession, url: str, token: str | None, **fields: Any
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """POST ``url`` with the free tier's user-1 and ``fields``, as the caller of ``token``."""
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    body = {"policy": POLICY, "tier": "free", "subject": "user-1", **fields}
    async with http.post(url, json=body, headers=headers) as response:
        return response.status, await response.json(), dict(response.headers)


async def used(http: aiohttp.ClientSession, url: str) -> int:
    params = {"policy": POLICY, "tier": "free", "subject": "user-1"}
    headers = {"Authorization": f"Bearer {GATEWAY}"}
    async with http.get(f"{url}/v1/quota", params=params, headers=headers) as response:
        assert response.status == 200, await response.text()
        return int((await response.json())["used"])


async def test_an_unauthenticated_request_gets_401_and_changes_nothing(
    guarded: QuotaServer, http: aiohttp.ClientSession
) -> None:
    url = guarded.url
    assert (await post(http, f"{url}/v1/consume", GATEWAY, requestId="r1"))[0] == 200
    for token in (None, "not-a-known-token-at-all"):
        for path in ("/v1/refund", "/v1/consume"):
            status, body, headers = await post(http, url + path, token, requestId="r1")
            assert status == 401
            assert body["field"] == "Authorization"
            assert headers["WWW-Authenticate"].startswith("Bearer")
    async with http.get(f"{url}/v1/quota", params={"policy": POLICY}) as response:
        assert response.status == 401
    assert await used(http, url) == 1
    for open_path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        async with http.get(url + open_path) as response:
            assert response.status == 200, open_path


async def test_a_refund_by_another_caller_gets_403_and_changes_nothing(
    guarded: QuotaServer, http: aiohttp.ClientSession
) -> None:
    url = guarded.url
    assert (await post(http, f"{url}/v1/consume", GATEWAY, requestId="r1"))[0] == 200
    status, body, _ = await post(http, f"{url}/v1/refund", OTHER, requestId="r1")
    assert status == 403
    assert body == {"error": "request 'r1' was consumed by another caller", "field": "requestId"}
    assert await used(http, url) == 1
    status, body, _ = await post(http, f"{url}/v1/refund", GATEWAY, requestId="r1")
    assert (status, body["reason"], body["used"]) == (200, "refunded", 0)


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_metrics_port_serves_metrics_and_the_api_port_no_longer_does(tmp_path: Path) -> None:
    limits = tmp_path / "quotas.json"
    limits.write_text(quotas_json())
    metrics_port = free_port()
    process, url = launch_quota_server(
        "--limits", str(limits), "--metrics-port", str(metrics_port)
    )
    try:
        assert get(f"{url}/metrics") == 404
        assert get(f"{url}/healthz") == 200
        metrics_url = f"http://127.0.0.1:{metrics_port}"
        with urllib.request.urlopen(f"{metrics_url}/metrics", timeout=5) as response:
            assert b"meltguard_quota_limit{" in response.read()
        assert get(f"{metrics_url}/v1/quota") == 404
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0


def test_the_demand_page_is_open_on_the_metrics_port_only(tmp_path: Path) -> None:
    """The operator reads ``/v1/demand`` without a caller token on the metrics port; on the
    API port it stays behind the tokens like every ``/v1/`` route."""
    limits = tmp_path / "quotas.json"
    limits.write_text(quotas_json())
    tokens = tmp_path / "tokens"
    tokens.write_text(f"gateway:{GATEWAY}\n")
    metrics_port = free_port()
    process, url = launch_quota_server(
        "--limits", str(limits), "--metrics-port", str(metrics_port), "--auth-tokens", str(tokens)
    )
    try:
        metrics_url = f"http://127.0.0.1:{metrics_port}"
        assert get(f"{url}/v1/demand?policy={POLICY}") == 401
        with urllib.request.urlopen(f"{metrics_url}/v1/demand?policy={POLICY}",
                                    timeout=5) as response:
            assert [tier["tier"] for tier in json.load(response)["tiers"]] == [
                "free", "plus", "pro"]
        assert get(f"{metrics_url}/v1/demand") == 400  # the policy is named as missing
        assert get(f"{metrics_url}/v1/consume") == 404
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
