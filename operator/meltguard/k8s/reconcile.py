"""One tick for one policy: read the world, call ``decide()``, write the result.

:func:`reconcile` is what the per-policy daemon calls every ``spec.intervalSeconds``. The
core's memory lives in ``status.controller`` and is written last, after the target and the
ConfigMap: a tick that fails half-way leaves the previous state in place, and the next tick
decides again from it (the decisions are absolute values, so repeating one is harmless).
Events and counters follow only a status write that succeeded, so a retried tick does not
repeat them; the one exception, ``QuotasRestored``, reports a ConfigMap already put back.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import ValidationError

from meltguard.api.models import Condition, PolicySpec, PolicyStatus
from meltguard.api.quota_models import DemandSpec
from meltguard.api.quotas import QuotaDocument
from meltguard.api.state import ControllerState
from meltguard.api.validation import PolicyInvalid, parse_spec
from meltguard.core.decide import ConditionNote, Decision, EventNote, decide
from meltguard.core.demand import DemandSignal
from meltguard.core.replicas import behavior_of
from meltguard.k8s.act import (
    Published,
    configmap_name,
    envoy_domain,
    patch_status,
    publish_quotas,
    publishes_the_same,
    quota_configmap,
    quota_document,
    restored_note,
    says_the_same,
    scale_target,
)
from meltguard.k8s.client import Conflict, Kube, NotFound
from meltguard.k8s.memory import Remembered, pruned, resumed, status_due, stored_form
from meltguard.k8s.metrics import OperatorMetrics
from meltguard.k8s.resources import NotScalable
from meltguard.k8s.status import build_status, merge_conditions
from meltguard.k8s.world import ClusterView, NamespacedName, ReadTelemetry, World, observe

PAUSED_ANNOTATION = "meltguard.io/paused"
SCALE_EVENT_REASONS = frozenset({"ScaledUp", "ScaledDown"})
CONFLICT_ATTEMPTS = 3
#: A write refused as stale: the watch caches catch up within this long, then the tick reads
#: them again.
CONFLICT_PAUSE_SECONDS = 0.2

logger = logging.getLogger(__name__)

PostEvent = Callable[[Mapping[str, Any], EventNote], None]
ReadDemand = Callable[[NamespacedName, DemandSpec | None], Awaitable[DemandSignal | None]]
"""``(policy, spec.quotas.demand) -> signal``: None without a demand spec or a good read."""


class Outcome(enum.Enum):
    """How a tick ended."""

    APPLIED = "applied"
    REPORTED = "reported"  # paused or dry run: decided and reported, nothing changed
    INVALID = "invalid"
    TARGET_NOT_FOUND = "target-not-found"
    TARGET_NOT_SCALABLE = "target-not-scalable"


@dataclass(frozen=True)
class Reconciler:
    """What a tick needs from outside: the API, the watch caches, telemetry, the users'
    demand, Events, metrics, the clock; and the policies' memory between ticks."""

    client: Kube
    view: ClusterView
    read_telemetry: ReadTelemetry
    read_demand: ReadDemand
    post_event: PostEvent
    metrics: OperatorMetrics
    clock: Callable[[], float] = field(default=time.time)
    memory: dict[NamespacedName, Remembered] = field(default_factory=dict)
    specs: dict[NamespacedName, tuple[tuple[Any, int], PolicySpec]] = field(default_factory=dict)
    #: Per policy, the quota ConfigMap's data as the watch showed it when last found to say
    #: what was published: while it shows the same, there is nothing to check.
    quotas_seen: dict[NamespacedName, Mapping[str, str]] = field(default_factory=dict)

    def spec_of(self, policy: Mapping[str, Any]) -> PolicySpec:
        """The policy's spec, parsed once per generation (:class:`PolicyInvalid` when bad)."""
        meta = policy.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        generation = meta.get("generation")
        known = self.specs.get(key)
        if known is not None and known[0] == (meta.get("uid"), generation):
            return known[1]
        spec = parse_spec(policy.get("spec"))
        if generation is not None:  # the generation moves with every change of the spec
            self.specs[key] = ((meta.get("uid"), int(generation)), spec)
        return spec

    def remembered(self, key: NamespacedName, policy: Mapping[str, Any]) -> Remembered | None:
        """The memory of this very policy (not of a deleted one of the same name)."""
        known = self.memory.get(key)
        uid = (policy.get("metadata") or {}).get("uid")
        return known if known is not None and known.uid == uid else None

    def forget(self, key: NamespacedName) -> None:
        """Drop a policy's memory: it is gone, or its status was written from elsewhere."""
        self.memory.pop(key, None)
        self.specs.pop(key, None)
        self.quotas_seen.pop(key, None)


