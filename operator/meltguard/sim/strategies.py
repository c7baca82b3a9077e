"""How each compared strategy sets replicas and quota limits on a control tick.

* ``meltguard``: the operator's decision core, called exactly as the operator calls it: an
  :class:`~meltguard.core.observation.Observation` of one NVML-like sample per allocated GPU
  (attributed to its pod), the target's replicas and Pending pods, the state read back from
  its ``status.controller`` form, the tick's time, and the demand signal the quota service
  would report (:meth:`~meltguard.sim.demand.UserPopulation.demand_signal`): the users'
  attempts, so quotas follow the demand. Its decision is applied unless the policy is paused
  or in dry-run.
* ``hpa-only``: a HorizontalPodAutoscaler on mean GPU utilization with the policy's scaling
  behaviour (:mod:`meltguard.core.replicas`); quota limits stay at their baselines. It averages
  the same GPUs the operator sees (loading replicas' GPUs count, idle, as their exporter
  reports them).
* ``static-cap``: the same autoscaler, with some tiers' limits fixed by hand all day (the
  story's "free tier cut to 3 images a day").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from meltguard.api.models import ImageQuotaPolicy, PolicySpec
from meltguard.api.state import ControllerState, Recommendation, ScaleEvent
from meltguard.core import decide as decision_core
from meltguard.core.demand import DemandSignal
from meltguard.core.observation import Observation
from meltguard.core.replicas import hpa_sync
from meltguard.sim.fleet import SimulatedFleet


@dataclass(frozen=True, slots=True)
class Control:
    """What a strategy wants after one tick: replicas, limits in force, its phase (if any)."""

    replicas: int
    limits: Mapping[str, int | float | None]
    phase: str | None = None


class Strategy(Protocol):
    """One way of running the fleet."""

    name: str

    def control(self, now: float, fleet: SimulatedFleet, demand: DemandSignal | None
                ) -> Control:
        """Decide replicas and limits from what the fleet and the quota checks show at
        ``now`` (``demand``: the users' attempts since the last tick, None on the first)."""


def baseline_limits(spec: PolicySpec) -> dict[str, int | None]:
    """Every tier at its spec limit (None for unlimited tiers)."""
    return {tier.name: tier.limit for tier in spec.quotas.tiers}


@dataclass
class HpaStrategy:
    """HPA on mean GPU utilization, with fixed quota limits."""

    name: str
    spec: PolicySpec
    fixed_limits: dict[str, int] = field(default_factory=dict)
    _history: list[Recommendation] = field(default_factory=list)
    _events: list[ScaleEvent] = field(default_factory=list)

    def control(self, now: float, fleet: SimulatedFleet, demand: DemandSignal | None
                ) -> Control:
        """One HPA sync (the core's, as the operator's arithmetic uses it), remembered."""
        sync = hpa_sync(
            fleet.desired, utilization=fleet.mean_utilization(), scaling=self.spec.scaling,
            min_replicas=self.spec.min_replicas, max_replicas=self.spec.max_replicas,
            history=self._history, events=self._events, now=now,
        )
        self._history, self._events = sync.history, sync.events
        return Control(sync.limited.replicas,
                       {**baseline_limits(self.spec), **self.fixed_limits})


class MeltguardStrategy:
    """The operator's decision core driving the simulated fleet."""

    name = "meltguard"

    def __init__(self, policy: ImageQuotaPolicy) -> None:
        self.policy = policy
        self._namespace = policy.metadata.namespace or "default"
        self._status_controller: dict[str, object] = ControllerState.initial().to_dict()

    def control(self, now: float, fleet: SimulatedFleet, demand: DemandSignal | None
                ) -> Control:
        """Observe the fleet, call ``decide()`` as the operator does (with the quota checks'
        demand signal), keep its state."""
        spec = self.policy.spec
        observation = Observation(
            samples=fleet.samples(now, self._namespace),
            current_replicas=fleet.desired,
            pending_replicas=fleet.pending,
        )
        state = ControllerState.from_dict(self._status_controller)
        decision = decision_core.decide(spec, state, observation, now=now, demand=demand)
        self._status_controller = decision.state.to_dict()
        limits = {tier.name: None if tier.unlimited else tier.limit for tier in decision.tiers}
        if spec.paused or spec.dry_run:
            return Control(fleet.desired, baseline_limits(spec), decision.phase)
        return Control(decision.desired_replicas, limits, decision.phase)
