"""The line parser agrees with prometheus-client on valid pages and refuses broken lines."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from meltguard.telemetry.textformat import LineError, SampleLine, parse_labels, parse_line

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
