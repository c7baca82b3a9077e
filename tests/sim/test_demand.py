"""Users and quota checks: arrivals integrate to the scenario's numbers, limits bite exactly."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from meltguard.api.quota_models import TierSpec
from meltguard.core.demand import TierDemand
from meltguard.sim.demand import (
    UNLIMITED,
    UserPopulation,
    draw_session_arrivals,
    limits_array,
    session_rates,
)
from meltguard.sim.scenario import parse_scenario
from tests.sim.conftest import small_document

#: Users who ask every step, never tire of it, and give up at the first refusal.
EAGER = {"dailyUsers": 0, "imagesPerSession": 1e18, "thinkSeconds": 1e-6,
         "giveUpProbability": 1.0}


def scenario_with(**demand: Any) -> Any:
    document = small_document()
    document["demand"] = demand
    scenario, _ = parse_scenario(document, "test")
    return scenario


def test_a_normal_day_brings_daily_users_whatever_the_daily_shape() -> None:
    scenario = scenario_with(tiers={"free": {"dailyUsers": 86400}},
                             diurnal={"peakHour": 5, "troughRatio": 0.2})
    times = np.arange(0, 86400, 60, dtype=np.float64) + 30
    rates = session_rates(scenario, ["free", "plus"], times)
    assert (rates[:, 0] * 60).sum() == pytest.approx(86400)
    assert rates[:, 1].sum() == 0  # no demand for a tier the scenario does not name
    # busiest at 05:00, quietest at 17:00, in the ratio asked for
    assert rates[:, 0].min() / rates[:, 0].max() == pytest.approx(0.2, rel=1e-3)
    assert times[rates[:, 0].argmax()] // 3600 in (4, 5)


def test_the_surge_brings_new_users_within_its_hours_then_decays() -> None:
    scenario = scenario_with(
        tiers={"free": {"dailyUsers": 0}, "plus": {"dailyUsers": 0}},
        surge={"startHour": 1, "hours": 1, "rampHours": 0.5, "newUsers": 1_000_000,
               "decayHours": 2, "tierShares": {"free": 0.9, "plus": 0.1}},
    )
    step = 1.0
    times = np.arange(0, 24 * 3600, step) + step / 2
    rates = session_rates(scenario, ["free", "plus"], times)
    in_surge = (times >= 3600) & (times < 7200)
    assert (rates[in_surge].sum(axis=0) * step) == pytest.approx([900_000, 100_000], rel=1e-3)
    assert rates[times < 3600].sum() == 0
    # an hour after the surge: e^(-1/2) of the peak
    peak = rates[in_surge].max(axis=0)
    one_hour_later = rates[np.searchsorted(times, 3 * 3600)]
    assert one_hour_later / peak == pytest.approx(np.exp(-0.5) * np.ones(2), rel=1e-3)


def test_same_seed_same_users_other_seed_other_users() -> None:
    scenario, _ = parse_scenario(small_document(), "small")
    first = draw_session_arrivals(scenario, ["free", "plus", "pro"], 3)
    again = draw_session_arrivals(scenario, ["free", "plus", "pro"], 3)
    other = draw_session_arrivals(scenario, ["free", "plus", "pro"], 4)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert first.shape == (scenario.duration_seconds // 30, 3)


def eager_population(window: str = "24h", limit: int = 2, give_up: float = 1.0
                     ) -> UserPopulation:
    eager = {**EAGER, "giveUpProbability": give_up}
    scenario = scenario_with(tiers={"free": eager, "pro": eager})
    tiers = [TierSpec(name="free", limit=limit, window=window), TierSpec(name="pro",
                                                                         unlimited=True)]
    return UserPopulation(scenario, tiers, seed=0, start=0.0)


def test_each_user_gets_the_limit_in_force_then_is_refused() -> None:
    users = eager_population(limit=2)
    limits = np.array([2, UNLIMITED])
    arrivals = [np.array([100, 10]), np.array([0, 0]), np.array([0, 0]), np.array([0, 0])]
    outcomes = [users.step(row, limits) for row in arrivals]
    assert [o.admitted.tolist() for o in outcomes] == [[100, 10], [100, 10], [0, 10], [0, 10]]
    assert [o.refused.tolist() for o in outcomes] == [[0, 0], [0, 0], [100, 0], [0, 0]]
    # refused at the baseline: the product's rule, not shedding
    assert sum(o.shed.sum() for o in outcomes) == 0


def test_refusals_below_the_baseline_count_as_shed() -> None:
    users = eager_population(limit=2)
    users.step(np.array([100, 0]), np.array([2, UNLIMITED]))
    tightened = users.step(np.array([0, 0]), np.array([1, UNLIMITED]))
    assert tightened.refused.tolist() == [100, 0]
    assert tightened.shed.tolist() == [100, 0]


def test_a_limit_of_zero_refuses_new_users_too() -> None:
    users = eager_population(limit=2)
    outcome = users.step(np.array([50, 5]), np.array([0, UNLIMITED]))
    assert outcome.admitted.tolist() == [0, 5]
    assert outcome.shed.tolist() == [50, 0]


def test_counters_reset_when_the_window_ends() -> None:
    # 30 s steps from t=0 and a 60 s epoch-aligned window: the counts start over at t=60, 120.
    users = eager_population(window="60s", limit=1, give_up=0.0)  # refused users stay
    limits = np.array([1, UNLIMITED])
    admitted = [users.step(np.array([10, 0]) if i == 0 else np.array([0, 0]), limits)
                .admitted[0] for i in range(4)]
    assert admitted == [10, 0, 10, 0]


def test_limits_array_takes_baselines_for_missing_and_unlimited_tiers() -> None:
    tiers = [TierSpec(name="free", limit=3), TierSpec(name="plus", limit=50),
             TierSpec(name="pro", unlimited=True)]
    assert limits_array(tiers, {"free": 1, "pro": None}).tolist() == [1, 50, UNLIMITED]


def test_a_cap_above_the_baseline_changes_nothing() -> None:
    # a static cap of 3 on a tier whose baseline is 2: users still stop at 2, and nobody
    # spills into the next tier's counters
    users = eager_population(limit=2)
    limits = limits_array([TierSpec(name="free", limit=2), TierSpec(name="pro", unlimited=True)],
                          {"free": 3})
    assert limits.tolist() == [2, UNLIMITED]
    outcomes = [users.step(np.array([100, 0]) if i == 0 else np.array([0, 0]), limits)
                for i in range(4)]
    assert [o.admitted.tolist() for o in outcomes] == [[100, 0], [100, 0], [0, 0], [0, 0]]


def test_windows_are_the_quota_services_epoch_aligned_ones() -> None:
    # Starting 30 s into a 60 s window, the first reset comes after one step, not two.
    eager = {**EAGER, "giveUpProbability": 0.0}
    scenario = scenario_with(tiers={"free": eager})
    tiers = [TierSpec(name="free", limit=1, window="60s")]
    users = UserPopulation(scenario, tiers, seed=0, start=30.0)
    limits = np.array([1])
    admitted = [users.step(np.array([10]) if i == 0 else np.array([0]), limits).admitted[0]
                for i in range(4)]
    assert admitted == [10, 10, 0, 10]


def test_the_demand_signal_reports_rates_and_the_windows_spread_of_attempts() -> None:
    users = eager_population(limit=2)  # every user asks every step, gives up when refused
    assert users.demand_signal(0.0) is None  # nothing happened yet
    limits = np.array([2, UNLIMITED])
    users.step(np.array([100, 10]), limits)
    users.step(np.array([0, 0]), limits)
    users.step(np.array([0, 0]), limits)  # the 100 free users are refused their third
    signal = users.demand_signal(90.0)
    assert signal is not None and signal.observed_at == 90.0
    free, pro = signal.tier("free"), signal.tier("pro")
    assert free is not None and pro is not None
    # 300 attempts in 3 steps of 30 s, 200 admitted, 100 refused; every user tried 3 times
    assert (free.attempts_per_second, free.admitted_per_second,
            free.refused_per_second) == pytest.approx((300 / 90, 200 / 90, 100 / 90))
    assert free.reaching == (100, 100, 100)
    assert pro.reaching == () and pro.admitted_per_second == pytest.approx(30 / 90)
    # the rates start over at each report; the spread lasts the window
    users.step(np.array([0, 0]), limits)
    later = users.demand_signal(120.0)
    assert later is not None
    assert later.tier("free") == TierDemand("free", 0.0, 0.0, 0.0, (100, 100, 100))


def test_a_refused_user_who_asks_again_counts_at_the_next_attempt() -> None:
    users = eager_population(limit=2, give_up=0.25)  # three in four refused ask again
    users.step(np.array([100, 0]), np.array([0, UNLIMITED]))
    signal = users.demand_signal(30.0)
    assert signal is not None
    # refusals split as in a steady stream, where a quarter of them are first attempts and
    # the rest retries, counted one attempt further (capped: the spread never rises)
    assert signal.tier("free") == TierDemand("free", 100 / 30, 0.0, 100 / 30, (25, 25, 0))


def test_the_spread_starts_over_with_the_window() -> None:
    users = eager_population(window="60s", limit=1)
    users.step(np.array([10, 0]), np.array([1, UNLIMITED]))
    users.step(np.array([0, 0]), np.array([1, UNLIMITED]))
    before = users.demand_signal(60.0)
    users.step(np.array([0, 0]), np.array([1, UNLIMITED]))  # t=60: a new window
    after = users.demand_signal(90.0)
    assert before is not None and after is not None
    assert before.tier("free").reaching[0] == 10  # type: ignore[union-attr]
    assert after.tier("free").reaching == (0, 0)  # type: ignore[union-attr]
