"""A fractional limit in force (``1.4``): the hash that shares it out, the document that carries
it, and what the quota service (HTTP on 127.0.0.1, memory store and real Redis, and Envoy's
gRPC API) gives each subject: its own whole limit, the same on every request of a window."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from meltguard.api.limits import (
    normalized_limit,
    round_limit,
    subject_limit,
    subject_share,
)
from meltguard.api.quotas import (
    QuotaDocumentInvalid,
    QuotaTier,
    dump_quota_document,
    parse_quota_document,
    render_ratelimit_config,
)
from meltguard.quota.grpc_service import OK, OVER_LIMIT

from .conftest import POLICY, FakeClock, QuotaServer, consume, peek, quotas_json, refund
from .test_quota_grpc import close_gateway, descriptor, open_gateway, with_domain

DAY = 86400
FREE_KEY = f"{POLICY}/free"
SUBJECTS = [f"user-{n}" for n in range(2000)]


def with_free_limit(limit: Any) -> str:
    """``quotas.json`` of the conftest with the free tier's limit in force set to ``limit``
    (baseline 3, a 24 h window)."""
    document = json.loads(quotas_json())
    document["tiers"][0]["limit"] = limit
    return json.dumps(document)


def window_start(clock: FakeClock) -> int:
    """Epoch second at which the 24 h window holding the clock's time began."""
    return int(clock.now) // DAY * DAY


# --- api/limits.py -------------------------------------------------------------------------


def test_subject_shares_are_spread_evenly_over_zero_to_one() -> None:
    shares = [subject_share(FREE_KEY, f"s{n}", 0) for n in range(10_000)]
    assert all(0 <= share < 1 for share in shares)
    tenths = Counter(int(share * 10) for share in shares)
    # 1,000 expected per tenth; the binomial standard deviation is 30
    assert sorted(tenths) == list(range(10))
    assert all(850 <= count <= 1150 for count in tenths.values()), tenths


def test_a_subject_share_is_the_same_on_every_request_of_a_window() -> None:
    start = 1_795_000_000 // DAY * DAY
    first = [subject_share(FREE_KEY, subject, start) for subject in SUBJECTS[:200]]
    again = [subject_share(FREE_KEY, subject, float(start)) for subject in SUBJECTS[:200]]
    assert first == again
    assert len(set(first)) == 200  # and subjects do not share one draw


def test_the_next_window_and_another_tier_draw_again() -> None:
    start = 1_795_000_000 // DAY * DAY

    def twice(key: str, window: int) -> set[str]:
        return {s for s in SUBJECTS if subject_limit(1.4, subject_share(key, s, window)) == 2}

    today = twice(FREE_KEY, start)
    tomorrow = twice(FREE_KEY, start + DAY)
    plus = twice(f"{POLICY}/plus", start)
    for other in (tomorrow, plus):
        # independent draws of 40 %: 48 % of the subjects change, 0.4 * 0.6 each way
        changed = len(today ^ other) / len(SUBJECTS)
        assert 0.40 <= changed <= 0.56, changed


@pytest.mark.parametrize(
    ("limit", "share", "expected"),
    [
        (0, 0.0, 0),
        (0, 0.999, 0),
        (0.99, 0.0, 1),
        (0.99, 0.989, 1),
        (0.99, 0.99, 0),
        (0.99, 0.995, 0),
        (1.0, 0.0, 1),
        (1.0, 0.999, 1),
        (1, 0.5, 1),
        (1.01, 0.0, 2),
        (1.01, 0.005, 2),
        (1.01, 0.02, 1),
        (1.01, 0.999, 1),
        (1.4, 0.39, 2),
        (1.4, 0.41, 1),
    ],
)
def test_subject_limit_is_the_whole_part_plus_one_below_the_fraction(
    limit: float, share: float, expected: int
) -> None:
    assert subject_limit(limit, share) == expected


def test_raising_the_limit_within_a_window_lowers_no_subjects_limit() -> None:
    shares = [subject_share(FREE_KEY, subject, 0) for subject in SUBJECTS]
    steps = [0, 0.25, 0.5, 1, 1.2, 1.4, 1.41, 1.99, 2]
    for share in shares:
        limits = [subject_limit(limit, share) for limit in steps]
        assert limits == sorted(limits)


def test_normalized_limit_keeps_two_decimals_and_makes_whole_floats_ints() -> None:
    assert normalized_limit(2.0) == 2 and isinstance(normalized_limit(2.0), int)
    assert normalized_limit(1.4) == 1.4 and normalized_limit(7) == 7
    for bad, message in [(1.234, "at most 2 decimals"), (float("inf"), "finite")]:
        with pytest.raises(ValueError, match=message):
            normalized_limit(bad)


