"""The line parser agrees with prometheus-client on valid pages and refuses broken lines."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from meltguard.ingest.textformat import (
    LineError,
    SampleLine,
    parse_labels,
    parse_line,
    parse_value,
    parse_values,
)

label_values = st.text(alphabet=st.characters(codec="utf-8"), max_size=30)


@settings(max_examples=150, deadline=None)
@given(values=st.lists(st.tuples(label_values, st.floats(allow_nan=False)), min_size=1, max_size=5))
def test_parses_what_prometheus_client_writes(values: list[tuple[str, float]]) -> None:
    registry = CollectorRegistry()
    gauge = Gauge(
        "meltguard_test_value",
        "help with \\ backslash\nand newline",
        ["model", "gpu"],
        registry=registry,
    )
    for index, (label, value) in enumerate(values):
        gauge.labels(model=label, gpu=str(index)).set(value)
    text = generate_latest(registry).decode()
    mine = [parse_line(line) for line in text.split("\n")]
    parsed = [(p.name, p.labels, p.value) for p in mine if isinstance(p, SampleLine)]
    assert not any(isinstance(p, LineError) for p in mine)
    reference = [
        (s.name, s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples
    ]
    assert parsed == reference


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('meltguard_gpu_up{gpu="0",uuid="GPU-', "truncated"),
        ('meltguard_gpu_up{gpu="0"}', "truncated"),
        ('meltguard_gpu_up{gpu="0"}1', "truncated"),
        ('meltguard_gpu_up{gpu="0"} 1 2 3', "truncated"),
        ('meltguard-gpu-up{gpu="0"} 1', "bad_name"),
        ('meltguard_gpu_up{gpu="0"} one', "bad_value"),
        ('meltguard_gpu_up{gpu="0"} 1_000', "bad_value"),
        ('meltguard_gpu_up{gpu="0"} 1 12:00', "bad_value"),
        ("meltguard_gpu_up{gpu=0} 1", "bad_labels"),
        ('meltguard_gpu_up{gpu="0",gpu="1"} 1', "bad_labels"),
        ('meltguard_gpu_up{gpu="0" uuid="x"} 1', "bad_labels"),
    ],
)
def test_broken_lines_are_errors(line: str, reason: str) -> None:
    result = parse_line(line)
    assert isinstance(result, LineError)
    assert result.reason == reason


def test_timestamps_comments_and_blank_lines() -> None:
    assert parse_line("# HELP x y") is None
    assert parse_line("   ") is None
    assert parse_line("x 1.5 1700000000000") == SampleLine("x", {}, 1.5, timestamped=True)
    assert parse_line("x +Inf") == SampleLine("x", {}, float("inf"), timestamped=False)


def test_label_escapes() -> None:
    assert parse_labels(r'a="x\"y}z",b="back\\slash",c="new\nline"') == {
        "a": 'x"y}z',
        "b": "back\\slash",
        "c": "new\nline",
    }


number_texts = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.text(alphabet="0123456789.eE+-,_ x\t", max_size=8),
    st.sampled_from([".5", "5.", "00.5", "1e999", "1E+05", "NaN", "+Inf", "\u0661", "1_0"]),
).map(str.encode)


def parse_or_none(text: bytes) -> float | None:
    try:
        return parse_value(text)
    except ValueError:
        return None


@settings(max_examples=300, deadline=None)
@given(texts=st.lists(number_texts, max_size=6))
def test_batch_parse_gives_what_parse_value_gives(texts: list[bytes]) -> None:
    expected = [parse_or_none(text) for text in texts]
    plain = all(text and not text.translate(None, b"0123456789.eE+-") for text in texts)
    # None (read them one by one) exactly when a text is not a plain decimal number
    assert parse_values(texts) == (expected if plain and None not in expected else None)


def test_bad_value_lines_still_name_their_series() -> None:
    result = parse_line('meltguard_gpu_up{gpu="0"} oops')
    assert isinstance(result, LineError)
    assert (result.reason, result.name) == ("bad_value", "meltguard_gpu_up")
    assert result.labels == {"gpu": "0"}
    broken_labels = parse_line("meltguard_gpu_up{gpu=0} oops")
    assert isinstance(broken_labels, LineError)
    assert (broken_labels.reason, broken_labels.labels) == ("bad_value", None)
