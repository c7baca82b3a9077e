"""``meltguard simulate --suite``: every built-in day in one table, JSON and plots."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from meltguard.sim.report import figure, suite_columns, write
from meltguard.sim.scenario import built_in_names
from tests.sim.conftest import SuiteRun
from tests.sim.test_cli import assert_a_drawn_png

STRATEGIES = ["static-cap", "hpa-only", "meltguard"]
README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.slow
def test_the_suite_runs_every_built_in_scenario_with_every_strategy(suite_run: SuiteRun) -> None:
    entries = suite_run.figures["suite"]
    assert [entry["scenario"] for entry in entries] == built_in_names()
    for entry in entries:
        assert list(entry["summary"]) == STRATEGIES
        assert len(entry["runs"]) == 1 and entry["seeds"] == [entry["runs"][0]["seed"]]
        run = entry["runs"][0]
        ticks = round(run["durationHours"] * 3600 / run["controlTickSeconds"])
        for strategy in run["strategies"].values():
            assert all(len(values) == ticks for values in strategy["series"].values())


@pytest.mark.slow
def test_no_strategy_beats_the_best_possible_on_any_built_in_day(suite_run: SuiteRun) -> None:
    for entry in suite_run.figures["suite"]:
        run = entry["runs"][0]
        assert run["safeOptimumImages"] <= run["optimumImages"]
        for name, strategy in run["strategies"].items():
            assert strategy["servedTotal"] <= run["optimumImages"] + 0.1, (entry["scenario"], name)
            assert strategy["optimumShare"] <= 1
            assert strategy["safeOptimumShare"] >= strategy["optimumShare"]


@pytest.mark.slow
def test_the_summary_carries_every_figure_of_the_suite_table(suite_run: SuiteRun) -> None:
    for entry in suite_run.figures["suite"]:
        run = entry["runs"][0]
        tiers = list(run["strategies"]["meltguard"]["served"])
        for name in STRATEGIES:
            for column in suite_columns(tiers):
                value = figure(run["strategies"][name], column.path)
                summary = entry["summary"][name]
                for key in column.path:
                    summary = summary[key]
                assert summary == {"median": value, "min": value, "max": value}


@pytest.mark.slow
def test_each_scenario_gets_its_plot(suite_run: SuiteRun) -> None:
    drawn = sorted(path.name for path in suite_run.plots.iterdir())
    assert drawn == sorted(f"{name}.png" for name in built_in_names())
    assert_a_drawn_png(suite_run.plots / "cooling-failure.png")


@pytest.mark.slow
def test_only_the_nodes_that_lose_cooling_melt_and_only_meanwhile(suite_run: SuiteRun) -> None:
    for entry in suite_run.figures["suite"]:
        for name, strategy in entry["runs"][0]["strategies"].items():
            melting = strategy["series"]["meltingGpus"]
            if entry["scenario"] != "cooling-failure":
                assert max(melting) == 0, (entry["scenario"], name)
                continue
            hours = strategy["series"]["hour"]
            # 31 of 125 nodes, 248 GPUs, from 09:30 to 12:30 (ticks are stamped at their end)
            assert max(melting) <= 248
            assert all(9.5 < hour <= 12.5 for hour, gpus in zip(hours, melting, strict=True)
                       if gpus)
            assert 0 < strategy["meltingGpuMinutes"] <= 248 * 180


def readme_suite_rows() -> dict[tuple[str, str], list[str]]:
    """(scenario, strategy) -> the cells of the README's suite table."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## See the surge first", 1)[1].split("\n## ", 1)[0]
    names = set(built_in_names())
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip().strip("*`") for cell in line.strip().strip("|").split("|")]
        if len(cells) > 2 and cells[0] in names:
            rows[(cells[0], cells[1])] = cells[2:]
    return rows


@pytest.mark.slow
def test_the_readme_shows_the_suite_table_of_these_figures(suite_run: SuiteRun) -> None:
    rows = readme_suite_rows()
    assert len(rows) == len(built_in_names()) * len(STRATEGIES)
    for entry in suite_run.figures["suite"]:
        strategies = entry["runs"][0]["strategies"]
        tiers = list(strategies["meltguard"]["served"])
        for name in STRATEGIES:
            shown = rows[(entry["scenario"], name)]
            expected = [write(figure(strategies[name], column.path), column.style, compact=True)
                        for column in suite_columns(tiers)]
            assert [re.sub(r"\s+", "", cell) for cell in shown] == expected, \
                (entry["scenario"], name)
