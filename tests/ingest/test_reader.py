"""The fast page reader reads every page exactly as the reference reader does.

The reference (:func:`read_page`) parses every line in full; the fast reader
(:class:`PageReader`) remembers earlier pages of its endpoint, reads a page of the last one's
shape by position and other pages line by line, parsing in full only what it has not met.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meltguard.ingest.reader import PageReader
from meltguard.ingest.reference_reader import read_page
from meltguard.ingest.schema import COLUMNS, DCGM_SCHEMA, EXPORTER_SCHEMA, Schema
from meltguard.ingest.table import Collected

from .pages import render_page

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
    st.sampled_from(
        [".5", "5.", "-0", "00.5", "1e999", "1E+05", "1,5", "1 1700000000", "1\t1700000000", "1 x"]
    ),
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


def reference(page: bytes, schema: Schema = EXPORTER_SCHEMA) -> tuple[object, ...]:
    return outcome(read_page(schema, page))


@settings(max_examples=200, deadline=None)
@given(first=edits, second=edits)
def test_warm_reader_reads_like_the_reference(
    first: list[tuple[int, str, str]], second: list[tuple[int, str, str]]
) -> None:
    warm = PageReader(EXPORTER_SCHEMA)
    warm.read(BASE.encode())
    warm.read(edited(first).encode())
    page = edited(second).encode()
    assert outcome(warm.read(page)) == reference(page)


@settings(max_examples=100, deadline=None)
@given(edit_list=edits)
def test_fresh_reader_reads_like_the_reference(edit_list: list[tuple[int, str, str]]) -> None:
    page = edited(edit_list).encode()
    assert outcome(PageReader(EXPORTER_SCHEMA).read(page)) == reference(page)


def test_values_change_between_reads_of_the_same_layout() -> None:
    reader = PageReader(EXPORTER_SCHEMA)
    before = reader.read(BASE.encode()).samples([POD], 1.0)
    hot = "\n".join(
        line.rpartition(" ")[0] + " 91.0"
        if line.startswith("meltguard_gpu_temperature_celsius{")
        else line
        for line in BASE.split("\n")
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
        assert table.values == read_page(EXPORTER_SCHEMA, page(value)).values
        assert table.values[COLUMNS.index("up") :: len(COLUMNS)] == [float(value)] * series
        assert (table.good_lines, table.bad_lines) == (series, 0)


def test_pods_that_keep_changing_are_read_right_while_the_reader_forgets_old_lines() -> None:
    reader = PageReader(EXPORTER_SCHEMA)
    for generation in range(12):
        pod = f"imagegen-{generation}"
        page = render_page(gpus=16, pods=(f"inference/{pod}",)).encode()
        for _ in range(2):  # a new layout, then the same one by position
            table = reader.read(page)
            assert outcome(table) == outcome(read_page(EXPORTER_SCHEMA, page))
            assert len(table.samples([("inference", pod)], 1.0)) == 16


def test_a_gpu_whose_every_line_is_bad_is_down_not_gone() -> None:
    page = render_page(gpus=2)
    broken = "\n".join(
        line.rpartition(" ")[0] + " oops" if 'gpu="1"' in line else line
        for line in page.split("\n")
    ).encode()
    warm = PageReader(EXPORTER_SCHEMA)
    warm.read(page.encode())
    for table in (warm.read(broken), PageReader(EXPORTER_SCHEMA).read(broken)):
        samples = table.samples([POD], 1.0)
        assert sorted(s.up for s in samples) == [False, True]
        assert table.rejected["bad_value"] == 8
    assert outcome(warm.read(broken)) == reference(broken)


def test_dcgm_pages_read_like_the_reference() -> None:
    from pathlib import Path

    for fixture in sorted(Path(__file__).with_name("fixtures").glob("*.txt")):
        page = fixture.read_bytes()
        wanted = [("inference", f"imagegen-7f9c-{i}") for i in range(3)]
        reader = PageReader(DCGM_SCHEMA)
        for _ in range(2):
            table = reader.read(page)
            expected = read_page(DCGM_SCHEMA, page)
            assert sorted(table.samples(wanted, 1.0)) == sorted(expected.samples(wanted, 1.0))
            assert (table.good_lines, table.bad_lines) == (expected.good_lines, 0)
