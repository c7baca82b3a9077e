"""``decide()``: one tick of the control loop, as a pure function.

``decide(spec, state, observation, now=now)`` takes the policy's spec, the core's memory from the
previous tick (:class:`~meltguard.api.state.ControllerState`, kept in ``status.controller``),
what was observed this tick and the time, and returns a :class:`Decision`: the replicas to set,
the quota limits to publish, the phase, the Events and conditions to report, and the next
state. Same inputs, same decision; nothing here reads a clock or does I/O.

Quota limits move by AIMD (:mod:`meltguard.core.quotas`), or, given the quota service's
demand signal, by water-filling over it (:mod:`meltguard.core.demand`) within the budget of
:mod:`meltguard.core.headroom`.

``spec.paused`` and ``spec.dryRun`` are not looked at here: the caller decides whether to act.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from meltguard.api.models import GpuCounts, PolicySpec
from meltguard.api.quotas import QuotaTier
from meltguard.api.state import ControllerState, Recommendation
from meltguard.api.vocabulary import CALM_PHASES, Phase
from meltguard.core.demand import (
    DemandSignal,
    Limits,
    admitted_total,
    attempted_total,
    water_fill,
    worth_changing,
)
from meltguard.core.headroom import Headroom, HeatCut, headroom
from meltguard.core.observation import Observation
from meltguard.core.placement import (
    NO_GPU_CAPACITY,
    Placement,
    learn_placement,
    release_pending,
    within_ceiling,
)
from meltguard.core.quotas import (
    Pressure,
    QuotaChange,
    QuotaStep,
    any_tightened,
    follow_demand,
    limits_in_force,
    look_ahead,
    step_quotas,
    within_growth,
)
from meltguard.core.replicas import (
    WITHIN_RANGE,
    Behavior,
    Limited,
    behavior_of,
    bound,
    bounds_first,
    remember_recommendation,
    remember_scale,
    scale_up_limit,
    stabilize,
    usage_recommendation,
    whole_percent,
    with_first_recommendation,
)
from meltguard.core.thermal import FleetThermal, assess_fleet


@dataclass(frozen=True, slots=True)
class EventNote:
    """A Kubernetes Event to post on the policy."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class ConditionNote:
    """A status condition (``lastTransitionTime`` is the caller's business)."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do this tick, and why."""

    state: ControllerState
    phase: Phase
    current_replicas: int
    desired_replicas: int
    pending_replicas: int
    scale_reason: str
    scale_message: str
    scaling_limited: str | None
    gpus: GpuCounts
    tiers: tuple[QuotaTier, ...]
    quota_changes: tuple[QuotaChange, ...]
    events: tuple[EventNote, ...]
    conditions: tuple[ConditionNote, ...]

    @property
    def scale_direction(self) -> Literal["up", "down"] | None:
        """``up``, ``down`` or None when the replicas stay."""
        if self.desired_replicas > self.current_replicas:
            return "up"
        if self.desired_replicas < self.current_replicas:
            return "down"
        return None