def test_round_limit_rounds_down_to_two_decimals() -> None:
    assert round_limit(1.409) == 1.4
    assert round_limit(2.999) == 2.99
    assert round_limit(0.29) == 0.29  # 0.29 * 100 is 28.999...: not pushed down to 0.28
    whole = round_limit(3.0)
    assert whole == 3 and isinstance(whole, int)


# --- the document ---------------------------------------------------------------------------


def test_a_limit_in_force_parses_as_a_number_with_two_decimals_or_an_int() -> None:
    fractional = parse_quota_document(with_free_limit(1.4)).tiers[0]
    assert fractional.limit == 1.4
    whole = parse_quota_document(with_free_limit(2.0)).tiers[0]
    assert whole.limit == 2 and isinstance(whole.limit, int)
    assert (
        json.loads(dump_quota_document(parse_quota_document(with_free_limit(2.0))))["tiers"][0][
            "limit"
        ]
        == 2
    )
    assert '"limit": 1.4' in dump_quota_document(parse_quota_document(with_free_limit(1.4)))


@pytest.mark.parametrize(
    ("limit", "message"),
    [
        (1.234, "tiers[0].limit: Value error, a limit carries at most 2 decimals, not 1.234"),
        ("1.4", "tiers[0].limit: Input should be a valid number"),
        (-0.5, "tiers[0].limit: Input should be greater than or equal to 0"),
    ],
)
def test_a_bad_limit_in_force_is_refused_naming_the_field(limit: Any, message: str) -> None:
    with pytest.raises(QuotaDocumentInvalid) as refused:
        parse_quota_document(with_free_limit(limit))
    assert message in str(refused.value)
    assert ".int" not in str(refused.value) and ".float" not in str(refused.value)


def test_the_tier_gives_its_subjects_the_hashed_whole_limit() -> None:
    tier = QuotaTier(name="free", limit=1.4, baseline=3, window_seconds=DAY)
    for subject in SUBJECTS[:100]:
        expected = subject_limit(1.4, subject_share(FREE_KEY, subject, DAY * 20_000))
        assert tier.subject_limit(FREE_KEY, subject, DAY * 20_000) == expected
    whole = QuotaTier(name="free", limit=2, baseline=3, window_seconds=DAY)
    assert {whole.subject_limit(FREE_KEY, s, 0) for s in SUBJECTS[:100]} == {2}
    with pytest.raises(ValueError, match="unlimited"):
        QuotaTier(name="pro", unlimited=True).subject_limit(f"{POLICY}/pro", "u", 0)


def test_envoy_ratelimit_config_carries_the_whole_part_of_the_limit() -> None:
    document = parse_quota_document(with_free_limit(1.4))
    config = yaml.safe_load(render_ratelimit_config(document, "imagegen"))
    free = config["descriptors"][0]
    assert free == {
        "key": "tier",
        "value": "free",
        "rate_limit": {"unit": "day", "requests_per_unit": 1},
    }


# --- the quota service over HTTP ------------------------------------------------------------


async def attempts_of(
    http: aiohttp.ClientSession, url: str, subject: str, times: int
) -> list[tuple[int, dict[str, Any], dict[str, str]]]:
    """``times`` consumes of one unit by ``subject``, one after the other."""
    return [await consume(http, url, subject=subject) for _ in range(times)]


async def every_subject_attempts(
    http: aiohttp.ClientSession, url: str, times: int
) -> dict[str, list[tuple[int, dict[str, Any], dict[str, str]]]]:
    """Every subject of :data:`SUBJECTS` consumes ``times`` times, 50 subjects at once."""
    gate = asyncio.Semaphore(50)

    async def one(subject: str) -> list[tuple[int, dict[str, Any], dict[str, str]]]:
        async with gate:
            return await attempts_of(http, url, subject, times)

    answers = await asyncio.gather(*(one(subject) for subject in SUBJECTS))
    return dict(zip(SUBJECTS, answers, strict=True))


async def test_at_limit_1_4_forty_percent_of_the_subjects_get_a_second_image(
    server: QuotaServer, clock: FakeClock, http: aiohttp.ClientSession
) -> None:
    server.publish(with_free_limit(1.4))
    answers = await every_subject_attempts(http, server.url, 3)
    admitted: dict[str, int] = {}
    for subject, attempts in answers.items():
        allowed = [status == 200 for status, _, _ in attempts]
        admitted[subject] = sum(allowed)
        # refused once, refused again: the limit does not change within the window
        assert allowed == [True] * admitted[subject] + [False] * (3 - admitted[subject])
        assert [status for status, _, _ in attempts if status != 200] == [429] * (
            3 - admitted[subject]
        )
        expected = subject_limit(1.4, subject_share(FREE_KEY, subject, window_start(clock)))
        assert admitted[subject] == expected
        for done, (_, body, headers) in enumerate(attempts, start=1):
            assert body["limit"] == expected and body["baseline"] == 3 and body["tightened"]
            assert body["used"] == min(done, expected)
            assert body["remaining"] == expected - min(done, expected)
            assert f";q={expected};" in headers["RateLimit-Policy"]
            assert headers["RateLimit"].startswith(f'"free";r={body["remaining"]};')
    counts = Counter(admitted.values())
    assert set(counts) == {1, 2}
    assert 0.36 <= counts[2] / len(SUBJECTS) <= 0.44, counts
    standing = await peek(http, server.url, subject=SUBJECTS[0])
    assert (standing["limit"], standing["remaining"]) == (admitted[SUBJECTS[0]], 0)


