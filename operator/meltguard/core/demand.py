"""What the quota service saw users ask for: the demand signal of demand-aware quotas.

The quota service sees every attempt, per tier and per subject; it reports, per tier, the
attempt, admission and refusal rates, and how the subjects' attempts in the current window
are spread. From that spread the admitted load at any other limit follows: a subject that
attempted ``a`` images in the window is admitted ``min(a, limit)``, so with ``reaching[k - 1]``
the number of subjects whose attempts reached ``k``, a limit ``L`` admits
``sum(reaching[:L])`` images per window. A fractional limit ``L`` gives a share
``L - floor(L)`` of the subjects one image more than ``floor(L)``
(:mod:`meltguard.api.limits`), so its load lies on the straight line between the two whole
limits around it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from meltguard.api.limits import round_limit
from meltguard.api.quota_models import TierSpec


@dataclass(frozen=True, slots=True)
class TierDemand:
    """One tier's demand over the last measuring interval and its current window."""

    tier: str
    attempts_per_second: float
    admitted_per_second: float
    refused_per_second: float
    #: ``reaching[k - 1]``: subjects whose attempts in the current window reached ``k``
    #: (non-increasing; subjects past the last entry are counted in it).
    reaching: tuple[int, ...]


#: Seconds the quota service averages its rates over (also a Prometheus source's default
#: rate window).
RATE_SECONDS = 60


@dataclass(frozen=True, slots=True)
class DemandSignal:
    """Every tier's demand, as read at ``observed_at`` (epoch seconds), its rates averaged
    over the last ``rate_seconds``."""

    tiers: tuple[TierDemand, ...]
    observed_at: float
    rate_seconds: float = RATE_SECONDS

    def tier(self, name: str) -> TierDemand | None:
        """The named tier's demand, if the signal has it."""
        return next((entry for entry in self.tiers if entry.tier == name), None)


@dataclass(frozen=True, slots=True)
class Spread:
    """A tier's window spread as it would be without the limit in force.

    ``known`` are measured entries of ``reaching``; past them each entry is the one before
    times ``ratio`` (``next`` the first), a geometric tail. Past the limit in force the
    measured entries count refused attempts, retries again and again, and none of the
    images wanted after a refusal, so they are estimated instead: the tail continues the
    decline of the last two admitted entries; with fewer, the decline of the entries from
    before the limit came down (subjects who went further while it was higher: the users'
    habits); without those, from the refused attempts (an overestimate), or flat. At the
    baseline the last entry holds everyone past it, so the tail repeats it. Overestimates
    err on the side of shedding.
    """

    known: tuple[int, ...]
    next: float
    ratio: float

    @classmethod
    def of(cls, reaching: Sequence[int], in_force: int, baseline: int) -> Spread:
        """The spread of ``reaching`` measured under the limit ``in_force``."""
        if not reaching:
            return cls((), 0.0, 1.0)
        if in_force >= baseline or in_force >= len(reaching):
            return cls(tuple(reaching[:-1]), float(reaching[-1]), 1.0)
        known = tuple(reaching[:in_force])
        refused = float(min(reaching[in_force], known[-1])) if known else float(reaching[0])
        ratio = _decline(known) or _decline(reaching[in_force + 1:])
        if ratio is None:
            ratio = min(1.0, refused / known[-1]) if known and known[-1] > 0 else 1.0
            return cls(known, refused, ratio)
        return cls(known, known[-1] * ratio if known else refused, ratio)

    def images(self, limit: float) -> float:
        """Images the window's subjects would have been admitted under ``limit`` (between
        two whole limits: on the line between their images)."""
        whole = math.floor(limit)
        below = self._whole_images(whole)
        if limit == whole:
            return below
        return below + (limit - whole) * (self._whole_images(whole + 1) - below)

    def _whole_images(self, limit: int) -> float:
        if limit <= len(self.known):
            return float(sum(self.known[:max(limit, 0)]))
        extra = limit - len(self.known)
        if self.ratio >= 1.0:
            tail = self.next * extra
        else:
            tail = self.next * (1 - self.ratio ** extra) / (1 - self.ratio)
        return sum(self.known) + tail


def _decline(entries: Sequence[int]) -> float | None:
    """How each entry compares to the one before, over the leading positive entries (at most
    1; None with fewer than two)."""
    positive = []
    for entry in entries:
        if entry <= 0:
            break
        positive.append(entry)
    if len(positive) < 2:
        return None
    return min(1.0, sum(positive[1:]) / sum(positive[:-1]))


def predicted_admitted(tier: TierDemand, limit: float | None, *, in_force: float | None,
                       baseline: int | None) -> float:
    """Images per second ``tier`` would be admitted at ``limit`` (None: no limit), now that
    ``in_force`` is (None: unlimited), its baseline being ``baseline``.

    The rate admitted now, scaled by how many more (or fewer) images the window's subjects
    would have been admitted under ``limit`` than under ``in_force``. Under a limit of 0
    nothing is admitted: then the attempts, times the share of the window's attempts that
    ``limit`` would admit (retries of refused subjects are attempts but no images).
    Monotone in ``limit``; proportional to the demand when more subjects of the same habits
    come. Under a fractional ``in_force`` the entry past its whole part is measured too:
    every subject that reached it was counted, whether admitted or refused.
    """
    return _TierPrediction.of(tier, in_force=in_force, baseline=baseline).admitted(limit)


