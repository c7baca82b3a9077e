"""The models reject each rule's broken policy, naming the field; examples pass."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from meltguard.api.durations import MAX_DURATION_SECONDS, duration_seconds, format_duration
from meltguard.api.quotas import QuotaTier
from meltguard.api.validation import PolicyInvalid, parse_policy

from .cases import BROKEN, EXAMPLES, broken


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.name)
def test_examples_are_valid(example: Path) -> None:
    for document in yaml.safe_load_all(example.read_text()):
        parse_policy(document)


@pytest.mark.parametrize(("document", "path", "words"), [case[1:4] for case in BROKEN],
                         ids=[case[0] for case in BROKEN])
def test_broken_policy_names_the_field(document: dict[str, Any], path: str, words: str) -> None:
    with pytest.raises(PolicyInvalid) as raised:
        parse_policy(document)
    errors = {error.path: error.message for error in raised.value.errors}
    assert path in errors, errors
    assert words in errors[path]


@pytest.mark.parametrize(("text", "seconds"),
                         [("90s", 90), ("30m", 1800), ("3h", 10800), ("24h", 86400), ("1d", 86400)])
def test_durations(text: str, seconds: int) -> None:
    assert duration_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "0s", "-1h", "1w", "1.5h", "h", "10 m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        duration_seconds(text)


@pytest.mark.parametrize(("seconds", "text"), [(86400, "1d"), (10800, "3h"), (90, "90s"),
                                               (1800, "30m"), (86401, "86401s")])
def test_format_duration(seconds: int, text: str) -> None:
    assert format_duration(seconds) == text


def test_the_longest_window_a_policy_admits_is_published() -> None:
    """A tier window the spec accepts must fit quotas.json too, or every tick would fail."""
    spec = parse_policy(broken("spec.quotas.tiers[0].window", "9999999d")).spec
    tier = spec.quotas.tiers[0]
    published = QuotaTier(name=tier.name, limit=tier.limit, baseline=tier.limit,
                          window_seconds=tier.window_seconds)
    assert published.window_seconds == MAX_DURATION_SECONDS