def decide(
    spec: PolicySpec,
    state: ControllerState,
    observation: Observation,
    *,
    now: float,
    demand: DemandSignal | None = None,
) -> Decision:
    """One tick of the control loop (see the module docstring).

    ``demand`` is what the quota service saw users attempt; with it the quota limits follow
    the demand (water-filling), without it they follow AIMD.
    """
    thermal = assess_fleet(
        spec.melt,
        target_utilization_percent=spec.scaling.target_utilization_percent,
        stale_after_seconds=spec.telemetry.stale_after_seconds,
        previous=state,
        observation=observation,
        now=now,
    )
    behavior = behavior_of(spec.scaling)
    replicas, recommendations, placement = _recommend_replicas(
        spec, state, observation, thermal=thermal, behavior=behavior, now=now)
    current = observation.current_replicas
    policy_melting_since = _melting_since(state, thermal.phase, now)
    calm_since = (state.calm_since or now) if thermal.phase in CALM_PHASES else None
    cannot_help = _scaling_cannot_help(spec, placement, melting_since=policy_melting_since,
                                       now=now)
    all_cooling = thermal.melting > 0 and thermal.cooling == thermal.melting
    learnt = state.images_per_gpu_second
    heat = None if state.heat_cut is None else _remembered_heat(spec, state, now)
    placed_at_most = _placed_at_most(state.placed_at_most, placement)
    if demand is not None and thermal.mean_utilization is not None:
        room = headroom(spec, observation, demand, utilization=thermal.mean_utilization,
                        gpus=thermal.fresh,
                        reachable_gpus=_reachable_gpus(spec, placement, placed_at_most,
                                                       gpus=thermal.fresh),
                        steady=thermal.phase in CALM_PHASES, learnt=learnt, heat=heat,
                        cooling=all_cooling, now=now)
        learnt, heat = room.images_per_gpu_second, room.heat
        quota_step, aimed = _follow(spec, state, demand, room, cannot_help=cannot_help,
                                    all_cooling=all_cooling, now=now)
        cut_load = _cut_load(state.cut_load, quota_step, aimed=aimed)
    else:
        cut_load = None
        quota_step = step_quotas(
            spec.quotas, remembered=state.limits, phase=thermal.phase,
            scaling_cannot_help=cannot_help, all_cooling=all_cooling, calm_since=calm_since,
            last_change=state.last_quota_change_time, now=now)
    scaled = replicas.replicas != current
    next_state = state.model_copy(
        update={
            "hot_since": thermal.hot_since,
            "melting_since": thermal.melting_since,
            "cool_since": thermal.cool_since,
            "phase": thermal.phase,
            "policy_melting_since": policy_melting_since,
            "calm_since": calm_since,
            "recommendations": recommendations,
            "scale_events": remember_scale(
                state.scale_events, delta=replicas.replicas - current, behavior=behavior,
                now=now,
            ),
            "last_scale_time": now if scaled else state.last_scale_time,
            "limits": list(quota_step.limits),
            "last_quota_change_time": (now if quota_step.changes
                                       else state.last_quota_change_time),
            "last_raise_time": (now if _raised(quota_step) else state.last_raise_time),
            "cut_load": cut_load,
            "images_per_gpu_second": learnt,
            "placed_at_most": placed_at_most,
            "heat_cut": None if heat is None else heat.budget,
            "heat_cut_time": None if heat is None else heat.at,
            "heat_ceiling": None if heat is None else heat.ceiling,
            "placeable_replicas": placement.ceiling,
            "pending_since": placement.pending_since,
        }
    )
    tiers = _tier_quotas(spec, quota_step)
    limited = None if replicas.reason == WITHIN_RANGE else replicas.reason
    return Decision(
        state=next_state,
        phase=thermal.phase,
        current_replicas=current,
        desired_replicas=replicas.replicas,
        pending_replicas=observation.pending_replicas,
        scale_reason=replicas.reason,
        scale_message=replicas.message,
        scaling_limited=limited,
        gpus=_summary(thermal),
        tiers=tiers,
        quota_changes=quota_step.changes,
        events=_events(previous_phase=state.phase, thermal=thermal, current=current,
                       replicas=replicas, changes=quota_step.changes),
        conditions=_conditions(thermal, replicas, limited=limited, tiers=tiers),
    )


def _recommend_replicas(
    spec: PolicySpec,
    state: ControllerState,
    observation: Observation,
    *,
    thermal: FleetThermal,
    behavior: Behavior,
    now: float,
) -> tuple[Limited, list[Recommendation], Placement]:
    """HPA semantics plus meltguard's rules; returns the replicas, the new window memory and
    what is known of the room for the target's pods."""
    current = observation.current_replicas
    history = with_first_recommendation(state.recommendations, current=current, now=now)
    outside = bounds_first(current, min_replicas=spec.min_replicas,
                           max_replicas=spec.max_replicas)
    if outside is not None or thermal.mean_utilization is None:
        placement = _learn_placement(state, observation, wished=None, now=now)
        held = outside or Limited(current, "TelemetryUnavailable",
                                  "no fresh GPU sample: holding replicas")
        return _released(spec, held, placement, now=now), history, placement
    scaling = spec.scaling
    recommended = usage_recommendation(
        current, utilization_percent=whole_percent(thermal.mean_utilization),
        target_utilization_percent=scaling.target_utilization_percent,
        tolerance_percent=scaling.tolerance_percent,
    )
    if thermal.phase == "Melting":
        recommended = max(recommended, current, scale_up_limit(
            current, events=state.scale_events, rules=behavior.scale_up, now=now))
    placement = _learn_placement(state, observation, wished=recommended, now=now)
    proposal = stabilize(current, recommended=recommended, history=history, behavior=behavior,
                         now=now)
    proposal = _meltguard_holds(proposal, current=current, pending=placement.pending,
                                thermal=thermal,
                                quotas_tightened=any_tightened(spec.quotas.tiers, state.limits))
    limited = bound(current, proposal=within_ceiling(proposal, placement),
                    events=state.scale_events, behavior=behavior,
                    min_replicas=spec.min_replicas, max_replicas=spec.max_replicas, now=now)
    return (_released(spec, limited, placement, now=now),
            remember_recommendation(history, recommended=recommended, behavior=behavior,
                                    now=now),
            placement)


def _learn_placement(state: ControllerState, observation: Observation, *,
                     wished: int | None, now: float) -> Placement:
    return learn_placement(current=observation.current_replicas,
                           pending=observation.pending_replicas, wished=wished,
                           ceiling=state.placeable_replicas, pending_since=state.pending_since,
                           now=now)


