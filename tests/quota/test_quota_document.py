"""quotas.json (parse, validate, serialise) and its envoyproxy/ratelimit rendering."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from meltguard.api.quotas import (
    RATELIMIT_UNITS,
    QuotaDocument,
    QuotaDocumentInvalid,
    QuotaTier,
    dump_quota_document,
    parse_quota_document,
    ratelimit_unit,
    render_ratelimit_config,
)

DESIGN_EXAMPLE = """{"policy": "inference/imagegen", "observedGeneration": 3, "phase": "Melting",
  "updated": "2026-11-23T10:00:00Z", "tiers": [{"name": "free", "limit": 1, "baseline": 3,
  "windowSeconds": 86400, "tightened": true}, {"name": "pro", "unlimited": true}]}"""


def test_the_design_example_parses() -> None:
    document = parse_quota_document(DESIGN_EXAMPLE)
    assert document.policy == "inference/imagegen"
    assert document.observed_generation == 3
    assert document.updated == datetime(2026, 11, 23, 10, tzinfo=UTC)
    free, pro = document.tiers
    assert (free.limit, free.baseline, free.window_seconds, free.tightened) == (1, 3, 86400, True)
    assert pro.unlimited and pro.limit is None


def test_dumping_writes_the_documented_shape() -> None:
    dumped = json.loads(dump_quota_document(parse_quota_document(DESIGN_EXAMPLE)))
    assert dumped == json.loads(DESIGN_EXAMPLE)


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"extra": 1}, "extra"),
        ({"policy": "imagegen"}, "policy"),
        ({"policy": 3}, "policy"),
        ({"phase": "Boiling"}, "phase"),
        ({"updated": "yesterday"}, "updated"),
        ({"observedGeneration": -1}, "observedGeneration"),
        ({"tiers": []}, "tiers"),
        (
            {"tiers": [{"name": "free", "limit": "3", "baseline": 3, "windowSeconds": 60}]},
            "tiers[0].limit",
        ),
        (
            {"tiers": [{"name": "free", "limit": -1, "baseline": 3, "windowSeconds": 60}]},
            "tiers[0].limit",
        ),
        (  # past what Redis can count
            {"tiers": [{"name": "free", "limit": 2**63, "baseline": 3, "windowSeconds": 60}]},
            "tiers[0].limit",
        ),
        (
            {"tiers": [{"name": "free", "limit": 3, "baseline": 3, "windowSeconds": 0}]},
            "tiers[0].windowSeconds",
        ),
        ({"tiers": [{"name": "free", "limit": 3, "windowSeconds": 60}]}, "tiers[0]"),
        ({"tiers": [{"name": "pro", "unlimited": True, "limit": 3}]}, "tiers[0]"),
        ({"tiers": [{"name": "bad name", "unlimited": True}]}, "tiers[0].name"),
        (
            {"tiers": [{"name": "pro", "unlimited": True}, {"name": "pro", "unlimited": True}]},
            "(document)",
        ),
    ],
)
def test_bad_documents_are_refused_naming_the_field(change: dict[str, object], path: str) -> None:
    body = {**json.loads(DESIGN_EXAMPLE), **change}
    with pytest.raises(QuotaDocumentInvalid) as caught:
        parse_quota_document(json.dumps(body))
    assert any(error.startswith(f"{path}:") for error in caught.value.errors), caught.value.errors


def test_text_that_is_not_json_is_refused() -> None:
    with pytest.raises(QuotaDocumentInvalid, match="Invalid JSON"):
        parse_quota_document("policy: inference/imagegen")


limited_tiers = st.builds(
    QuotaTier,
    name=st.from_regex(r"\A[a-z][a-z0-9]{0,10}\Z"),
    limit=st.integers(0, 10**6),
    baseline=st.integers(0, 10**6),
    window_seconds=st.integers(1, 366 * 86400),
    tightened=st.booleans(),
)
unlimited_tiers = st.builds(
    QuotaTier, name=st.from_regex(r"\A[a-z][a-z0-9]{0,10}\Z"), unlimited=st.just(True)
)
documents = st.builds(
    QuotaDocument,
    policy=st.just("inference/imagegen"),
    observed_generation=st.integers(0, 10**9),
    phase=st.sampled_from(["Cool", "Warm", "Hot", "Melting", "Unknown"]),
    updated=st.datetimes(timezones=st.just(UTC)),
    tiers=st.lists(
        limited_tiers | unlimited_tiers, min_size=1, max_size=4, unique_by=lambda tier: tier.name
    ),
)


@given(documents)
def test_dump_then_parse_gives_the_same_document(document: QuotaDocument) -> None:
    assert parse_quota_document(dump_quota_document(document)) == document


@given(st.integers(0, 10**6), st.integers(1, 366 * 86400))
def test_envoy_never_admits_more_than_the_limit_over_a_window(limit: int, window: int) -> None:
    unit, per_unit = ratelimit_unit(limit, window)
    unit_seconds = dict(RATELIMIT_UNITS)[unit]
    assert unit_seconds <= window
    if per_unit > 1 or limit == 0:
        assert per_unit * (window // unit_seconds) <= limit
    else:
        assert per_unit == 1 and limit >= 1  # a small limit is kept admissible, not a ban


@pytest.mark.parametrize(
    ("limit", "window", "expected"),
    [
        (3, 86400, ("day", 3)),
        (200, 10800, ("hour", 66)),
        (10, 60, ("minute", 10)),
        (5, 1, ("second", 5)),
        (1, 90, ("minute", 1)),
        (0, 3600, ("hour", 0)),
        (14, 7 * 86400, ("day", 2)),
    ],
)
def test_windows_map_to_ratelimit_units(limit: int, window: int, expected: tuple[str, int]) -> None:
    assert ratelimit_unit(limit, window) == expected


def test_the_ratelimit_config_has_one_descriptor_per_tier() -> None:
    document = parse_quota_document(DESIGN_EXAMPLE)
    config = yaml.safe_load(render_ratelimit_config(document, "imagegen"))
    assert config == {
        "domain": "imagegen",
        "descriptors": [
            {"key": "tier", "value": "free", "rate_limit": {"unit": "day", "requests_per_unit": 1}},
            {"key": "tier", "value": "pro", "rate_limit": {"unlimited": True}},
        ],
    }
    with pytest.raises(ValueError, match="envoyDomain"):
        render_ratelimit_config(document, " ")