async def test_the_next_window_draws_the_lucky_subjects_again(
    server: QuotaServer, clock: FakeClock, http: aiohttp.ClientSession
) -> None:
    server.publish(with_free_limit(1.4))

    async def limits() -> dict[str, int]:
        gate = asyncio.Semaphore(50)

        async def one(subject: str) -> int:
            async with gate:
                return int((await peek(http, server.url, subject=subject))["limit"])

        return dict(zip(SUBJECTS, await asyncio.gather(*map(one, SUBJECTS)), strict=True))

    today = await limits()
    clock.now += DAY
    tomorrow = await limits()
    for limits_of_a_day in (today, tomorrow):
        twice = sum(1 for limit in limits_of_a_day.values() if limit == 2)
        assert 0.36 <= twice / len(SUBJECTS) <= 0.44, twice
    changed = sum(1 for subject in SUBJECTS if today[subject] != tomorrow[subject])
    assert 0.40 <= changed / len(SUBJECTS) <= 0.56, changed


async def test_a_whole_limit_written_2_0_is_the_limit_2_for_everyone(
    server: QuotaServer, http: aiohttp.ClientSession
) -> None:
    server.publish(with_free_limit(2.0))
    answers = await asyncio.gather(*(attempts_of(http, server.url, s, 3) for s in SUBJECTS[:50]))
    for attempts in answers:
        assert [status for status, _, _ in attempts] == [200, 200, 429]
        assert all(body["limit"] == 2 and isinstance(body["limit"], int) for _, body, _ in attempts)


async def test_a_refund_gives_back_within_the_subjects_own_limit(
    server: QuotaServer, clock: FakeClock, http: aiohttp.ClientSession
) -> None:
    server.publish(with_free_limit(1.4))
    lucky = next(
        s
        for s in SUBJECTS
        if subject_limit(1.4, subject_share(FREE_KEY, s, window_start(clock))) == 2
    )
    taken = [await consume(http, server.url, subject=lucky, requestId=f"r{n}") for n in range(3)]
    assert [status for status, _, _ in taken] == [200, 200, 429]
    back = await refund(http, server.url, "r0", subject=lucky)
    assert back["refunded"] and (back["limit"], back["used"], back["remaining"]) == (2, 1, 1)
    status, body, _ = await consume(http, server.url, subject=lucky)
    assert (status, body["remaining"]) == (200, 0)


async def test_the_limit_gauge_holds_the_fractional_limit(
    server: QuotaServer, http: aiohttp.ClientSession
) -> None:
    server.publish(with_free_limit(1.4))
    async with http.get(f"{server.url}/metrics") as response:
        text = await response.text()
    (family,) = [
        f for f in text_string_to_metric_families(text) if f.name == "meltguard_quota_limit"
    ]
    by_tier = {sample.labels["tier"]: sample.value for sample in family.samples}
    assert by_tier == {"free": 1.4, "plus": 200}


# --- Envoy's gRPC API -------------------------------------------------------------------------


async def test_grpc_gives_each_subject_the_same_whole_limit_as_http(
    http: aiohttp.ClientSession,
) -> None:
    gateway = await open_gateway()
    try:
        gateway.http.publish(with_domain(with_free_limit(1.4), "images"))
        limits: Counter[int] = Counter()
        for subject in SUBJECTS[:200]:
            first = await gateway.ask("images", descriptor(tier="free", subject=subject))
            (status,) = first.statuses
            limit = status.current_limit.requests_per_unit
            assert status.limit_remaining == limit - 1
            standing = await peek(http, gateway.http.url, subject=subject)
            assert (standing["limit"], standing["used"]) == (limit, 1)
            later = [
                (await gateway.ask("images", descriptor(tier="free", subject=subject))).overall_code
                for _ in range(2)
            ]
            assert later == ([OK, OVER_LIMIT] if limit == 2 else [OVER_LIMIT, OVER_LIMIT])
            limits[limit] += 1
        assert set(limits) == {1, 2}
    finally:
        await close_gateway(gateway)
