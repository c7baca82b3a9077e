"""``meltguard simulate`` as a user runs it: table, JSON, plot, seeds and bad input."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image, ImageStat

from meltguard.api.validation import parse_policy
from meltguard.cli import main
from meltguard.sim.scenario import defaults_only
from tests.sim.conftest import POLICY, small_document


def simulate(*args: str) -> subprocess.CompletedProcess[str]:
    """``meltguard simulate ARGS`` in this process (the command's own entry point, without
    the cost of starting Python again); its exit code and output."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["simulate", *args])
    return subprocess.CompletedProcess(["meltguard", "simulate", *args], code, out.getvalue(),
                                       err.getvalue())


def simulate_json(*args: str) -> dict[str, Any]:
    result = simulate(*args, "--json")
    assert result.returncode == 0, result.stderr
    figures: dict[str, Any] = json.loads(result.stdout)
    return figures


def test_the_table_compares_the_three_strategies(small_file: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "meltguard.cli", "simulate", "--scenario",
                             str(small_file)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    header = next(line for line in result.stdout.splitlines() if "meltguard" in line
                  and "static-cap" in line)
    assert header.split() == ["static-cap", "hpa-only", "meltguard"]
    for row in ("served free", "refused plus", "failed (timed out)", "answered within 30 s",
                "melting GPU-minutes", "GPU-hours", "served / best possible",
                "served / safe best"):
        assert row in result.stdout
    assert result.stderr == ""  # no progress bar when stderr is not a terminal


def table_cells(stdout: str, label: str) -> list[str]:
    """The cells of the table row named ``label``."""
    line = next(line for line in stdout.splitlines() if line.startswith(label))
    return line[len(label):].split()


def test_json_has_every_figure_of_the_table_and_the_time_series(small_file: Path) -> None:
    table = simulate("--scenario", str(small_file)).stdout
    figures = simulate_json("--scenario", str(small_file))
    assert figures["scenario"] == "small-surge"
    strategies = figures["strategies"]
    assert list(strategies) == ["static-cap", "hpa-only", "meltguard"]
    for label, key in (("served free", ("served", "free")), ("refused free", ("refused", "free")),
                       ("failed (timed out)", ("failedTotal",)),
                       ("answered within 30 s", ("withinSloShare",)),
                       ("melting GPU-minutes", ("meltingGpuMinutes",)),
                       ("GPU-hours", ("gpuHours",)), ("served / best possible", ("optimumShare",)),
                       ("served / safe best", ("safeOptimumShare",))):
        cells = table_cells(table, label)
        for cell, figures_of in zip(cells, strategies.values(), strict=True):
            value = figures_of
            for part in key:
                value = value[part]
            shown = float(cell.rstrip("%").replace(",", ""))
            expected = value * 100 if cell.endswith("%") else value
            assert shown == pytest.approx(expected, abs=0.051 if "." in cell else 0.51), label
    meltguard = strategies["meltguard"]
    ticks = 2 * 60  # two hours of one-minute control ticks
    assert all(len(values) == ticks for values in meltguard["series"].values())
    assert len(figures["bestPossiblePerSecond"]) == ticks
    assert meltguard["servedTotal"] == pytest.approx(sum(meltguard["served"].values()), abs=1)
    served = sum(meltguard["series"]["servedPerSecond"]) * 60
    assert served == pytest.approx(meltguard["servedTotal"], rel=0.01)
    best = sum(figures["bestPossiblePerSecond"]) * 60
    assert best == pytest.approx(figures["optimumImages"], rel=0.01)
    assert meltguard["optimumShare"] == pytest.approx(
        meltguard["servedTotal"] / figures["optimumImages"], abs=1e-3)
    assert meltguard["safeOptimumShare"] == pytest.approx(
        meltguard["servedTotal"] / figures["safeOptimumImages"], abs=1e-3)
    for label, images in (("best possible:", figures["optimumImages"]),
                          ("safe best:", figures["safeOptimumImages"])):
        shown = next(line for line in table.splitlines() if line.startswith(label))
        assert float(shown.split()[len(label.split())].replace(",", "")) == pytest.approx(
            images, abs=0.51), label


def test_same_seed_same_figures_other_seed_other_figures(small_file: Path) -> None:
    first = simulate_json("--scenario", str(small_file), "--seed", "11")
    again = simulate_json("--scenario", str(small_file), "--seed", "11", "--jobs", "1")
    other = simulate_json("--scenario", str(small_file), "--seed", "12")
    assert first == again
    assert first["strategies"] != other["strategies"]


def assert_a_drawn_png(path: Path) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width >= 800 and image.height >= 1000
        grey = image.convert("L")
        assert ImageStat.Stat(grey).stddev[0] > 10  # lines and text, not one flat colour
        assert len(image.convert("RGB").getcolors(1 << 20) or []) > 50


def test_the_plot_is_a_non_blank_png(small_file: Path, tmp_path: Path) -> None:
    png = tmp_path / "surge.png"
    result = simulate("--scenario", str(small_file), "--plot", str(png))
    assert result.returncode == 0, result.stderr
    assert f"plot written to {png}" in result.stdout
    assert_a_drawn_png(png)


def test_a_broken_policy_file_is_named_field_by_field(small_file: Path, tmp_path: Path) -> None:
    policy = copy.deepcopy(POLICY)
    policy["spec"]["quotas"]["tiers"][1]["floor"] = 500
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    result = simulate("--scenario", str(small_file), "--policy", str(path))
    validate = subprocess.run([sys.executable, "-m", "meltguard.cli", "validate", "-f",
                               str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "spec.quotas.tiers[1].floor: floor (500) must not exceed limit (100)" \
        in result.stderr
    assert "spec.quotas.tiers[1].floor: floor (500) must not exceed limit (100)" \
        in validate.stderr


def test_a_policy_file_replaces_the_scenarios_policy(small_file: Path, tmp_path: Path) -> None:
    policy = copy.deepcopy(POLICY)
    policy["spec"]["quotas"]["tiers"][0]["limit"] = 2
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    figures = simulate_json("--scenario", str(small_file), "--policy", str(path))
    assert max(figures["strategies"]["meltguard"]["series"]["firstTierLimit"]) == 2


def test_a_broken_scenario_and_a_bad_seed_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "demand": {"tiers": {}}, "policy": POLICY}))
    result = simulate("--scenario", str(path))
    assert result.returncode == 2
    assert "demand.tiers: " in result.stderr
    assert simulate("--scenario", str(path), "--seed", "-1").returncode == 2