@dataclass(frozen=True, slots=True)
class _TierPrediction:
    """:func:`predicted_admitted` of one tier at any limit, with what the limit does not
    change (the spread, the images under the limit in force) worked out once."""

    tier: TierDemand
    #: the spread, None when the tier is unlimited now or has no baseline
    spread: Spread | None
    #: images under the limit in force (0 under a limit of 0)
    images_in_force: float

    @classmethod
    def of(cls, tier: TierDemand, *, in_force: float | None, baseline: int | None
           ) -> _TierPrediction:
        if in_force is None or baseline is None:
            return cls(tier, None, 0.0)
        spread = Spread.of(tier.reaching, math.ceil(in_force), baseline)
        images_in_force = spread.images(in_force) if in_force > 0 else 0.0
        return cls(tier, spread, images_in_force)

    def admitted(self, limit: float | None) -> float:
        """Images per second admitted at ``limit`` (None: no limit)."""
        tier, spread = self.tier, self.spread
        if limit is None or spread is None:
            return tier.attempts_per_second
        if self.images_in_force > 0:
            return tier.admitted_per_second * spread.images(limit) / self.images_in_force
        attempted = sum(tier.reaching)
        if attempted <= 0:
            return tier.attempts_per_second * min(1.0, limit)
        return tier.attempts_per_second * min(1.0, spread.images(limit) / attempted)


class _LoadModel:
    """The load admitted over every tier at any limits, for one demand signal and the limits
    in force (water-filling asks for it at many limits)."""

    def __init__(self, tiers: Sequence[TierSpec], demand: DemandSignal,
                 in_force: Mapping[str, int | float | None]) -> None:
        self._tiers: list[_TierPrediction | None] = []
        for tier in tiers:
            seen = demand.tier(tier.name)
            self._tiers.append(None if seen is None else _TierPrediction.of(
                seen, in_force=in_force.get(tier.name), baseline=tier.limit))

    def load(self, limits: Sequence[int | float | None]) -> float:
        """Images per second admitted at ``limits`` (tier order; None: no limit)."""
        total = 0.0
        for prediction, limit in zip(self._tiers, limits, strict=True):
            if prediction is not None:
                total += prediction.admitted(limit)
        return total


#: Limits in force by tier name (whole numbers, or with two decimals).
Limits = dict[str, int | float]

#: A limit moves only when the move shifts the predicted admitted load by at least this share
#: of the budget (or reaches a baseline or a floor): smaller moves are within the tick-to-tick
#: noise of the signal, and each one is a change users see.
MIN_MOVE_SHARE = 0.13


def _every_limit(tiers: Sequence[TierSpec], in_force: Mapping[str, int | float]) -> Limits:
    """Every limited tier's limit in force, a tier left out of ``in_force`` at its baseline."""
    return {tier.name: in_force.get(tier.name, tier.limit) for tier in tiers
            if tier.limit is not None}


def water_fill(tiers: Sequence[TierSpec], demand: DemandSignal, budget: float, *,
               in_force: Mapping[str, int | float]) -> Limits:
    """The limits, in shed order, whose predicted admitted load fills ``budget`` (images/s),
    ``in_force`` being the limits now (a tier left out: at its baseline).

    The candidates run from every tier at its baseline down the shed order: the first tier
    from its baseline to its floor (the others at their baselines), then the second tier
    with the first at its floor, and so on. The first candidate that fits wins; when none
    does, every limited tier is at its floor. Each tier's whole limit is found by bisection,
    the load being monotone in it; then the fraction of one more image that fills the budget
    (the load is linear between two whole limits), rounded down to two decimals. More demand
    or less budget never gives a higher limit.
    """
    model = _LoadModel(tiers, demand, _every_limit(tiers, in_force))
    limits: list[int | float | None] = [tier.limit for tier in tiers]

    def load_at(index: int, limit: int) -> float:
        limits[index] = limit
        return model.load(limits)

    for index, tier in enumerate(tiers):
        if tier.limit is None:
            continue
        low, high = tier.floor, tier.limit
        if load_at(index, high) <= budget:
            break
        if load_at(index, low) > budget:
            continue
        while high - low > 1:  # invariant: low fits, high does not
            middle = (low + high) // 2
            if load_at(index, middle) <= budget:
                low = middle
            else:
                high = middle
        at_low, at_high = load_at(index, low), load_at(index, high)
        limits[index] = round_limit(low + (budget - at_low) / (at_high - at_low))
        break
    return {tier.name: limit or 0 for tier, limit in zip(tiers, limits, strict=True)
            if tier.limit is not None}


def worth_changing(tiers: Sequence[TierSpec], demand: DemandSignal, targets: Limits, *,
                   in_force: Mapping[str, int | float], budget: float) -> bool:
    """Whether moving from ``in_force`` to ``targets`` is a change worth making: it shifts the
    predicted load by :data:`MIN_MOVE_SHARE` of ``budget``, or takes a tier that moves to its
    baseline or its floor (so limits always get back to their baselines)."""
    current = _every_limit(tiers, in_force)
    wanted = {name: targets.get(name, limit) for name, limit in current.items()}
    if any(wanted[tier.name] in (tier.limit, tier.floor) for tier in tiers
           if tier.name in wanted and wanted[tier.name] != current[tier.name]):
        return True

    model = _LoadModel(tiers, demand, current)

    def load(limits: Mapping[str, int | float | None]) -> float:
        return model.load([limits.get(tier.name) for tier in tiers])

    return abs(load(wanted) - load(current)) >= MIN_MOVE_SHARE * budget


def attempted_total(demand: DemandSignal) -> float:
    """Images per second attempted over every tier: no limits could admit more (retries of
    refused subjects are attempts too)."""
    return sum(entry.attempts_per_second for entry in demand.tiers)


def admitted_total(demand: DemandSignal) -> float:
    """Images per second admitted over every tier."""
    return sum(entry.admitted_per_second for entry in demand.tiers)
