"""What the operator keeps per policy between ticks, and when the status must be written.

The core's memory changes at every tick: each tick adds a recommendation stamped with its
time. Writing that every tick would be one status write per policy and tick, nearly all of
them saying nothing new. So the operator keeps the memory itself, and the status holds it in
a form that stays the same while nothing a decision depends on changes:

* recommendations that can no longer change any decision are dropped (:func:`pruned`): one
  older than both stabilization windows, or one followed by a later one of the same count
  (a window takes the highest and the lowest count in it, and the later one stays in it
  longer);
* the newest recommendation is stored apart, as ``recommending`` with the time it was first
  made (:func:`stored_form`), so that the status changes when the recommended count does,
  not when the same count is made again;
* a restarted operator reads ``recommending`` as made up to its own first tick
  (:func:`resumed`): the same as if the old operator had kept ticking through the outage
  with the same recommendation. Nothing else is ever only in memory, so the restarted
  operator decides what the old one would have decided.

The status is written at once when anything a decision depends on or a user acts on changes
(:func:`essentials`: the stored controller memory, phase, replica counts, quotas, the
conditions' status and reason); changes only in GPU counts and condition messages wait up to
``spec.statusIntervalSeconds``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from meltguard.api.models import PolicyStatus
from meltguard.api.quotas import QuotaDocument
from meltguard.api.state import ControllerState, Recommendation
from meltguard.core.replicas import Behavior

#: Status keys that only describe (counts); they are refreshed at most every status interval.
DETAIL_KEYS = frozenset({"gpus"})
#: Condition keys that only describe; the others (type, status, reason, ...) are essential.
CONDITION_DETAIL_KEYS = frozenset({"message"})


@dataclass(frozen=True, slots=True)
class Remembered:
    """One policy's memory: the core's state, the status as stored, the quotas published.

    ``uid`` tells a policy from a new one of the same name. ``status`` is what the status
    subresource holds after this operator's last write (or what it found there), the base
    of the next merge patch; ``parsed`` the same as a model (None if it did not parse).
    """

    uid: str
    state: ControllerState
    status: Mapping[str, Any]
    parsed: PolicyStatus | None
    written_at: float
    published: QuotaDocument | None


def longest_window(behavior: Behavior) -> int:
    """The longest stabilization window in seconds: how long a recommendation can count."""
    return max(behavior.scale_up.stabilization_window_seconds,
               behavior.scale_down.stabilization_window_seconds)


def pruned(state: ControllerState, behavior: Behavior, now: float) -> ControllerState:
    """``state`` without the recommendations that no later decision can see (the newest one
    always stays: it tells the core that this is not the first tick)."""
    history = sorted(state.recommendations, key=lambda recommendation: recommendation.time)
    if not history:
        return state
    cutoff = now - longest_window(behavior)
    kept: list[Recommendation] = []
    seen: set[int] = set()
    for recommendation in reversed(history):
        newest = not kept
        if newest or (recommendation.time > cutoff and recommendation.replicas not in seen):
            kept.append(recommendation)
            seen.add(recommendation.replicas)
    kept.reverse()
    if kept == state.recommendations:
        return state
    return state.model_copy(update={"recommendations": kept})


def stored_form(state: ControllerState, before: ControllerState | None) -> ControllerState:
    """The pruned ``state`` as the status holds it: the newest recommendation apart, with
    the time it was first made (taken from ``before``, the stored form of the previous
    tick, while the count is the same)."""
    if not state.recommendations:
        return state
    *older, newest = state.recommendations
    previous = before.recommending if before is not None else None
    since = previous.time if previous is not None and previous.replicas == newest.replicas \
        else newest.time
    return state.model_copy(update={
        "recommendations": older,
        "recommending": Recommendation(time=since, replicas=newest.replicas)})


def resumed(stored: ControllerState, now: float) -> ControllerState:
    """The core's state from a stored status: ``recommending`` made up to ``now``."""
    if stored.recommending is None:
        return stored
    latest = Recommendation(time=now, replicas=stored.recommending.replicas)
    return stored.model_copy(update={"recommendations": [*stored.recommendations, latest],
                                     "recommending": None})


def essentials(status: Mapping[str, Any]) -> dict[str, Any]:
    """The status without what only describes (GPU counts, condition messages)."""
    kept = {key: value for key, value in status.items() if key not in DETAIL_KEYS}
    conditions = status.get("conditions")
    if isinstance(conditions, list):
        kept["conditions"] = [
            {key: value for key, value in condition.items() if key not in CONDITION_DETAIL_KEYS}
            for condition in conditions if isinstance(condition, Mapping)]
    return kept


def status_due(stored: Mapping[str, Any], new: Mapping[str, Any], *, written_at: float,
               now: float, interval_seconds: float) -> bool:
    """Whether ``new`` must be written over ``stored`` now."""
    if new == stored:
        return False
    if essentials(new) != essentials(stored):
        return True
    return now - written_at >= interval_seconds