def test_an_unwritable_plot_path_is_an_error_not_a_traceback(small_file: Path,
                                                             tmp_path: Path) -> None:
    result = simulate("--scenario", str(small_file), "--plot",
                      str(tmp_path / "no-such-dir" / "surge.png"))
    assert result.returncode == 1
    assert "cannot write the plot" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("flags", "named"), [
    (["--jobs", "0"], "--jobs"),
    (["--seeds", "0"], "--seeds"),
    (["--suite"], "--suite"),  # with --scenario: a suite is every built-in scenario
])
def test_flags_that_cannot_work_are_refused(small_file: Path, flags: list[str],
                                            named: str) -> None:
    result = simulate("--scenario", str(small_file), *flags)
    assert result.returncode == 2
    assert named in result.stderr
    assert "Traceback" not in result.stderr


def test_seeds_give_the_median_min_and_max_of_the_single_seed_runs(small_file: Path) -> None:
    over_seeds = simulate_json("--scenario", str(small_file), "--seed", "3", "--seeds", "3")
    assert over_seeds["seeds"] == [3, 4, 5]
    alone = [simulate_json("--scenario", str(small_file), "--seed", str(seed), "--jobs", "1")
             for seed in (3, 4, 5)]
    assert over_seeds["runs"] == alone  # each seed as it runs alone, jobs or no jobs
    failed = [run["strategies"]["hpa-only"]["failedTotal"] for run in alone]
    summary = over_seeds["summary"]["hpa-only"]["failedTotal"]
    assert summary == {"median": sorted(failed)[1], "min": min(failed), "max": max(failed)}
    assert over_seeds["summary"]["meltguard"]["served"]["free"]["max"] == max(
        run["strategies"]["meltguard"]["served"]["free"] for run in alone)
    table = simulate("--scenario", str(small_file), "--seed", "3", "--seeds", "3").stdout
    assert "seeds 3-5 (median (min-max))" in table
    low, high = min(failed), max(failed)
    assert f"({low:,.0f}-{high:,.0f})" in table


def test_a_fleet_scaled_to_zero_still_gives_valid_json(tmp_path: Path) -> None:
    document = small_document(fleet={"gpuSupply": 10, "initialReplicas": 0})
    document["policy"] = copy.deepcopy(POLICY)
    document["policy"]["spec"]["minReplicas"] = 0
    document["policy"]["spec"]["maxReplicas"] = 1  # mean utilization 0: stays at zero
    path = tmp_path / "empty.yaml"
    path.write_text(yaml.safe_dump(document))
    figures = simulate_json("--scenario", str(path))
    hottest = figures["strategies"]["hpa-only"]["series"]["maxTemperatureCelsius"]
    assert None in hottest  # no GPU held: no temperature, and still strict JSON


def test_defaults_runs_the_policy_with_only_its_target_replicas_and_tiers(
        small_file: Path) -> None:
    tuned = copy.deepcopy(POLICY)
    tuned["spec"]["scaling"] = {"targetUtilizationPercent": 50,
                                "scaleUp": {"maxStepReplicas": 2, "periodSeconds": 60}}
    tuned["spec"]["quotas"]["relax"] = {"stepPercent": 5, "intervalSeconds": 60}
    stripped = defaults_only(parse_policy(tuned)).spec
    assert stripped == parse_policy({**POLICY, "spec": {
        key: POLICY["spec"][key] for key in ("scaleTargetRef", "minReplicas", "maxReplicas",
                                             "quotas")}}).spec
    assert stripped.scaling.scale_up is None and stripped.quotas.relax.step_percent == 25
    figures = simulate_json("--scenario", str(small_file), "--defaults")
    assert figures["strategies"]["meltguard"]["servedTotal"] > 0
    refused = simulate("--scenario", str(small_file), "--defaults", "--policy",
                       str(small_file))
    assert refused.returncode == 2 and "--defaults" in refused.stderr
