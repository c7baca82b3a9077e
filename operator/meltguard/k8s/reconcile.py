"""One tick for one policy: read the world, call ``decide()``, write the result.

:func:`reconcile` is what the per-policy daemon calls every ``spec.intervalSeconds``. The
core's memory lives in ``status.controller`` and is written last, after the target and the
ConfigMap: a tick that fails half-way leaves the previous state in place, and the next tick
decides again from it (the decisions are absolute values, so repeating one is harmless).
Events and counters follow only a status write that succeeded, so a retried tick does not
repeat them.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import ValidationError

from meltguard.api.models import Condition, PolicySpec, PolicyStatus
from meltguard.api.state import ControllerState
from meltguard.api.validation import PolicyInvalid, parse_spec
from meltguard.core.decide import ConditionNote, Decision, EventNote, decide
from meltguard.k8s.act import (
    envoy_domain,
    patch_status,
    publish_quotas,
    quota_configmap,
    quota_document,
    scale_target,
)
from meltguard.k8s.client import Conflict, Kube, NotFound
from meltguard.k8s.metrics import OperatorMetrics
from meltguard.k8s.resources import NotScalable
from meltguard.k8s.status import build_status, merge_conditions
from meltguard.k8s.world import ReadTelemetry, ScaleTargets, World, observe, read_policy

PAUSED_ANNOTATION = "meltguard.io/paused"
SCALE_EVENT_REASONS = frozenset({"ScaledUp", "ScaledDown"})
CONFLICT_ATTEMPTS = 3

logger = logging.getLogger(__name__)

PostEvent = Callable[[Mapping[str, Any], EventNote], None]


class Outcome(enum.Enum):
    """How a tick ended."""

    APPLIED = "applied"
    REPORTED = "reported"  # paused or dry run: decided and reported, nothing changed
    INVALID = "invalid"
    TARGET_NOT_FOUND = "target-not-found"
    TARGET_NOT_SCALABLE = "target-not-scalable"
    GONE = "gone"


@dataclass(frozen=True)
class Reconciler:
    """What a tick needs from outside: the API, telemetry, Events, metrics and the clock."""

    client: Kube
    targets: ScaleTargets
    read_telemetry: ReadTelemetry
    post_event: PostEvent
    metrics: OperatorMetrics
    clock: Callable[[], float] = field(default=time.time)


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
    """One reconcile of one policy, read from the API afresh."""

    def __init__(self, reconciler: Reconciler, namespace: str, name: str) -> None:
        self.reconciler = reconciler
        self.namespace = namespace
        self.name = name

    async def run(self) -> Outcome:
        """Decide and act; a conflicting write starts over from a fresh read."""
        for attempt in range(1, CONFLICT_ATTEMPTS + 1):
            try:
                return await self._once()
            except Conflict as conflict:
                if attempt == CONFLICT_ATTEMPTS:
                    raise
                logger.info("%s/%s: %s; reading again", self.namespace, self.name, conflict)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _once(self) -> Outcome:
        client = self.reconciler.client
        try:
            policy = await read_policy(client, self.namespace, self.name)
        except NotFound:
            return Outcome.GONE
        try:
            spec = parse_spec(policy.get("spec"))
        except PolicyInvalid:
            return Outcome.INVALID  # reported by the change handlers, nothing to do
        now = self.reconciler.clock()
        ref = spec.scale_target_ref
        try:
            world = await observe(client, self.reconciler.targets, self.reconciler.read_telemetry,
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
        previous = previous_status(policy)
        known = previous is not None and any(
            c.type == "Ready" and c.reason == reason and c.message == message
            for c in previous.conditions)
        await patch_status(self.reconciler.client, policy,
                           not_ready_status(policy, reason, message, now))
        if not known:
            self.reconciler.post_event(policy, EventNote("Warning", reason, message))

    async def _decide_and_act(self, policy: Mapping[str, Any], spec: PolicySpec, world: World,
                              now: float) -> Outcome:
        previous = previous_status(policy)
        state = previous.controller if previous and previous.controller else \
            ControllerState.initial()
        decision = decide(spec, state, world.observation, now=now)
        held = hold_reason(policy, spec)
        if held is None:
            await self._apply(policy, spec, world, decision, now)
        else:
            decision = held_decision(decision, held,
                                     previous.desired_replicas if previous else None)
        status = build_status(decision, generation_of(policy), previous, now)
        await patch_status(self.reconciler.client, policy, status)
        for note in decision.events:
            self.reconciler.post_event(policy, note)
        metrics = self.reconciler.metrics
        metrics.observe(self.namespace, self.name, decision, applied=held is None,
                        bounds=(spec.min_replicas, spec.max_replicas))
        return Outcome.APPLIED if held is None else Outcome.REPORTED

    async def _apply(self, policy: Mapping[str, Any], spec: PolicySpec, world: World,
                     decision: Decision, now: float) -> None:
        client = self.reconciler.client
        target = world.target
        if decision.desired_replicas != target.replicas:
            await scale_target(client, target.resource, namespace=self.namespace,
                               name=spec.scale_target_ref.name,
                               replicas=decision.desired_replicas,
                               resource_version=target.resource_version)
        document = quota_document(policy, decision, now, envoy_domain(self.name, spec))
        await publish_quotas(client, quota_configmap(policy, spec, document), document)


async def reconcile(reconciler: Reconciler, namespace: str, name: str) -> Outcome:
    """One timed tick of one policy, with its duration recorded."""
    with reconciler.metrics.reconcile_seconds.time():
        return await Tick(reconciler, namespace, name).run()
