"""A reader that has learnt a page must read its next versions exactly as a fresh reader would."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meltguard.telemetry.interpret import COLUMNS, EXPORTER_SCHEMA, Collected, PageReader

from .helpers import render_page

POD = ("inference", "imagegen-0")


def _with_throttling(page: str) -> str:
    """The page with GPU 1 throttled for two reasons (the exporter's reason series)."""
    up = next(line for line in page.split("\n") if line.startswith('meltguard_gpu_up{gpu="1"'))
    labels = up[len("meltguard_gpu_up{") : up.rindex("}")]
    throttled = [
        f'meltguard_gpu_throttled{{{labels},reason="{r}"}} 1.0'
        for r in ("hw_thermal", "sw_thermal")
    ]
    return page + "\n".join(throttled) + "\n"


# series the exporter schema does not use: another metric, one without labels
UNUSED = 'meltguard_exporter_build_info{version="1.0"} 1.0\nprocess_open_fds 12.0\n'
BASE = _with_throttling(render_page(gpus=4)) + UNUSED
LINES = list(range(len(BASE.split("\n"))))

values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(
        ["0", "1", "0.5", "NaN", "+Inf", "-1", "400", "7", "1_0", "x", "", "\u0661", "5\t"]
    ),
    # forms that only some number parsers take, and values that are more than one token
    st.sampled_from([".5", "5.", "-0", "00.5", "1e999", "1E+05", "1,5", "1 1700000000", "1 x"]),
)
edits = st.lists(
    st.tuples(
        st.sampled_from(LINES),
        st.sampled_from(["value", "drop", "repeat", "reason", "relabel", "comment"]),
        values,
    ),
    max_size=8,
)


def edited(edit_list: list[tuple[int, str, str]]) -> str:
    lines = BASE.split("\n")
    extra = []
    for number, action, value in edit_list:
        head = lines[number].rpartition(" ")[0] or lines[number]
        if action == "value":
            lines[number] = f"{head} {value}"
        elif action == "drop":
            lines[number] = ""
        elif action == "repeat":
            extra.append(f"{head} {value}")
        elif action == "reason" and "{" in head:  # a throttle reason starts on that GPU
            labels = head[head.index("{") + 1 : head.rindex("}")]
            extra.append(f'meltguard_gpu_throttled{{{labels},reason="sw_power_cap"}} {value}')
        elif action == "relabel":  # that series now names another pod
            lines[number] = lines[number].replace('pod="imagegen-0"', 'pod="imagegen-9"')
        elif action == "comment":
            lines[number] = f"# {value}"
    return "\n".join(lines + extra)


def outcome(table: Collected) -> tuple[object, ...]:
    samples = sorted(table.samples([POD], 1.0), key=lambda s: (s.uuid, s.pod or ""))
    return samples, dict(table.rejected), table.good_lines, table.bad_lines


@settings(max_examples=200, deadline=None)
@given(first=edits, second=edits)
def test_warm_reader_reads_like_a_fresh_one(
    first: list[tuple[int, str, str]], second: list[tuple[int, str, str]]
) -> None:
    warm = PageReader(EXPORTER_SCHEMA)
    warm.read(BASE.encode())
    warm.read(edited(first).encode())
    page = edited(second).encode()
    assert outcome(warm.read(page)) == outcome(PageReader(EXPORTER_SCHEMA).read(page))


def test_values_change_between_reads_of_the_same_layout() -> None:
    reader = PageReader(EXPORTER_SCHEMA)
    before = reader.read(BASE.encode()).samples([POD], 1.0)
    hot = BASE.replace(
        "meltguard_gpu_temperature_celsius{", "meltguard_gpu_temperature_celsius{", 1
    )
    hot = "\n".join(
        line.rpartition(" ")[0] + " 91.0"
        if line.startswith("meltguard_gpu_temperature_celsius{")
        else line
        for line in hot.split("\n")
    )
    after = reader.read(hot.encode()).samples([POD], 2.0)
    assert {s.temperature_celsius for s in before} == {34.0}
    assert {s.temperature_celsius for s in after} == {91.0}
    assert {s.sampled_at for s in after} == {2.0}
    assert [s.throttle_reasons for s in after].count(frozenset({"hw_thermal", "sw_thermal"})) == 1


@pytest.mark.parametrize("series", [0, 1, 2])
def test_pages_of_few_series_read_alike_warm_and_fresh(series: int) -> None:
    lines = [f'meltguard_gpu_up{{uuid="GPU-{n}",node="a"}} ' for n in range(series)]

    def page(value: str) -> bytes:
        return ("# HELP meltguard_gpu_up Up.\n" + "".join(f"{h}{value}\n" for h in lines)).encode()

    warm = PageReader(EXPORTER_SCHEMA)
    warm.read(page("1.0"))
    for value in ("0.0", "1", "1.0"):
        table = warm.read(page(value))
        assert table.values == PageReader(EXPORTER_SCHEMA).read(page(value)).values
        assert table.values[COLUMNS.index("up") :: len(COLUMNS)] == [float(value)] * series
        assert (table.good_lines, table.bad_lines) == (series, 0)
