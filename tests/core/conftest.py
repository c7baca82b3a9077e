"""Builders shared by the decision-core tests."""

from __future__ import annotations

from typing import Any

import pytest

from meltguard.api.models import PolicySpec
from meltguard.api.validation import parse_spec
from meltguard.core.observation import GpuSample, Observation

NOW = 1_750_000_000.0


def make_spec(**overrides: Any) -> PolicySpec:
    """The replicas and tiers of examples/full.yaml, with top-level spec fields overridden."""
    spec: dict[str, Any] = {
        "scaleTargetRef": {"name": "imagegen-worker"},
        "minReplicas": 2,
        "maxReplicas": 64,
        "quotas": {
            "tiers": [
                {"name": "free", "limit": 3, "window": "24h", "floor": 0},
                {"name": "plus", "limit": 200, "window": "3h", "floor": 50},
                {"name": "pro", "unlimited": True},
            ]
        },
    }
    spec.update(overrides)
    return parse_spec(spec)


def gpu(index: int, *, util: float = 0.5, temp: float = 60.0, at: float = NOW,
        reasons: frozenset[str] = frozenset(), mem: float = 0.5, up: bool = True) -> GpuSample:
    """One GPU sample; memory given as a used share of 80 GB."""
    total = 80e9
    return GpuSample(uuid=f"GPU-{index}", utilization=util, temperature_celsius=temp,
                     memory_used_bytes=mem * total, memory_total_bytes=total, sampled_at=at,
                     throttle_reasons=reasons, up=up)


def fleet(count: int, replicas: int, pending: int = 0, **sample: Any) -> Observation:
    """``count`` identical GPUs behind ``replicas`` replicas."""
    return Observation(tuple(gpu(i, **sample) for i in range(count)), current_replicas=replicas,
                       pending_replicas=pending)


@pytest.fixture
def spec() -> PolicySpec:
    return make_spec()
