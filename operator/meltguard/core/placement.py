"""How many replicas the cluster can place, learnt from the pods it could not place.

Pods left Pending for lack of GPUs tell the core what the cluster holds: the replicas placed
(``current - pending``) are all it can run now. From that the core

* never asks for more than that ceiling, also after the Pending pods are gone, for as long as
  the replicas it wishes for exceed it (the next wish that fits forgets it, so that a cluster
  grown in between is found at the next surge; a cluster that places more than the ceiling,
  replicas set by someone else, forgets it too);
* gives the Pending replicas back once they have waited ``spec.scaling.pendingGraceSeconds``
  (time for a cluster autoscaler to bring a node): they serve nothing, and an HPA-like count
  that includes them would hold replicas the cluster never runs.

Pure functions: what was learnt comes in and goes out through
:class:`~meltguard.api.state.ControllerState` (``placeableReplicas``, ``pendingSince``).
"""

from __future__ import annotations

from dataclasses import dataclass

from meltguard.core.replicas import Limited

NO_GPU_CAPACITY = "NoGPUCapacity"
PENDING_RELEASED = "PendingReleased"


@dataclass(frozen=True, slots=True)
class Placement:
    """What the core knows this tick about the room for the target's pods."""

    current: int
    pending: int
    #: the most replicas the cluster has shown it can place; None while not learnt
    ceiling: int | None
    #: since when pods have been waiting for GPUs without a break; None when none waits
    pending_since: float | None

    @property
    def placed(self) -> int:
        """The replicas the scheduler found room for (or has not refused yet)."""
        return max(0, self.current - self.pending)


def learn_placement(*, current: int, pending: int, wished: int | None, ceiling: int | None,
                    pending_since: float | None, now: float) -> Placement:
    """This tick's placement knowledge from the last tick's (``ceiling``, ``pending_since``)
    and what is seen now; ``wished`` is the replica count the rules would like, unbounded
    (None on a tick that wishes nothing, without telemetry: the ceiling stays)."""
    if pending > 0:
        placed = max(0, current - pending)
        return Placement(current, pending, placed,
                         now if pending_since is None else pending_since)
    fits = wished is not None and ceiling is not None and wished <= ceiling
    if ceiling is not None and (fits or current > ceiling):
        ceiling = None
    return Placement(current, 0, ceiling, None)


def within_ceiling(proposal: Limited, placement: Placement) -> Limited:
    """A scale-up cut to the learnt ceiling (never below the replicas there are)."""
    ceiling = placement.ceiling
    if ceiling is None or proposal.replicas <= max(ceiling, placement.current):
        return proposal
    return Limited(max(ceiling, placement.current), NO_GPU_CAPACITY,
                   f"the cluster placed at most {ceiling} replicas: asking for no more")


def release_pending(limited: Limited, placement: Placement, *, grace_seconds: int,
                    min_replicas: int, now: float) -> Limited:
    """The replicas without those that waited for GPUs past the grace period (down to
    ``min_replicas`` at most); ``limited`` when none did or it is already that low."""
    since = placement.pending_since
    if since is None or now - since < grace_seconds:
        return limited
    kept = max(placement.placed, min_replicas)
    if limited.replicas <= kept:
        return limited
    return Limited(kept, PENDING_RELEASED,
                   f"{placement.pending} pods waited over {grace_seconds} s for GPUs: "
                   f"giving them back, keeping {kept} replicas")
