"""What users asked the quota service for, per policy and tier: the demand signal's source.

Two things are kept per (policy, tier), both in units (what a consume's ``cost`` counts):

- the units attempted, admitted and refused in each recent second, for rates over the last
  :data:`~meltguard.core.demand.RATE_SECONDS` seconds;
- ``reaching[k - 1]``, the subjects whose attempts in the tier's current window reached ``k``.
  The store returns each subject's attempts in the window with every consume; a consume that
  takes them from ``a - cost`` to ``a`` crosses every ``k`` in between, and adds one to each of
  those entries. The store counts atomically, so each ``k`` of a subject is crossed by exactly
  one consume: replicas sharing a store each hold a part, and their parts add up to the exact
  whole. The entries start again from zero when the tier's window changes.

``reaching`` has at most :func:`reaching_length` entries: twice the tier's baseline (the
operator never sets a limit above the baseline, so that covers every limit it can choose, plus
how far demand goes past it), and never more than :data:`MAX_REACHING` (it is exported as one
series per entry). A subject past the last entry is counted in it, since it reached it too.

Pure bookkeeping, no I/O: :mod:`meltguard.quota.service` feeds it, the ``/v1/demand`` route and
the ``meltguard_quota_subjects_reaching`` gauge read it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Collection, Iterator

from meltguard.core.demand import RATE_SECONDS, TierDemand
from meltguard.core.windows import Window

#: Most ``reaching`` entries per tier: bounds the memory and the /metrics series of a tier.
MAX_REACHING = 256


def reaching_length(baseline: int) -> int:
    """Entries of ``reaching`` kept for a tier whose untightened limit is ``baseline``."""
    return max(1, min(2 * baseline, MAX_REACHING))


class TierTally:
    """One tier's recent units and current window's ``reaching``."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.window: Window | None = None
        self.reaching: list[int] = []
        #: [second, attempted, admitted, refused] of each recent second with a decision
        self._seconds: deque[list[int]] = deque()

    def count_units(self, now: float, cost: int, *, allowed: bool) -> None:
        """One decision of ``cost`` units (a replay is not a new attempt: do not count it)."""
        second = math.floor(now)
        if not self._seconds or self._seconds[-1][0] != second:
            self._seconds.append([second, 0, 0, 0])
            self._forget_before(second - RATE_SECONDS)
        counts = self._seconds[-1]
        counts[1] += cost
        counts[2 if allowed else 3] += cost

    def count_reaching(self, window: Window, *, attempts: int, cost: int, length: int) -> None:
        """A consume that took the subject's attempts in ``window`` to ``attempts`` (one of
        a window already left behind, answered late, counts for nothing)."""
        current = self.window
        late = (
            current is not None
            and window.seconds == current.seconds
            and window.number < current.number
        )
        if late:
            return
        if window != current:
            self.window, self.reaching = window, [0] * length
        elif len(self.reaching) != length:  # the baseline changed: keep what still fits
            self.reaching = self.reaching[:length] + [0] * (length - len(self.reaching))
        for k in range(max(attempts - cost, 0) + 1, min(attempts, length) + 1):
            self.reaching[k - 1] += 1

    def current_reaching(self, now: float) -> tuple[int, ...]:
        """``reaching`` of the window holding ``now`` (empty once the counted window ended)."""
        window = self.window
        if window is None or Window.containing(now, window.seconds) != window:
            return ()
        return tuple(self.reaching)

    def demand(self, tier: str, now: float) -> TierDemand:
        """Rates over the last interval (shorter just after start) and ``reaching`` now."""
        self._forget_before(math.floor(now) - RATE_SECONDS)
        elapsed = min(RATE_SECONDS, max(now - self.started, 1.0))
        attempted = admitted = refused = 0
        for _, attempted_units, admitted_units, refused_units in self._seconds:
            attempted += attempted_units
            admitted += admitted_units
            refused += refused_units
        return TierDemand(
            tier=tier,
            attempts_per_second=attempted / elapsed,
            admitted_per_second=admitted / elapsed,
            refused_per_second=refused / elapsed,
            reaching=self.current_reaching(now),
        )

    def _forget_before(self, second: int) -> None:
        while self._seconds and self._seconds[0][0] <= second:
            self._seconds.popleft()


class DemandTally:
    """Every tier's :class:`TierTally`, created on its first decision."""

    def __init__(self) -> None:
        self._tiers: dict[tuple[str, str], TierTally] = {}

    def tier(self, policy: str, tier: str, now: float) -> TierTally:
        """The tally of (policy, tier), new if it had no decision yet."""
        key = (policy, tier)
        tally = self._tiers.get(key)
        if tally is None:
            tally = self._tiers[key] = TierTally(started=now)
        return tally

    def keep_only(self, tiers: Collection[tuple[str, str]]) -> None:
        """Forget the tallies of tiers no longer published (``tiers``: (policy, tier))."""
        for gone in self._tiers.keys() - set(tiers):
            del self._tiers[gone]

    def demand(self, policy: str, tier: str, now: float) -> TierDemand:
        """The tier's demand; zero rates and no ``reaching`` before its first decision."""
        tally = self._tiers.get((policy, tier))
        if tally is None:
            return TierDemand(tier, 0.0, 0.0, 0.0, ())
        return tally.demand(tier, now)

    def reaching_entries(self, now: float) -> Iterator[tuple[str, str, int, int]]:
        """(policy, tier, k, subjects) of every current window's entry, for the gauge."""
        for (policy, tier), tally in self._tiers.items():
            for k, subjects in enumerate(tally.current_reaching(now), start=1):
                yield policy, tier, k, subjects