def _released(spec: PolicySpec, limited: Limited, placement: Placement, *,
              now: float) -> Limited:
    return release_pending(limited, placement, grace_seconds=spec.scaling.pending_grace_seconds,
                           min_replicas=spec.min_replicas, now=now)


def _meltguard_holds(proposal: Limited, *, current: int, pending: int,
                     thermal: FleetThermal, quotas_tightened: bool) -> Limited:
    """No scale-down while anything is hot or stale, or while users are still being refused by
    tightened quotas (capacity goes back only after the quotas did); no scale-up over Pending
    pods. Pods the cluster cannot place block no scale-down: they serve nothing."""
    if proposal.replicas < current:
        blockers = [
            f"{thermal.hot} GPUs hot" if thermal.hot else "",
            f"{thermal.stale} GPU samples stale" if thermal.stale else "",
            "quotas are tightened" if quotas_tightened else "",
        ]
        why = ", ".join(b for b in blockers if b)
        if why:
            return Limited(current, "ScaleDownBlocked", f"not scaling down while {why}")
    if proposal.replicas > current and pending:
        return Limited(current, NO_GPU_CAPACITY,
                       f"{pending} pods are Pending for lack of GPUs: adding no more replicas")
    return proposal


def _melting_since(state: ControllerState, phase: Phase, now: float) -> float | None:
    """Since when the policy is Melting; kept through a telemetry gap, cleared once not."""
    if phase == "Melting":
        return state.policy_melting_since or now
    if phase == "Unknown":
        return state.policy_melting_since
    return None


def _scaling_cannot_help(spec: PolicySpec, placement: Placement, *,
                         melting_since: float | None, now: float) -> bool:
    """At max, no GPU for new pods (some Pending, or more wished than the cluster can place),
    or melting past the grace period despite scaling."""
    return (
        placement.current >= spec.max_replicas
        or placement.pending > 0
        or placement.ceiling is not None
        or (melting_since is not None and now - melting_since >= spec.quotas.tighten.grace_seconds)
    )


def _follow(spec: PolicySpec, state: ControllerState, demand: DemandSignal, room: Headroom, *,
            cannot_help: bool, all_cooling: bool, now: float) -> tuple[QuotaStep, float]:
    """Demand-aware quotas: the water-filled limits for the budget, if worth a change, taken
    when the pressure calls for them; also the load a cut aims at.

    A cut for load (not for heat) aims at the budget over the growth expected by the next
    chance to cut (:func:`look_ahead`). A raise goes at most :data:`RELAX_GROWTH` times up,
    or straight back to the baselines once every attempt fits the budget."""
    tiers = spec.quotas.tiers
    in_force: Limits = {entry.name: entry.limit
                        for entry in limits_in_force(tiers, state.limits)}
    filled = water_fill(tiers, demand, room.budget, in_force=in_force)
    if not worth_changing(tiers, demand, filled, in_force=in_force, budget=room.budget):
        filled = in_force
    aimed, cut_to = room.budget, filled
    if room.heat is None and not room.overheated and filled != in_force:
        aimed = room.budget / _expected_growth(spec, state, demand, now)
        cut_to = water_fill(tiers, demand, aimed, in_force=in_force)
    if attempted_total(demand) <= room.budget:
        raised: Limits = {tier.name: tier.limit for tier in tiers if tier.limit is not None}
    else:
        raised = within_growth(in_force, filled)
    step = follow_demand(
        spec.quotas, remembered=state.limits, tighten_to=cut_to, relax_to=raised,
        pressure=Pressure(utilization=room.utilization, fill=room.fill,
                          overheated=room.overheated, warm=room.warm,
                          scaling_cannot_help=cannot_help,
                          all_cooling=all_cooling),
        last_change=state.last_quota_change_time, last_raise=state.last_raise_time,
        rate_seconds=demand.rate_seconds, now=now)
    return step, aimed


def _expected_growth(spec: PolicySpec, state: ControllerState, demand: DemandSignal,
                     now: float) -> float:
    """The growth of the load expected by the next chance to cut, from its growth since the
    last cut (remembered until a raise)."""
    if state.last_quota_change_time is None:
        return 1.0
    return look_ahead(state.cut_load, admitted=admitted_total(demand),
                      since=now - state.last_quota_change_time,
                      interval=spec.quotas.tighten.interval_seconds)


def _raised(step: QuotaStep) -> bool:
    return any(change.direction == "relax" for change in step.changes)


def _cut_load(remembered: float | None, step: QuotaStep, *, aimed: float) -> float | None:
    """What to remember of the load cuts aim at: ``aimed`` after a cut, nothing after a raise
    (the next cut measures growth from itself), else as before."""
    if _raised(step):
        return None
    if step.changes:
        return aimed
    return remembered


