"""Per-tier quota limits, AIMD in shed order.

* Tighten (multiplicative decrease): while the phase is Melting and scaling cannot help
  (at maxReplicas, pods pending for lack of GPUs, or melting for longer than ``graceSeconds``),
  or while telemetry is lost and ``onTelemetryLoss: tighten``, every ``tighten.intervalSeconds``
  the FIRST tier still above its floor gets ``floor(limit x factor)``, never under its floor.
  Not while every melting GPU is already cooling: the last cut is working, and a melting GPU
  stays Melting for ``cool.sustainSeconds`` after it cooled, so cutting on would overshoot.
* Relax (additive increase): once the phase has been Cool or Warm for ``relax.intervalSeconds``,
  every ``relax.intervalSeconds`` the LAST tier below its baseline gets
  ``max(1, ceil(baseline x stepPercent / 100))`` back, up to its baseline.
* One tier changes per step; unlimited tiers never change; a baseline edited in the spec
  clamps the limit in force into ``[floor, baseline]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from meltguard.api.models import QuotasSpec, TierSpec
from meltguard.api.state import TierLimit
from meltguard.api.vocabulary import Phase

Direction = Literal["tighten", "relax"]


@dataclass(frozen=True, slots=True)
class QuotaChange:
    """One tier's limit moved."""

    tier: str
    old: int
    new: int
    direction: Direction


@dataclass(frozen=True, slots=True)
class QuotaStep:
    """The limits in force after this tick, and the change made (if any)."""

    limits: tuple[TierLimit, ...]
    change: QuotaChange | None


def limits_in_force(tiers: Sequence[TierSpec], remembered: Sequence[TierLimit]) -> list[TierLimit]:
    """Each limited tier's limit: the remembered one clamped into [floor, baseline]."""
    known = {entry.name: entry.limit for entry in remembered}
    result = []
    for tier in tiers:
        if tier.limit is None:
            continue
        limit = known.get(tier.name, tier.limit)
        result.append(TierLimit(name=tier.name, limit=min(tier.limit, max(tier.floor, limit))))
    return result


def any_tightened(tiers: Sequence[TierSpec], remembered: Sequence[TierLimit]) -> bool:
    """Whether any limited tier's limit in force is below its baseline."""
    baselines = {tier.name: tier.limit for tier in tiers}
    return any(entry.limit < (baselines[entry.name] or 0)
               for entry in limits_in_force(tiers, remembered))


def _tighten(
    tiers: Sequence[TierSpec], limits: list[TierLimit], factor: float
) -> QuotaChange | None:
    by_name = {tier.name: tier for tier in tiers}
    for index, entry in enumerate(limits):
        floor = by_name[entry.name].floor
        if entry.limit > floor:
            new = max(floor, math.floor(entry.limit * factor))
            limits[index] = TierLimit(name=entry.name, limit=new)
            return QuotaChange(entry.name, entry.limit, new, "tighten")
    return None


def _relax(
    tiers: Sequence[TierSpec], limits: list[TierLimit], step_percent: float
) -> QuotaChange | None:
    by_name = {tier.name: tier for tier in tiers}
    for index in range(len(limits) - 1, -1, -1):
        entry = limits[index]
        baseline = by_name[entry.name].limit
        assert baseline is not None  # only limited tiers are in `limits`
        if entry.limit < baseline:
            step = max(1, math.ceil(baseline * step_percent / 100))
            new = min(baseline, entry.limit + step)
            limits[index] = TierLimit(name=entry.name, limit=new)
            return QuotaChange(entry.name, entry.limit, new, "relax")
    return None


def _due(last_change: float | None, interval: float, now: float) -> bool:
    return last_change is None or now - last_change >= interval


def step_quotas(
    quotas: QuotasSpec,
    *,
    remembered: Sequence[TierLimit],
    phase: Phase,
    scaling_cannot_help: bool,
    all_cooling: bool,
    calm_since: float | None,
    last_change: float | None,
    now: float,
) -> QuotaStep:
    """The limits for this tick: tighten, relax or hold (see the module docstring)."""
    limits = limits_in_force(quotas.tiers, remembered)
    shed = (phase == "Melting" and scaling_cannot_help and not all_cooling) or (
        phase == "Unknown" and quotas.on_telemetry_loss == "tighten"
    )
    change = None
    if shed and _due(last_change, quotas.tighten.interval_seconds, now):
        change = _tighten(quotas.tiers, limits, quotas.tighten.factor)
    elif (
        calm_since is not None
        and now - calm_since >= quotas.relax.interval_seconds
        and _due(last_change, quotas.relax.interval_seconds, now)
    ):
        change = _relax(quotas.tiers, limits, quotas.relax.step_percent)
    return QuotaStep(limits=tuple(limits), change=change)
