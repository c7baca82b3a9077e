"""The per-GPU queues: the shortcut for steps where every GPU keeps up agrees with the general
oldest-first service."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from meltguard.sim.queues import GpuQueues


def queues_with(newest: list[float], admitted: list[int]) -> GpuQueues:
    """Queues of ``len(newest)`` GPUs holding only this step's requests."""
    queues = GpuQueues(len(newest), tiers=len(admitted), step_seconds=60, timeout_seconds=120,
                       slo_seconds=30)
    queues.admit(np.array(admitted, dtype=np.int64), np.ones(len(newest), dtype=bool))
    queues.backlog[-1] = newest
    return queues


@settings(max_examples=80, deadline=None)
@given(
    newest=st.lists(st.floats(0, 50), min_size=1, max_size=12),
    headroom=st.floats(0, 20),
    admitted=st.lists(st.integers(1, 1000), min_size=3, max_size=3),
    making=st.one_of(st.floats(0.1, 60), st.just(None)),
)
def test_serving_only_new_requests_agrees_with_serving_in_order(
    newest: list[float], headroom: float, admitted: list[int], making: float | None
) -> None:
    capacity = np.array(newest) + headroom  # every GPU keeps up
    per_gpu = np.linspace(1, 45, len(newest)) if making is None else making
    shortcut, general = queues_with(newest, admitted), queues_with(newest, admitted)
    served, per_tier = shortcut._serve_all_new(shortcut.backlog[-1], per_gpu)
    served_in_order, per_tier_in_order = general._serve_in_order(general.backlog, capacity,
                                                                 per_gpu)
    np.testing.assert_allclose(served, served_in_order)
    np.testing.assert_allclose(per_tier, per_tier_in_order, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(shortcut.backlog, general.backlog)
    assert shortcut.answered_within_slo == general.answered_within_slo


def test_older_requests_take_the_general_path_and_go_first() -> None:
    queues = queues_with([4.0, 0.0], [1, 0, 0])
    queues.backlog[0] = [3.0, 0.0]  # two steps old
    served, _ = queues.serve(np.array([5.0, 5.0]), 10.0)
    assert served.tolist() == [5.0, 0.0]
    assert queues.backlog[:, 0].tolist() == [0.0, 0.0, 2.0]  # the old 3 went first
