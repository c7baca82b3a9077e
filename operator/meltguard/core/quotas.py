"""Per-tier quota limits in shed order: AIMD, or demand-aware (:func:`follow_demand`).

* Tighten (multiplicative decrease): while the phase is Melting and scaling cannot help
  (at maxReplicas, pods pending for lack of GPUs, or melting for longer than ``graceSeconds``),
  or while telemetry is lost and ``onTelemetryLoss: tighten``, every ``tighten.intervalSeconds``
  the FIRST tier still above its floor gets ``floor(limit x factor)``, never under its floor.
  Not while every melting GPU is already cooling: the last cut is working, and a melting GPU
  stays Melting for ``cool.sustainSeconds`` after it cooled, so cutting on would overshoot.
* Relax (additive increase): while the phase is Cool (not Warm: utilization above target is
  no room to give back) and has been calm for ``relax.intervalSeconds``,
  every ``relax.intervalSeconds`` the LAST tier below its baseline gets
  ``max(1, ceil(baseline x stepPercent / 100))`` back, up to its baseline.
* One tier changes per step; unlimited tiers never change; a baseline edited in the spec
  clamps the limit in force into ``[floor, baseline]``.

AIMD is the fallback for a policy without a demand signal. With one, :func:`follow_demand`
takes the water-filled limits (:func:`meltguard.core.demand.water_fill`) in one step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from meltguard.api.limits import round_limit
from meltguard.api.quota_models import QuotasSpec, TierSpec
from meltguard.api.state import TierLimit
from meltguard.api.vocabulary import Phase
from meltguard.core.demand import Limits

Direction = Literal["tighten", "relax"]


@dataclass(frozen=True, slots=True)
class QuotaChange:
    """One tier's limit moved."""

    tier: str
    old: int | float
    new: int | float
    direction: Direction


@dataclass(frozen=True, slots=True)
class QuotaStep:
    """The limits in force after this tick, and the changes made (AIMD: at most one)."""

    limits: tuple[TierLimit, ...]
    changes: tuple[QuotaChange, ...] = ()


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
        phase == "Cool"
        and calm_since is not None
        and now - calm_since >= quotas.relax.interval_seconds
        and _due(last_change, quotas.relax.interval_seconds, now)
    ):
        change = _relax(quotas.tiers, limits, quotas.relax.step_percent)
    return QuotaStep(limits=tuple(limits), changes=(change,) if change else ())


@dataclass(frozen=True, slots=True)
class Pressure:
    """What the fleet shows this tick, as demand-aware quotas weigh it.

    ``utilization``: the fresh GPUs' mean (0..1); ``fill``: the utilization the quotas aim
    at when scaling cannot help; ``overheated``: some GPU at the melt temperature or
    thermally throttled (heat, not load: the load must come down whatever the budget says);
    ``warm``: some GPU not yet back under ``melt.cool.temperatureCelsius`` (no room to give:
    the heat of the load now has not settled).
    """

    utilization: float
    fill: float
    overheated: bool
    warm: bool
    scaling_cannot_help: bool
    all_cooling: bool


#: How far below ``fill`` the utilization must be before any limit is raised: the dead band
#: that keeps a limit from going up on the same load that brought it down.
RELAX_MARGIN = 0.05
#: A raised limit is at most this many times the limit in force, or the next whole number
#: above it: the window's spread is measured up to the image the limit in force admits to
#: some subjects, so the load past that is a guess, and the users refused so far come back
#: at once, more of them the bigger the step.
RELAX_GROWTH = 1.5
#: After a raise, limits are cut for load (heat aside) only this long after it: the users
#: refused so far come back at once, a burst that passes, and a cut for it would take the
#: limit straight back down, again and again.
RAISE_SETTLE_SECONDS = 600
#: A cut looks ahead for at most this much growth of the load by the next chance to cut.
MAX_LOOK_AHEAD = 1.5


def look_ahead(cut_load: float | None, *, admitted: float, since: float,
               interval: float) -> float:
    """How much the load will grow by the next chance to cut (one ``interval`` from now), as
    it grew since the last cut, which aimed it at ``cut_load`` (images per second) ``since``
    seconds ago: 1 when it did not grow, at most :data:`MAX_LOOK_AHEAD`.

    Without it, a demand that keeps rising is chased by a cut every interval, each one
    enough for the demand of the moment only."""
    if cut_load is None or cut_load <= 0 or since <= 0 or admitted <= cut_load:
        return 1.0
    growth: float = (admitted / cut_load) ** (interval / since)
    return min(MAX_LOOK_AHEAD, growth)


def follow_demand(
    quotas: QuotasSpec,
    *,
    remembered: Sequence[TierLimit],
    tighten_to: Limits,
    relax_to: Limits,
    pressure: Pressure,
    last_change: float | None,
    last_raise: float | None,
    rate_seconds: float,
    now: float,
) -> QuotaStep:
    """Demand-aware limits, taken in one step: ``tighten_to`` the water-filled limits for the
    budget, ``relax_to`` those the limits may be raised to now.

    Down, when scaling cannot help and the fleet is overheated, or past ``fill`` and
    :data:`RAISE_SETTLE_SECONDS` after the last raise (``last_raise``), every
    ``tighten.intervalSeconds``: each tier above its target goes straight to it. Up, only with
    measured room (utilization ``RELAX_MARGIN`` under ``fill``, every GPU cool), every
    ``relax.intervalSeconds``: each tier below its target goes up to it. Either way, not
    before the signal's rates (averaged over ``rate_seconds``) count only admissions made
    since the last change: rates that still count those under the limits before would take
    the next cut deeper, again and again, however steady the demand.
    """
    limits = limits_in_force(quotas.tiers, remembered)
    settled = last_raise is None or now - last_raise >= RAISE_SETTLE_SECONDS
    pressed = pressure.scaling_cannot_help and not pressure.all_cooling and (
        pressure.overheated or (settled and pressure.utilization >= pressure.fill))
    roomy = (not pressure.overheated and not pressure.warm
             and pressure.utilization < pressure.fill - RELAX_MARGIN)
    tighten_every = max(quotas.tighten.interval_seconds, rate_seconds)
    relax_every = max(quotas.relax.interval_seconds, rate_seconds)
    if pressed and _due(last_change, tighten_every, now):
        return _toward(limits, tighten_to, "tighten")
    if roomy and _due(last_change, relax_every, now):
        return _toward(limits, relax_to, "relax")
    return QuotaStep(limits=tuple(limits))


def within_growth(in_force: Limits, targets: Limits) -> Limits:
    """``targets``, each at most :data:`RELAX_GROWTH` times its tier's limit in force, or
    the next whole number above it."""
    def highest(limit: int | float) -> int | float:
        return round_limit(max(math.floor(limit) + 1, limit * RELAX_GROWTH))

    return {name: min(target, highest(in_force[name])) if name in in_force else target
            for name, target in targets.items()}


def _toward(limits: list[TierLimit], targets: Limits,
            direction: Direction) -> QuotaStep:
    changes = []
    for index, entry in enumerate(limits):
        target = targets.get(entry.name, entry.limit)
        if target < entry.limit if direction == "tighten" else target > entry.limit:
            limits[index] = TierLimit(name=entry.name, limit=target)
            changes.append(QuotaChange(entry.name, entry.limit, target, direction))
    return QuotaStep(limits=tuple(limits), changes=tuple(changes))
