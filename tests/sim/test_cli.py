"""``meltguard simulate`` as a user runs it: table, JSON, plot, seeds and bad input."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image, ImageStat

from tests.sim.conftest import POLICY, small_document


def simulate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meltguard.cli", "simulate", *args],
                          capture_output=True, text=True, timeout=120)


def simulate_json(*args: str) -> dict[str, Any]:
    result = simulate(*args, "--json")
    assert result.returncode == 0, result.stderr
    figures: dict[str, Any] = json.loads(result.stdout)
    return figures


def test_the_table_compares_the_three_strategies(small_file: Path) -> None:
    result = simulate("--scenario", str(small_file))
    assert result.returncode == 0, result.stderr
    header = next(line for line in result.stdout.splitlines() if "meltguard" in line
                  and "static-cap" in line)
    assert header.split() == ["static-cap", "hpa-only", "meltguard"]
    for row in ("served free", "refused plus", "failed (timed out)", "minutes melting",
                "p95 queue wait (s)", "GPU-hours", "served / safe optimum"):
        assert row in result.stdout
    assert result.stderr == ""  # no progress bar when stderr is not a terminal


def test_json_has_the_table_figures_and_the_time_series(small_file: Path) -> None:
    figures = simulate_json("--scenario", str(small_file))
    assert figures["scenario"] == "small-surge"
    assert set(figures["strategies"]) == {"static-cap", "hpa-only", "meltguard"}
    meltguard = figures["strategies"]["meltguard"]
    ticks = 2 * 60  # two hours of one-minute control ticks
    assert all(len(values) == ticks for values in meltguard["series"].values())
    assert meltguard["servedTotal"] == pytest.approx(sum(meltguard["served"].values()), abs=1)
    served = sum(meltguard["series"]["servedPerSecond"]) * 60
    assert served == pytest.approx(meltguard["servedTotal"], rel=0.01)
    assert meltguard["optimumShare"] == pytest.approx(
        meltguard["servedTotal"] / figures["optimumImages"], abs=1e-3)


def test_same_seed_same_figures_other_seed_other_figures(small_file: Path) -> None:
    first = simulate_json("--scenario", str(small_file), "--seed", "11")
    again = simulate_json("--scenario", str(small_file), "--seed", "11", "--jobs", "1")
    other = simulate_json("--scenario", str(small_file), "--seed", "12")
    assert first == again
    assert first["strategies"] != other["strategies"]


def test_the_plot_is_a_non_blank_png(small_file: Path, tmp_path: Path) -> None:
    png = tmp_path / "surge.png"
    result = simulate("--scenario", str(small_file), "--plot", str(png))
    assert result.returncode == 0, result.stderr
    assert f"plot written to {png}" in result.stdout
    with Image.open(png) as image:
        assert image.format == "PNG"
        assert image.width >= 800 and image.height >= 1000
        grey = image.convert("L")
        assert ImageStat.Stat(grey).stddev[0] > 10  # lines and text, not one flat colour
        assert len(image.convert("RGB").getcolors(1 << 20) or []) > 50


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


def test_jobs_below_one_is_refused(small_file: Path) -> None:
    result = simulate("--scenario", str(small_file), "--jobs", "0")
    assert result.returncode == 2
    assert "--jobs" in result.stderr


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
