"""Small scenarios and fleets for the simulator tests (the built-in days are for the
acceptance runs)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from meltguard.api.models import ImageQuotaPolicy
from meltguard.sim.fleet import SimulatedFleet
from meltguard.sim.scenario import (
    CoolingFailure,
    Fleet,
    GpuProfile,
    Scenario,
    load_scenario,
    parse_scenario,
)
from meltguard.sim.thermal import CoolingPlan

POLICY: dict[str, Any] = {
    "apiVersion": "meltguard.io/v1alpha1",
    "kind": "ImageQuotaPolicy",
    "metadata": {"name": "imagegen", "namespace": "inference"},
    "spec": {
        "scaleTargetRef": {"name": "imagegen-worker"},
        "minReplicas": 2,
        "maxReplicas": 60,
        "quotas": {
            "tiers": [
                {"name": "free", "limit": 6, "window": "24h", "floor": 0},
                {"name": "plus", "limit": 100, "window": "3h", "floor": 20},
                {"name": "pro", "unlimited": True},
            ]
        },
    },
}

#: The GPU profiles of the built-in scenarios (ghibli-surge's, which the others extend).
PROFILES: dict[str, GpuProfile] = load_scenario("ghibli-surge")[0].gpu_profiles

#: Two hours, 40 GPUs, a surge after 30 minutes: runs in well under a second per strategy.
SMALL_SCENARIO: dict[str, Any] = {
    "name": "small-surge",
    "durationHours": 2,
    "seed": 7,
    "timing": {"physicsStepSeconds": 30, "controlTickSeconds": 60},
    "fleet": {"gpuSupply": 40, "gpuSecondsPerImage": 3, "startupSeconds": 120},
    "gpuProfiles": {name: profile.model_dump(by_alias=True)
                    for name, profile in PROFILES.items()},
    "demand": {
        "tiers": {
            "free": {"dailyUsers": 20000, "imagesPerSession": 4},
            "plus": {"dailyUsers": 2000, "imagesPerSession": 10},
            "pro": {"dailyUsers": 300, "imagesPerSession": 20},
        },
        "surge": {"startHour": 0.5, "hours": 0.5, "rampHours": 0.1, "newUsers": 40000,
                  "decayHours": 0.5, "tierShares": {"free": 0.98, "plus": 0.02}},
    },
    "staticCaps": {"free": 3},
    "policy": POLICY,
}


def small_document(**overrides: Any) -> dict[str, Any]:
    """A deep copy of the small scenario with top-level keys replaced."""
    document = copy.deepcopy(SMALL_SCENARIO)
    document.update(overrides)
    return document


@pytest.fixture
def small() -> tuple[Scenario, ImageQuotaPolicy]:
    return parse_scenario(small_document(), "small")


@pytest.fixture
def small_file(tmp_path: Path) -> Path:
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(small_document()))
    return path


def fleet_spec(**fields: Any) -> Fleet:
    """A fleet spec for hand-worked physics."""
    return Fleet.model_validate(fields)


def exact_profile(name: str) -> GpuProfile:
    """A built-in profile without the per-GPU spread, for hand-worked figures."""
    return PROFILES[name].model_copy(update={"spread_celsius": 0.0})


def cooling_plan(*, gpus: int, gpus_per_node: int = 8, profile: str = "h200",
                 failures: Sequence[CoolingFailure] = ()) -> CoolingPlan:
    """The built-in profiles, spread-free, for ``gpus`` GPUs from clock time 0."""
    profiles = {name: exact_profile(name) for name in PROFILES}
    return CoolingPlan(profiles, profile, failures, gpus=gpus, gpus_per_node=gpus_per_node,
                       seed=0, start=0.0)


def make_fleet(step: int = 10, *, initial_replicas: int, profile: str = "h200",
               failures: Sequence[CoolingFailure] = (), slo_seconds: float = 30,
               **fields: Any) -> SimulatedFleet:
    """One tier, ``step``-second steps, spread-free GPUs from clock time 0."""
    spec = fleet_spec(**fields)
    plan = cooling_plan(gpus=spec.gpu_supply, gpus_per_node=spec.gpus_per_node,
                        profile=profile, failures=failures)
    return SimulatedFleet(spec, plan, tier_count=1, step_seconds=step,
                          initial_replicas=initial_replicas, slo_seconds=slo_seconds)


@dataclass(frozen=True)
class SuiteRun:
    """What ``meltguard simulate --suite --json --plot FOLDER`` printed and drew."""

    figures: dict[str, Any]
    plots: Path

    def scenario(self, name: str) -> dict[str, Any]:
        """One scenario's entry: seeds, summary and runs."""
        found: dict[str, Any] = next(entry for entry in self.figures["suite"]
                                     if entry["scenario"] == name)
        return found


@pytest.fixture(scope="session")
def suite_run(tmp_path_factory: pytest.TempPathFactory) -> SuiteRun:
    """The whole suite, once per test session (every built-in day, its own seed)."""
    plots = tmp_path_factory.mktemp("plots")
    result = subprocess.run([sys.executable, "-m", "meltguard.cli", "simulate", "--suite",
                             "--json", "--plot", str(plots)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return SuiteRun(json.loads(result.stdout), plots)
