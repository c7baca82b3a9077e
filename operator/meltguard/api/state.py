"""The decision core's memory between ticks, stored in ``status.controller``.

It belongs to the API layer because it is part of the resource's schema (the CRD is generated
from it like from every other status field).

Everything ``decide()`` needs from earlier ticks is here and nowhere else, as plain JSON
data (times are seconds since the epoch), so a restarted operator resumes exactly: it reads
the status, and the next decision is the one the old operator would have made.

Per-GPU memory is kept only for GPUs that are Hot or Melting (Cool and Warm need none), so
the status stays small on a healthy fleet.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from meltguard.api.limits import LimitInForce
from meltguard.api.vocabulary import Phase


class _Plain(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


# Recommendations are kept the HPA controller's way: a new one takes the place of the last one
# older than both windows, or is appended; the first tick records the replica count found.
class Recommendation(_Plain):
    """One unstabilized replica recommendation (the HPA stabilization window's memory)."""

    time: float
    replicas: int


# ``outdated`` is the HPA controller's mark for an event that was older than the longest policy
# period of its direction when a later change in that direction was stored; the next such change
# takes its place. Scale-ups and scale-downs share one list, each direction keeping its own order,
# which is all the HPA controller's two lists hold.
class ScaleEvent(_Plain):
    """One applied change of replicas (the scaling policies' memory): +n up, -n down."""

    time: float
    delta: int
    outdated: bool = False


class TierLimit(_Plain):
    """The limit in force for one limited tier."""

    name: str
    limit: LimitInForce


class ControllerState(_Plain):
    """What the core remembers; ``ControllerState.initial()`` for a new policy."""

    hot_since: dict[str, float] = Field(default_factory=dict)
    melting_since: dict[str, float] = Field(default_factory=dict)
    cool_since: dict[str, float] = Field(default_factory=dict)
    phase: Phase | None = None
    policy_melting_since: float | None = None
    calm_since: float | None = None
    recommendations: list[Recommendation] = Field(default_factory=list)
    scale_events: list[ScaleEvent] = Field(default_factory=list)
    last_scale_time: float | None = None
    limits: list[TierLimit] = Field(default_factory=list)
    last_quota_change_time: float | None = None
    #: the most replicas the cluster has shown it can place (learnt from Pending pods)
    placeable_replicas: int | None = Field(default=None, ge=0)
    #: since when the target's pods have been waiting for GPUs without a break
    pending_since: float | None = None
    #: images one fully busy GPU makes per second, learnt on steady (Cool or Warm) ticks
    #: (demand-aware quotas' budget; see meltguard.core.headroom)
    images_per_gpu_second: float | None = Field(default=None, ge=0)
    #: the replicas placed when the cluster last refused some, kept after the ceiling is
    #: forgotten: demand-aware quotas budget for no more until the cluster places more
    placed_at_most: int | None = Field(default=None, ge=0)
    #: images per second the last quota cut for heat left, and when (the budget grows back
    #: from it; see meltguard.core.headroom)
    heat_cut: float | None = Field(default=None, ge=0)
    heat_cut_time: float | None = None
    #: images per second the GPUs were making when they overheated: the heat cut's budget
    #: grows back to a share of it at most
    heat_ceiling: float | None = Field(default=None, ge=0)
    #: images per second the last demand-aware cut aimed the limits at, until the next raise
    #: (how much the load grew since tells the next cut how far to look ahead)
    cut_load: float | None = Field(default=None, ge=0)
    #: when a limit was last raised (cuts for load wait for the burst after it to pass)
    last_raise_time: float | None = None
    #: Only in the stored status, never seen by the core: the recommendation made at every
    #: tick since ``time`` and still made at the last tick, kept apart from
    #: ``recommendations`` so that the status does not change every tick. A restarted
    #: operator counts it as made up to its own first tick (see meltguard.k8s.memory).
    recommending: Recommendation | None = None

    @classmethod
    def initial(cls) -> ControllerState:
        """The state of a policy that has never been decided on."""
        return cls()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready camelCase form for ``status.controller``."""
        return self.model_dump(by_alias=True, exclude_none=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ControllerState:
        """Read the state back from ``status.controller`` (None -> initial)."""
        if not data:
            return cls.initial()
        return cls.model_validate(data)