def _remembered_heat(spec: PolicySpec, state: ControllerState, now: float) -> HeatCut:
    """The last cut for heat, from the status (without a ceiling, from before ceilings were
    kept: the load the cut was made from)."""
    assert state.heat_cut is not None
    ceiling = state.heat_ceiling
    if ceiling is None:
        ceiling = state.heat_cut / spec.quotas.tighten.factor
    return HeatCut(state.heat_cut, state.heat_cut_time or now, ceiling=ceiling)


def _placed_at_most(remembered: int | None, placement: Placement) -> int | None:
    """The replicas placed when the cluster last refused some; forgotten once it places
    more."""
    if placement.pending > 0:
        return placement.placed
    if remembered is not None and placement.placed > remembered:
        return None
    return remembered


def _reachable_gpus(spec: PolicySpec, placement: Placement, placed_at_most: int | None, *,
                    gpus: int) -> int:
    """GPUs the target may grow to: maxReplicas, or what the cluster has shown it places,
    at the GPUs per replica seen now (one when none serves)."""
    per_replica = gpus / placement.placed if placement.placed > 0 and gpus > 0 else 1.0
    known = [limit for limit in (placement.ceiling, placed_at_most) if limit is not None]
    replicas = min([spec.max_replicas, *known])
    return max(gpus, round(replicas * per_replica))


def _summary(thermal: FleetThermal) -> GpuCounts:
    mean = thermal.mean_utilization
    return GpuCounts(
        total=thermal.total,
        hot=thermal.hot,
        melting=thermal.melting,
        stale=thermal.stale,
        max_temperature_celsius=thermal.max_temperature_celsius,
        mean_utilization_percent=None if mean is None else round(mean * 100, 1),
    )


def _tier_quotas(spec: PolicySpec, step: QuotaStep) -> tuple[QuotaTier, ...]:
    in_force = {entry.name: entry.limit for entry in step.limits}
    return tuple(
        QuotaTier(name=tier.name, unlimited=True) if tier.limit is None else
        QuotaTier(
            name=tier.name,
            limit=in_force[tier.name],
            baseline=tier.limit,
            window_seconds=tier.window_seconds,
            tightened=in_force[tier.name] < tier.limit,
        )
        for tier in spec.quotas.tiers
    )


def _events(
    *,
    previous_phase: Phase | None,
    thermal: FleetThermal,
    current: int,
    replicas: Limited,
    changes: tuple[QuotaChange, ...],
) -> tuple[EventNote, ...]:
    notes: list[EventNote] = []
    phase = thermal.phase
    if phase == "Melting" and previous_phase != "Melting":
        notes.append(EventNote("Warning", "MeltingStarted",
                               f"{thermal.melting} of {thermal.fresh} GPUs melting"))
    if previous_phase == "Melting" and phase not in ("Melting", "Unknown"):
        notes.append(EventNote("Normal", "MeltingEnded", f"phase is {phase} again"))
    if phase == "Unknown" and previous_phase != "Unknown":
        notes.append(EventNote("Warning", "TelemetryLost",
                               f"no fresh GPU sample ({thermal.stale} stale): holding"))
    if replicas.replicas != current:
        reason = "ScaledUp" if replicas.replicas > current else "ScaledDown"
        notes.append(EventNote("Normal", reason,
                               f"replicas {current} -> {replicas.replicas}: {replicas.message}"))
    for change in changes:
        message = f"tier {change.tier} limit {change.old} -> {change.new}"
        notes.append(
            EventNote("Warning", "QuotaTightened", message)
            if change.direction == "tighten"
            else EventNote("Normal", "QuotaRelaxed", message)
        )
    return tuple(notes)


def _conditions(
    thermal: FleetThermal, replicas: Limited, *, limited: str | None,
    tiers: tuple[QuotaTier, ...],
) -> tuple[ConditionNote, ...]:
    telemetry = (
        ConditionNote("TelemetryAvailable", "True", "FreshSamples",
                      f"{thermal.fresh} of {thermal.total} GPUs reporting")
        if thermal.fresh
        else ConditionNote("TelemetryAvailable", "False", "NoFreshSamples",
                           f"no fresh GPU sample ({thermal.stale} stale)")
    )
    scaling = (
        ConditionNote("ScalingLimited", "True", limited, replicas.message)
        if limited
        else ConditionNote("ScalingLimited", "False", replicas.reason, replicas.message)
    )
    tightened = [tier.name for tier in tiers if tier.tightened]
    quotas = (
        ConditionNote("QuotasTightened", "True", "GPUsMelting",
                      "tightened tiers: " + ", ".join(tightened))
        if tightened
        else ConditionNote("QuotasTightened", "False", "AtBaseline", "every tier at its baseline")
    )
    ready = ConditionNote("Ready", "True", "Reconciled", f"phase {thermal.phase}")
    return (ready, telemetry, scaling, quotas)