def hold_reason(policy: Mapping[str, Any], spec: PolicySpec) -> str | None:
    """Why the policy must not change anything (Paused, DryRun), or None to act."""
    annotations = (policy.get("metadata") or {}).get("annotations") or {}
    if spec.paused or annotations.get(PAUSED_ANNOTATION) == "true":
        return "Paused"
    if spec.dry_run:
        return "DryRun"
    return None


def previous_status(policy: Mapping[str, Any]) -> PolicyStatus | None:
    """The stored status, or None when absent or unreadable (then the core starts afresh)."""
    try:
        return PolicyStatus.model_validate(policy.get("status") or {})
    except ValidationError as error:
        meta = policy.get("metadata") or {}
        logger.warning("status of %s/%s unreadable, starting from a fresh state: %s",
                       meta.get("namespace"), meta.get("name"), error)
        return None


def generation_of(policy: Mapping[str, Any]) -> int | None:
    """``metadata.generation``, which ``status.observedGeneration`` follows."""
    generation = (policy.get("metadata") or {}).get("generation")
    return int(generation) if generation is not None else None


def not_ready_status(policy: Mapping[str, Any], reason: str, message: str,
                     now: float) -> dict[str, Any]:
    """The stored status with ``Ready=False`` (and only that condition) and the generation."""
    previous = previous_status(policy)
    conditions: list[Condition] = merge_conditions(
        previous.conditions if previous else [],
        [ConditionNote("Ready", "False", reason, message)], generation_of(policy), now)
    stored = policy.get("status")
    status = dict(stored) if isinstance(stored, Mapping) else {}
    status["observedGeneration"] = generation_of(policy)
    status["conditions"] = [condition.model_dump(by_alias=True, exclude_none=True, mode="json")
                            for condition in conditions]
    return status


def invalid_message(invalid: PolicyInvalid) -> str:
    """Every field error, ``spec.quotas.tiers[1].floor: ...``, in one line."""
    return "invalid spec: " + "; ".join(str(error) for error in invalid.errors)


def held_decision(decision: Decision, reason: str, reported_desired: int | None) -> Decision:
    """The decision as reported while paused or in dry run: Ready says nothing is applied.

    Events say "not applied". The replicas never change while held, so the same would-be
    scaling comes back every tick: it is posted only when the desired count changes from
    the one already reported (``reported_desired``).
    """
    ready = ConditionNote("Ready", "True", reason,
                          f"{reason}: decisions are computed and reported, none applied")
    conditions = tuple(ready if note.type == "Ready" else note for note in decision.conditions)
    repeated_scaling = decision.desired_replicas == reported_desired
    events = tuple(replace(note, message=f"not applied ({reason}): {note.message}")
                   for note in decision.events
                   if not (repeated_scaling and note.reason in SCALE_EVENT_REASONS))
    return replace(decision, conditions=conditions, events=events)


