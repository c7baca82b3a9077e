"""The store interface: atomic per-subject counters with idempotent consume and refund.

A store keeps, per (policy, tier, subject, window), the units used, and per request id the
answer given, so a retried request gets its first answer again and a refund gives back
exactly what that request took, once. Each operation is one atomic step in the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

from meltguard.core.windows import Window

RefundReason = Literal[
    "refunded",
    "unknown-request",
    "not-consumed",
    "already-refunded",
    "window-ended",
    "other-caller",
]


class StoreUnavailable(Exception):
    """The store could not be reached or failed; the caller applies --on-store-error."""


class Subject(NamedTuple):
    """Whose counter: one subject of one tier of one policy (a NamedTuple: it keys the
    memory store's dicts, and tuples hash and compare in C, dataclasses in Python)."""

    policy: str
    tier: str
    subject: str


class Consumption(NamedTuple):
    """One consume request as the store sees it: take ``cost`` units of ``who``'s counter in
    ``window`` if ``used + cost <= limit``; ``now`` is epoch seconds; ``caller`` is the
    authenticated caller asking ("" without authentication), the only one who may refund it.
    (This and the other per-decision values are NamedTuples: a frozen dataclass costs several
    times as much to build, and every decision builds a few.)"""

    who: Subject
    window: Window
    cost: int
    limit: int
    request_id: str | None
    now: float
    caller: str = ""


class ConsumeOutcome(NamedTuple):
    """``allowed``: whether the units were taken; ``used``: units used in the window now;
    ``attempts``: units the subject asked for in the window so far, admitted or refused,
    this request included (a replay adds nothing); it feeds the demand signal;
    ``replayed``: the request id was seen before and this is its first answer again."""

    allowed: bool
    used: int
    attempts: int
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class RefundOutcome:
    """``refunded`` is True only for the one call that gave the units back."""

    reason: RefundReason
    used: int

    @property
    def refunded(self) -> bool:
        return self.reason == "refunded"


class QuotaStore(Protocol):
    """Counters behind the quota service. ``now`` is epoch seconds, passed in by the caller."""

    async def consume(self, take: Consumption) -> ConsumeOutcome:
        """Take the units if the limit allows; remember the answer for ``take.request_id`` (for
        at least one window length) and replay it for a retry instead of counting again."""
        ...

    async def refund(
        self, who: Subject, window: Window, request_id: str, now: float, *, caller: str = ""
    ) -> RefundOutcome:
        """Give back what ``request_id`` took, once, if its window is still the current one
        and ``caller`` is the caller that consumed it (else ``other-caller``, nothing moved)."""
        ...

    async def used(self, who: Subject, window: Window) -> int:
        """Units used in ``window`` (0 when nothing was counted)."""
        ...

    async def ping(self) -> None:
        """Raise :class:`StoreUnavailable` unless the store answers."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
