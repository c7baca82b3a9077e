"""The ``status`` body of an ImageQuotaPolicy, rendered from a decision.

Conditions follow ``metav1.Condition``: ``lastTransitionTime`` moves only when a condition's
status changes, so the previous conditions are passed in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from meltguard.api.durations import format_duration
from meltguard.api.models import Condition, PolicyStatus, TierQuotaStatus
from meltguard.api.quotas import QuotaTier
from meltguard.core.decide import ConditionNote, Decision


def rfc3339(epoch_seconds: float) -> str:
    """``2025-03-26T14:00:00Z`` for a time in seconds since the epoch."""
    return datetime.fromtimestamp(epoch_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_conditions(
    previous: Sequence[Condition], notes: Iterable[ConditionNote], generation: int | None,
    now: float,
) -> list[Condition]:
    """New conditions, keeping each one's transition time while its status is unchanged."""
    before = {condition.type: condition for condition in previous}
    merged = []
    for note in notes:
        old = before.get(note.type)
        unchanged = old is not None and old.status == note.status
        merged.append(Condition(
            type=note.type,
            status=note.status,
            reason=note.reason,
            message=note.message,
            last_transition_time=old.last_transition_time if old and unchanged else rfc3339(now),
            observed_generation=generation,
        ))
    return merged


def tier_status(tier: QuotaTier) -> TierQuotaStatus:
    """One entry of ``status.quotas``."""
    if tier.window_seconds is None:  # unlimited: no numbers at all
        return TierQuotaStatus(tier=tier.name, unlimited=True)
    return TierQuotaStatus(tier=tier.name, limit=tier.limit, baseline=tier.baseline,
                           window=format_duration(tier.window_seconds))


def build_status(
    decision: Decision, generation: int | None, previous: PolicyStatus | None, now: float
) -> dict[str, Any]:
    """The status to patch (camelCase, JSON-ready) after ``decision`` was taken at ``now``."""
    state = decision.state
    status = PolicyStatus(
        observed_generation=generation,
        phase=decision.phase,
        replicas=decision.current_replicas,
        desired_replicas=decision.desired_replicas,
        pending_replicas=decision.pending_replicas,
        gpus=decision.gpus,

        quotas=[tier_status(tier) for tier in decision.tiers],
        last_scale_time=rfc3339(state.last_scale_time) if state.last_scale_time else None,
        last_quota_change_time=(
            rfc3339(state.last_quota_change_time) if state.last_quota_change_time else None
        ),
        conditions=merge_conditions(
            previous.conditions if previous else (), decision.conditions, generation, now
        ),
        controller=state,
    )
    return status.model_dump(by_alias=True, exclude_none=True, mode="json")