class Tick:
    """One reconcile of one policy, as kopf's watch shows it now (``policy``, kept up to
    date by kopf while the tick runs: each attempt takes it afresh)."""

    def __init__(self, reconciler: Reconciler, policy: Mapping[str, Any]) -> None:
        self.reconciler = reconciler
        self.policy = policy
        meta = policy["metadata"]
        self.namespace = str(meta["namespace"])
        self.name = str(meta["name"])

    async def run(self) -> Outcome:
        """Decide and act; a conflicting write starts over from a fresh read."""
        for attempt in range(1, CONFLICT_ATTEMPTS + 1):
            try:
                return await self._once()
            except Conflict as conflict:
                if attempt == CONFLICT_ATTEMPTS:
                    raise
                logger.info("%s/%s: %s; reading again", self.namespace, self.name, conflict)
                await asyncio.sleep(CONFLICT_PAUSE_SECONDS)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _once(self) -> Outcome:
        policy = dict(self.policy)  # kopf replaces the whole body on each change
        try:
            spec = self.reconciler.spec_of(policy)
        except PolicyInvalid:  # reported by the change handlers, nothing to do
            self.reconciler.forget((self.namespace, self.name))
            return Outcome.INVALID
        now = self.reconciler.clock()
        ref = spec.scale_target_ref
        try:
            world = await observe(self.reconciler.view, self.reconciler.read_telemetry,
                                  namespace=self.namespace, name=self.name, spec=spec, now=now)
        except NotFound as missing:
            message = f"{ref.kind} {ref.name!r} not found in {self.namespace}: {missing.message}"
            await self._report_target_problem(policy, "TargetNotFound", message, now)
            return Outcome.TARGET_NOT_FOUND
        except NotScalable as unscalable:
            message = f"cannot scale {ref.kind} {ref.name!r}: {unscalable.message}"
            await self._report_target_problem(policy, unscalable.reason, message, now)
            return Outcome.TARGET_NOT_SCALABLE
        return await self._decide_and_act(policy, spec, world, now)

    async def _report_target_problem(self, policy: Mapping[str, Any], reason: str, message: str,
                                     now: float) -> None:
        """Ready=False naming the problem, and a Warning Event when it is new."""
        known, stored, previous = self._stored(policy)
        as_stored = {**policy, "status": stored}
        reported = previous is not None and any(
            c.type == "Ready" and c.reason == reason and c.message == message
            for c in previous.conditions)
        status = not_ready_status(as_stored, reason, message, now)
        if status != stored:
            await patch_status(self.reconciler.client, policy, status, stored=stored)
        self._remember(policy, known=known, previous=previous, status=status, written_at=now)
        if not reported:
            self.reconciler.post_event(policy, EventNote("Warning", reason, message))

    def _stored(self, policy: Mapping[str, Any]
                ) -> tuple[Remembered | None, Mapping[str, Any], PolicyStatus | None]:
        """This policy's memory, if any, and the status as stored (as is and parsed): the
        operator's last write, which kopf's copy of the policy may not show yet."""
        known = self.reconciler.remembered((self.namespace, self.name), policy)
        if known is not None:
            return known, known.status, known.parsed
        stored = _stored_status(policy)
        return None, stored, previous_status({**policy, "status": stored})

    def _remember(self, policy: Mapping[str, Any], *, known: Remembered | None,
                  previous: PolicyStatus | None, status: Mapping[str, Any],
                  written_at: float) -> None:
        """Keep the stored ``status`` with the core's state unchanged (a tick that could not
        decide)."""
        self.reconciler.memory[(self.namespace, self.name)] = Remembered(
            uid=str(policy["metadata"].get("uid")),
            state=known.state if known is not None else _resumed_state(previous, written_at),
            status=status, parsed=PolicyStatus.model_validate(status), written_at=written_at,
            published=known.published if known is not None else None)

    async def _decide_and_act(self, policy: Mapping[str, Any], spec: PolicySpec, world: World,
                              now: float) -> Outcome:
        key = (self.namespace, self.name)
        known, stored, previous = self._stored(policy)
        state = known.state if known is not None else _resumed_state(previous, now)
        behavior = behavior_of(spec.scaling)
        demand = await self.reconciler.read_demand(key, spec.quotas.demand)
        decision = decide(spec, state, world.observation, now=now, demand=demand)
        held = hold_reason(policy, spec)
        published = known.published if known is not None else None
        if held is None:
            published = await self._apply(policy, spec, world, decision, now, published)
        else:
            decision = held_decision(decision, held,
                                     previous.desired_replicas if previous else None)
        memory_state = pruned(decision.state, behavior, now)
        status = build_status(
            replace(decision, state=stored_form(memory_state,
                                                previous.controller if previous else None)),
            generation_of(policy), previous, now)
        written_at = known.written_at if known is not None else float("-inf")
        if status_due(stored, status, written_at=written_at, now=now,
                      interval_seconds=spec.status_interval_seconds):
            await patch_status(self.reconciler.client, policy, status, stored=stored)
            stored, written_at = status, now
            previous = PolicyStatus.model_validate(status)
        self.reconciler.memory[key] = Remembered(
            uid=str(policy["metadata"].get("uid")), state=memory_state, status=stored,
            parsed=previous, written_at=written_at, published=published)
        for note in decision.events:
            self.reconciler.post_event(policy, note)
        metrics = self.reconciler.metrics
        metrics.observe(self.namespace, self.name, decision, applied=held is None,
                        bounds=(spec.min_replicas, spec.max_replicas))
        return Outcome.APPLIED if held is None else Outcome.REPORTED

    async def _apply(self, policy: Mapping[str, Any], spec: PolicySpec, world: World,
                     decision: Decision, now: float,
                     published: QuotaDocument | None) -> QuotaDocument:
        """Scale if the count changes; publish the limits unless already published, else
        keep the ConfigMap as published (:meth:`_keep_published`); the quota document now in
        force comes back."""
        client = self.reconciler.client
        target = world.target
        if decision.desired_replicas != target.replicas:
            await scale_target(client, target.resource, namespace=self.namespace,
                               name=spec.scale_target_ref.name,
                               read_replicas=target.replicas,
                               replicas=decision.desired_replicas)
        document = quota_document(policy, decision, now, envoy_domain(self.name, spec))
        if published is not None and says_the_same(published, document):
            await self._keep_published(policy, spec, document)
            return published
        self.reconciler.quotas_seen.pop((self.namespace, self.name), None)
        await publish_quotas(client, quota_configmap(policy, spec, document), document)
        return document

    async def _keep_published(self, policy: Mapping[str, Any], spec: PolicySpec,
                              document: QuotaDocument) -> None:
        """Put the quota ConfigMap back, with a Warning Event, if the watch of the quota
        ConfigMaps shows that someone else deleted, edited or unlabelled it since this
        operator published what ``document`` says."""
        key, name = (self.namespace, self.name), configmap_name(self.name, spec)
        seen = self.reconciler.quotas_seen
        cached = await self.reconciler.view.quota_configmap(self.namespace, name)
        if cached is not None and cached == seen.get(key):
            return  # unchanged since last found right: nothing to render and compare
        configmap = quota_configmap(policy, spec, document)
        if cached is not None and publishes_the_same(cached, configmap, document):
            seen[key] = cached
            return
        # Or the watch has not seen this operator's last write yet: the read in
        # publish_quotas then finds it right, and nothing is written.
        outcome = await publish_quotas(self.reconciler.client, configmap, document)
        if outcome is not Published.SAME:
            note = restored_note(self.namespace, name, outcome)
            logger.warning("%s/%s: %s", self.namespace, self.name, note.message)
            self.reconciler.post_event(policy, note)  # the repair is done whatever follows


def _stored_status(policy: Mapping[str, Any]) -> Mapping[str, Any]:
    stored = policy.get("status")
    return stored if isinstance(stored, Mapping) else {}


def _resumed_state(previous: PolicyStatus | None, now: float) -> ControllerState:
    """The core's state from the stored status (a policy this operator has not ticked)."""
    if previous is None or previous.controller is None:
        return ControllerState.initial()
    return resumed(previous.controller, now)


async def reconcile(reconciler: Reconciler, policy: Mapping[str, Any]) -> Outcome:
    """One timed tick of one policy (its live body from kopf), with its duration recorded."""
    with reconciler.metrics.reconcile_seconds.time():
        return await Tick(reconciler, policy).run()
