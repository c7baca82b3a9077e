"""Small scenarios for the simulator tests (the built-in day is for the acceptance run)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from meltguard.api.models import ImageQuotaPolicy
from meltguard.sim.scenario import Fleet, Scenario, parse_scenario

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

#: Two hours, 40 GPUs, a surge after 30 minutes: runs in well under a second per strategy.
SMALL_SCENARIO: dict[str, Any] = {
    "name": "small-surge",
    "durationHours": 2,
    "seed": 7,
    "timing": {"physicsStepSeconds": 30, "controlTickSeconds": 60},
    "fleet": {"gpuSupply": 40, "initialReplicas": 10, "gpuSecondsPerImage": 3,
              "startupSeconds": 120},
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
    """A fleet spec for hand-worked physics: no per-GPU spread unless asked."""
    thermal = {"spreadCelsius": 0, **fields.pop("thermal", {})}
    return Fleet.model_validate({"thermal": thermal, **fields})
