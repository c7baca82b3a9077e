"""Users asking for images, and the quota checks the quota service applies to them.

Model (all counts are users or images; times in seconds from the start of the simulation):

* Sessions start as a Poisson process per tier. The rate is ``dailyUsers / 86400`` shaped by
  a daily cosine (mean 1, ``troughRatio`` between the quietest and the busiest hour), plus the
  surge: ``newUsers`` within ``hours`` (rising over ``rampHours``, then steady), then interest
  decaying exponentially with ``decayHours`` as time constant, split between tiers by
  ``tierShares``. Arrivals are drawn once per scenario and seed, so every strategy meets the
  very same users.
* A user in session asks for one image every ``thinkSeconds`` on average (each step a user
  asks with probability ``1 - exp(-step / thinkSeconds)``). After each image it wants
  another with probability ``1 - 1 / imagesPerSession`` (geometric, mean
  ``imagesPerSession``), else the session ends.
* Each request is checked like the quota service does: a user who has made ``k`` images in
  the tier's current window is allowed while ``k < limit`` (the limit in force, which the
  strategy may have tightened below the tier's baseline). A fractional limit ``L`` (say 1.4)
  allows ``k < floor(L)`` and, at ``k = floor(L)``, one more image to a share
  ``L - floor(L)`` of the users (:mod:`meltguard.api.limits`). Windows are the quota
  service's own (:mod:`meltguard.core.windows`: fixed, aligned to the Unix epoch). A refused
  user gives up for the session with probability ``giveUpProbability``, else asks again later.
  A unit of quota is spent when the request is admitted (an image that later times out is
  not refunded), and each session is a new user.
* The quota service picks the lucky share by a hash of subject and window, so its answer
  stands for every retry in the window: a user refused that extra image is *held*, refused
  on each retry, until the window turns over or the limit changes in a way that might admit
  it (another whole part, or a larger fraction). It then goes back among the users who made
  ``floor`` of the old limit and meets the new one like them. An approximation: the service
  would remember that it fell outside the old share, so a raised limit admits held users a
  little more often here than it would there.

Users are kept as counts per (tier, images made in the window), so a million users cost no
more than a thousand: one vector of buckets, updated with a few binomial draws per step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from meltguard.api.quota_models import TierSpec
from meltguard.core.demand import DemandSignal, TierDemand
from meltguard.core.windows import Window
from meltguard.sim.scenario import Scenario

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

#: Limit value meaning "no limit" in the arrays of limits: above any bucket index.
UNLIMITED = math.inf


def session_rates(scenario: Scenario, tier_names: list[str], times: FloatArray) -> FloatArray:
    """Sessions starting per second, shape ``(len(times), len(tier_names))``."""
    demand = scenario.demand
    hours = times / 3600.0
    swing = (1 - demand.diurnal.trough_ratio) / (1 + demand.diurnal.trough_ratio)
    daily_shape = 1 + swing * np.cos(2 * np.pi * (hours - demand.diurnal.peak_hour) / 24)
    rates = np.zeros((len(times), len(tier_names)))
    surge_rate = _surge_rate(scenario, hours)
    for column, name in enumerate(tier_names):
        tier = demand.tiers.get(name)
        if tier is not None:
            rates[:, column] = tier.daily_users / 86400.0 * daily_shape
        if demand.surge is not None:
            rates[:, column] += surge_rate * demand.surge.tier_shares.get(name, 0.0)
    return rates


def _surge_rate(scenario: Scenario, hours: FloatArray) -> FloatArray:
    surge = scenario.demand.surge
    if surge is None:
        return np.zeros_like(hours)
    peak = surge.new_users / ((surge.hours - surge.ramp_hours / 2) * 3600.0)
    since_start = hours - surge.start_hour
    rising = np.clip(since_start / surge.ramp_hours, 0, 1) if surge.ramp_hours else 1.0
    decaying = np.exp(-np.clip(since_start - surge.hours, 0, None) / surge.decay_hours)
    return np.where(since_start < 0, 0.0, peak * rising * decaying)


def draw_session_arrivals(
    scenario: Scenario, tier_names: list[str], seed: int, *, warm_up_steps: int = 0
) -> IntArray:
    """Users starting a session in each physics step, shape ``(warm_up_steps + steps, tiers)``:
    ``warm_up_steps`` before the day (the normal day's rates: a surge starts within the day),
    then the day's."""
    step = scenario.timing.physics_step_seconds
    steps = scenario.duration_seconds // step
    midpoints = (np.arange(-warm_up_steps, steps, dtype=np.float64) + 0.5) * step
    expected = session_rates(scenario, tier_names, midpoints) * step
    return np.random.default_rng(seed).poisson(expected).astype(np.int64)


@dataclass(frozen=True, slots=True)
class QuotaOutcome:
    """One step's requests per tier: admitted, refused, and refused only because of shedding."""

    admitted: IntArray
    refused: IntArray
    shed: IntArray


@dataclass(frozen=True, slots=True)
class _Layout:
    """Where each tier's buckets sit in the one vector of users, tier after tier.

    A limited tier has ``baseline + 2`` buckets: users by images made, ``0`` to ``baseline``
    (the last refused whatever the limit), then its held bucket (users refused the extra
    image of a fractional limit, see the module docstring). An unlimited tier has one.
    """

    starts: IntArray
    sizes: list[int]
    tier_of_bucket: IntArray
    #: images made in the window, per bucket (a held bucket: its tier's baseline + 1)
    images_made: IntArray
    #: per tier, the images a subject may make whatever the limit (inf: unlimited)
    baselines: FloatArray
    #: indices of the limited tiers, and the held bucket of each
    limited: IntArray
    held: IntArray
    #: per tier, its buckets by images made (a limited tier's spread), None when unlimited
    spreads: list[slice | None]

    @classmethod
    def of(cls, tiers: list[TierSpec]) -> _Layout:
        """The buckets of ``tiers``, in their order."""
        sizes = [1 if tier.unlimited else (tier.limit or 0) + 2 for tier in tiers]
        starts = np.cumsum([0, *sizes[:-1]]).astype(np.int64)
        tier_of_bucket = np.repeat(np.arange(len(tiers)), sizes)
        limited = np.array([i for i, tier in enumerate(tiers) if not tier.unlimited],
                           dtype=np.int64)
        return cls(
            starts=starts, sizes=sizes, tier_of_bucket=tier_of_bucket,
            images_made=np.arange(sum(sizes)) - starts[tier_of_bucket],
            baselines=limits_array(tiers, {}), limited=limited,
            held=(starts + np.array(sizes) - 1)[limited],
            spreads=[None if tier.unlimited else slice(int(first), int(first) + size - 1)
                     for tier, first, size in zip(tiers, starts, sizes, strict=True)],
        )


@dataclass(frozen=True, slots=True)
class _Admission:
    """How the limits in force treat each bucket.

    ``admits``: buckets whose users are allowed (images made below the limit's whole part);
    ``lucky``: the bucket at the whole part of each fractional limit, where a share
    ``chance`` is allowed one more image and the others are held in ``held_of_lucky``;
    ``level``: per limited tier, the bucket of users who made the whole part.
    """

    #: the limits it was made for, as a list (comparing lists is quicker than arrays)
    limits: list[float]
    whole: FloatArray
    fraction: FloatArray
    admits: BoolArray
    lucky: IntArray
    chance: FloatArray
    held_of_lucky: IntArray
    level: IntArray

    @classmethod
    def of(cls, limits: FloatArray, layout: _Layout) -> _Admission:
        """How ``limits`` (tier order, held between 0 and the baselines) admit."""
        capped = np.clip(limits, 0.0, layout.baselines)
        whole = np.floor(capped)
        finite = np.where(np.isfinite(capped), capped, 0.0)
        fraction = finite - np.floor(finite)
        limited = layout.limited
        fractional = fraction[limited] > 0
        level = layout.starts[limited] + whole[limited].astype(np.int64)
        return cls(
            limits=limits.tolist(), whole=whole, fraction=fraction,
            admits=layout.images_made < whole[layout.tier_of_bucket],
            lucky=level[fractional], chance=fraction[limited][fractional],
            held_of_lucky=layout.held[fractional], level=level,
        )


class UserPopulation:
    """Users in session, bucketed by tier and images made in the current window
    (:class:`_Layout`)."""

    def __init__(self, scenario: Scenario, tiers: list[TierSpec], seed: int,
                 start: float) -> None:
        self._rng = np.random.default_rng(seed)
        step = scenario.timing.physics_step_seconds
        self._step_seconds = step
        self._start = start
        layout = self._layout = _Layout.of(tiers)
        self._starts = layout.starts
        self._below_baseline = layout.images_made < layout.baselines[layout.tier_of_bucket]
        self._below_baseline[layout.held] = True
        self._moves_from, self._moves_to = _bucket_moves(tiers, layout.sizes)
        self._ask, keep_going, retry = (
            np.array(values)[layout.tier_of_bucket]
            for values in _behaviour(scenario, tiers, step)
        )
        #: per bucket, the chance to want another image after one, then (a second copy of the
        #: buckets) the chance to ask again after a refusal: both are drawn in one call
        self._keep_going_then_retry = np.concatenate((keep_going, retry))
        self._give_up = 1 - retry
        self._windows = [(int(first), size, tier.window_seconds)
                         for first, size, tier in zip(self._starts, layout.sizes, tiers,
                                                      strict=True)]
        self._next_resets = [Window.containing(start, seconds).end
                             for _, _, seconds in self._windows]
        self._active = np.zeros(sum(layout.sizes), dtype=np.int64)
        self._step_index = 0
        self._tier_names = [tier.name for tier in tiers]
        self._in_force = _Admission.of(layout.baselines, layout)
        #: attempts in the current window by the images made before them (the signal's spread)
        self._attempted = np.zeros(sum(layout.sizes), dtype=np.int64)
        self._since_signal = _Counts.zero(len(tiers))

    def step(self, arrivals: IntArray, limits: FloatArray) -> QuotaOutcome:
        """Advance one physics step with ``limits`` in force (use :data:`UNLIMITED` for none)."""
        self._reset_finished_windows()
        self._meet_limits(limits)
        self._active[self._starts] += arrivals
        asking = self._rng.binomial(self._active, self._ask)
        admitted = self._admit(asking)
        refused = asking - admitted
        shed = np.where(self._below_baseline, refused, 0)
        self._active -= asking
        self._count_attempts(admitted, refused)
        # one call draws the same numbers as one for the admitted, then one for the refused
        next_moves = self._rng.binomial(np.concatenate((admitted, refused)),
                                        self._keep_going_then_retry)
        buckets = len(admitted)
        wanting_more, retrying = next_moves[:buckets], next_moves[buckets:]
        self._active[self._moves_to] += wanting_more[self._moves_from]
        self._active += self._hold(retrying)
        self._step_index += 1
        outcome = QuotaOutcome(
            admitted=np.add.reduceat(admitted, self._starts),
            refused=np.add.reduceat(refused, self._starts),
            shed=np.add.reduceat(shed, self._starts),
        )
        self._since_signal.add(outcome)
        return outcome

    def _meet_limits(self, limits: FloatArray) -> None:
        """Put ``limits`` in force; held users whom the change might admit go back to the
        bucket of the old limit's whole part. A lower fraction over the same whole part keeps
        them held: the quota service refuses them still."""
        old = self._in_force
        if limits.tolist() == old.limits:
            return
        new = self._in_force = _Admission.of(limits, self._layout)
        limited = self._layout.limited
        released = ((new.whole[limited] != old.whole[limited])
                    | (new.fraction[limited] > old.fraction[limited]))
        held, level = self._layout.held[released], old.level[released]
        self._active[level] += self._active[held]
        self._active[held] = 0

    def _admit(self, asking: IntArray) -> IntArray:
        """Requests allowed per bucket: all below the whole part of the limit, a ``chance``
        share of those at a fractional limit's whole part."""
        admission = self._in_force
        admitted = np.where(admission.admits, asking, 0)
        lucky = admission.lucky
        if lucky.size:
            admitted[lucky] = self._rng.binomial(asking[lucky], admission.chance)
        return admitted

    def _hold(self, retrying: IntArray) -> IntArray:
        """Where refused users who ask again wait: those refused a fractional limit's extra
        image in the held bucket (the quota service's answer stands for the window), the
        others where they were."""
        admission = self._in_force
        if admission.lucky.size:
            retrying[admission.held_of_lucky] += retrying[admission.lucky]
            retrying[admission.lucky] = 0
        return retrying

    def _count_attempts(self, admitted: IntArray, refused: IntArray) -> None:
        """Attempts by the images made before them, as the quota service counts a subject's
        attempts. The buckets know images made, not attempts, so refusals are split as in a
        steady stream: a refused user asks again with probability ``r``, so a share ``1 - r``
        of the refusals are first attempts (counted at the attempt), the rest retries
        (counted at the attempt after; later retries would climb further). Held users count
        as refused at the images they made (the limit's whole part)."""
        self._attempted += admitted
        refused = refused.copy()
        refused[self._in_force.level] += refused[self._layout.held]
        refused[self._layout.held] = 0
        giving_up = np.rint(refused * self._give_up).astype(np.int64)
        self._attempted += giving_up
        self._attempted[self._moves_to] += (refused - giving_up)[self._moves_from]

    def demand_signal(self, observed_at: float) -> DemandSignal | None:
        """What the quota service would report now: per tier, the rates since the last call
        and the spread of the window's attempts (None before any step).

        A subject who made ``k`` images in the window and asks again makes its attempt
        ``k + 1``, admitted or not; a refused user who asks again is counted at the same
        attempt again (the buckets know images made, not attempts), so the spread is then
        kept non-increasing by capping each entry at the one before.
        """
        counts, self._since_signal = self._since_signal, _Counts.zero(len(self._tier_names))
        if counts.steps == 0:
            return None
        seconds = counts.steps * self._step_seconds
        tiers = []
        for index, (name, spread) in enumerate(zip(self._tier_names, self._layout.spreads,
                                                   strict=True)):
            reaching = (() if spread is None else
                        tuple(np.minimum.accumulate(self._attempted[spread]).tolist()))
            admitted, refused = counts.admitted[index], counts.refused[index]
            tiers.append(TierDemand(
                tier=name,
                attempts_per_second=float(admitted + refused) / seconds,
                admitted_per_second=float(admitted) / seconds,
                refused_per_second=float(refused) / seconds,
                reaching=reaching,
            ))
        return DemandSignal(tiers=tuple(tiers), observed_at=observed_at)

    def _reset_finished_windows(self) -> None:
        """Counters start over when the quota service's window changes (epoch-aligned); held
        users with them."""
        now = self._start + self._step_index * self._step_seconds
        for index, (first, size, seconds) in enumerate(self._windows):
            if now >= self._next_resets[index]:
                self._next_resets[index] = Window.containing(now, seconds).end
                in_session = self._active[first:first + size].sum()
                self._active[first:first + size] = 0
                self._active[first] = in_session
                self._attempted[first:first + size] = 0


@dataclass
class _Counts:
    """Requests per tier summed over steps."""

    steps: int
    admitted: IntArray
    refused: IntArray

    @classmethod
    def zero(cls, tiers: int) -> _Counts:
        return cls(0, np.zeros(tiers, dtype=np.int64), np.zeros(tiers, dtype=np.int64))

    def add(self, outcome: QuotaOutcome) -> None:
        self.steps += 1
        self.admitted += outcome.admitted
        self.refused += outcome.refused


def _bucket_moves(tiers: list[TierSpec], sizes: list[int]) -> tuple[IntArray, IntArray]:
    """Where a user goes after an image: one bucket up in a limited tier, nowhere else.

    A limited tier's bucket of users at the baseline and its held bucket never admit, so
    they move nobody; leaving them out keeps the targets distinct, which ``+=`` on an index
    array needs.
    """
    sources: list[int] = []
    targets: list[int] = []
    first = 0
    for tier, size in zip(tiers, sizes, strict=True):
        buckets = range(first, first + size)
        if tier.unlimited:
            sources += buckets
            targets += buckets
        else:
            sources += buckets[:-2]
            targets += buckets[1:-1]
        first += size
    return np.array(sources, dtype=np.int64), np.array(targets, dtype=np.int64)


def _behaviour(scenario: Scenario, tiers: list[TierSpec], step: int
               ) -> tuple[list[float], list[float], list[float]]:
    """Per tier: chance to ask in a step, to want another image, to retry after a refusal."""
    behaviour = [scenario.demand.tiers.get(tier.name) for tier in tiers]
    ask = [1 - math.exp(-step / b.think_seconds) if b else 0.0 for b in behaviour]
    keep_going = [1 - 1 / b.images_per_session if b else 0.0 for b in behaviour]
    retry = [1 - b.give_up_probability if b else 0.0 for b in behaviour]
    return ask, keep_going, retry


def limits_array(tiers: list[TierSpec], limits: Mapping[str, float | None]) -> FloatArray:
    """Limits in tier order, never above the baseline (a cut above it changes nothing); a
    limit may be fractional (see the module docstring).

    Unlimited tiers and tiers without an entry take their baseline.
    """
    values: list[float] = []
    for tier in tiers:
        limit = limits.get(tier.name, tier.limit)
        if tier.unlimited or tier.limit is None or limit is None:
            values.append(UNLIMITED)
        elif not limit >= 0 or math.isinf(limit):
            raise ValueError(f"tier {tier.name!r}: a limit in force must be a finite number"
                             f" of images >= 0, not {limit}")
        else:
            values.append(min(limit, tier.limit))
    return np.array(values, dtype=np.float64)
