"""The per-policy memory: pruning and the stored form change no decision; the status is
written for what matters at once, for counts and messages at most every status interval."""

from __future__ import annotations

import random

import pytest

from meltguard.api.models import ScalingSpec
from meltguard.api.state import ControllerState, Recommendation
from meltguard.core.replicas import Behavior, behavior_of, remember_recommendation, stabilize
from meltguard.k8s.memory import essentials, pruned, resumed, status_due, stored_form

WINDOWS = [(0, 300), (30, 10), (0, 0), (5, 5)]


def _behavior(up: int, down: int) -> Behavior:
    return behavior_of(ScalingSpec.model_validate(
        {"scaleUp": {"stabilizationSeconds": up, "maxStepPercent": 100},
         "scaleDown": {"stabilizationSeconds": down, "maxStepPercent": 100}}))


def _state(history: list[Recommendation]) -> ControllerState:
    return ControllerState(recommendations=history)


@pytest.mark.parametrize(("up", "down"), WINDOWS)
def test_pruning_every_tick_changes_no_stabilized_count(up: int, down: int) -> None:
    behavior = _behavior(up, down)
    chance = random.Random(f"{up}-{down}")
    full: list[Recommendation] = []
    kept = ControllerState()
    for tick in range(600):
        now = 1000.0 + tick
        recommended = chance.choice([2, 3, 3, 3, 4, 5]) if tick % 50 < 10 else 3
        current = chance.randint(1, 6)
        with_full = stabilize(current, recommended=recommended, history=full,
                              behavior=behavior, now=now)
        with_kept = stabilize(current, recommended=recommended, history=kept.recommendations,
                              behavior=behavior, now=now)
        assert with_kept == with_full, tick
        full = remember_recommendation(full, recommended=recommended, behavior=behavior,
                                       now=now)
        kept = pruned(_state(remember_recommendation(
            kept.recommendations, recommended=recommended, behavior=behavior, now=now)),
            behavior, now)
    assert len(kept.recommendations) <= min(5, len(full))  # one per count at most
    if max(up, down) > 5:
        assert len(full) > 5


def test_the_stored_form_stays_the_same_while_the_recommendation_does() -> None:
    behavior = _behavior(0, 300)
    before: ControllerState | None = None
    forms = []
    history: list[Recommendation] = []
    for tick, recommended in enumerate([4, 3, 3, 3, 3, 5, 5]):
        now = 100.0 + tick
        history = pruned(_state(remember_recommendation(
            history, recommended=recommended, behavior=behavior, now=now)), behavior,
            now).recommendations
        before = stored_form(_state(history), before)
        forms.append(before)
    assert forms[1] == forms[2] == forms[3] == forms[4]
    assert forms[0] != forms[1] != forms[5] == forms[6]
    assert forms[4].recommending == Recommendation(time=101.0, replicas=3)
    assert forms[4].recommendations == [Recommendation(time=100.0, replicas=4)]


def test_a_restart_resumes_as_if_the_old_operator_had_kept_ticking() -> None:
    behavior = _behavior(0, 30)
    history: list[Recommendation] = []
    stored: ControllerState | None = None
    for tick, recommended in enumerate([6, 6, 4, 4, 4]):
        now = 100.0 + tick
        history = pruned(_state(remember_recommendation(
            history, recommended=recommended, behavior=behavior, now=now)), behavior,
            now).recommendations
        stored = stored_form(_state(history), stored)
    assert stored is not None
    # the old operator died at 104; a new one ticks at 110
    back = resumed(stored, 110.0)
    assert back.recommending is None
    assert back.recommendations == [Recommendation(time=101.0, replicas=6),
                                    Recommendation(time=110.0, replicas=4)]
    kept_ticking = [Recommendation(time=101.0, replicas=6), Recommendation(time=109.0, replicas=4)]
    for now in (110.0, 125.0, 131.0, 140.0):  # 6 leaves the 30 s window after 131
        for recommended in (2, 4, 7):
            assert stabilize(4, recommended=recommended, history=back.recommendations,
                             behavior=behavior, now=now) == \
                stabilize(4, recommended=recommended, history=kept_ticking,
                          behavior=behavior, now=now)


def _status(**changes: object) -> dict[str, object]:
    status: dict[str, object] = {
        "phase": "Cool", "replicas": 2, "desiredReplicas": 2,
        "gpus": {"total": 2, "cool": 2},
        "conditions": [{"type": "Ready", "status": "True", "reason": "Reconciled",
                        "message": "phase Cool", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
        "controller": {"recommending": {"time": 1.0, "replicas": 2}}}
    status.update(changes)
    return status


def test_counts_and_messages_alone_wait_for_the_status_interval() -> None:
    stored = _status()
    counts = _status(gpus={"total": 2, "cool": 1, "warm": 1})
    message = _status(conditions=[{**stored["conditions"][0],  # type: ignore[index]
                                   "message": "phase Cool, 2 GPUs"}])
    for detail in (counts, message):
        assert essentials(detail) == essentials(stored)
        assert not status_due(stored, detail, written_at=100.0, now=159.0, interval_seconds=60)
        assert status_due(stored, detail, written_at=100.0, now=160.0, interval_seconds=60)


@pytest.mark.parametrize("change", [
    {"phase": "Hot"}, {"desiredReplicas": 3},
    {"controller": {"recommending": {"time": 5.0, "replicas": 3}}},
    {"conditions": [{"type": "Ready", "status": "False", "reason": "TargetNotFound",
                     "message": "phase Cool", "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
])
def test_what_decisions_depend_on_is_written_at_once(change: dict[str, object]) -> None:
    assert status_due(_status(), _status(**change), written_at=100.0, now=100.5,
                      interval_seconds=60)


def test_nothing_changed_is_never_written() -> None:
    assert not status_due(_status(), _status(), written_at=0.0, now=1e9, interval_seconds=1)
