"""The built-in scenario with no arguments: what the README promises about meltguard."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from meltguard.sim.scenario import load_scenario


@pytest.fixture(scope="module")
def figures() -> dict[str, Any]:
    result = subprocess.run([sys.executable, "-m", "meltguard.cli", "simulate", "--json"],
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


@pytest.mark.slow
def test_it_is_a_day_of_a_thousand_gpus(figures: dict[str, Any]) -> None:
    assert figures["scenario"] == "ghibli-surge"
    assert figures["durationHours"] == 24
    assert figures["gpuSupply"] == 1000
    placed = figures["strategies"]["hpa-only"]["series"]["replicas"]
    assert max(placed) == 1000  # the surge uses every GPU the cluster has


@pytest.mark.slow
def test_meltguard_never_lets_the_fleet_melt_where_the_baselines_do(
    figures: dict[str, Any]
) -> None:
    strategies = figures["strategies"]
    assert strategies["meltguard"]["meltingMinutes"] == 0
    assert strategies["hpa-only"]["meltingMinutes"] > 60
    assert strategies["static-cap"]["meltingMinutes"] > 60


@pytest.mark.slow
def test_paying_tiers_are_shed_only_after_free_is_at_its_floor(
    figures: dict[str, Any]
) -> None:
    meltguard = figures["strategies"]["meltguard"]
    assert meltguard["outOfOrderSheds"] == 0
    assert meltguard["shed"]["pro"] == 0
    # the free tier did carry the surge
    assert meltguard["shed"]["free"] > 0


@pytest.mark.slow
def test_meltguard_fails_fewer_serves_more_and_nears_the_safe_optimum(
    figures: dict[str, Any]
) -> None:
    meltguard, hpa, static = (figures["strategies"][name]
                              for name in ("meltguard", "hpa-only", "static-cap"))
    assert meltguard["failedTotal"] < hpa["failedTotal"]
    assert meltguard["servedTotal"] > static["servedTotal"]
    assert meltguard["optimumShare"] >= 0.95


@pytest.mark.slow
def test_the_free_limit_went_down_and_came_back(figures: dict[str, Any]) -> None:
    _, policy = load_scenario("ghibli-surge")
    baseline = policy.spec.quotas.tiers[0].limit
    limits = figures["strategies"]["meltguard"]["series"]["firstTierLimit"]
    assert min(limits) < baseline
    assert limits[-1] == baseline
