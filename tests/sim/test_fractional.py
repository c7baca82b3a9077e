"""Fractional limits in force: ``floor(L)`` images for every user, one more for a share
``L - floor(L)`` of them, and the quota service's choice stands for every retry of a window."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from meltguard.api.quota_models import TierSpec
from meltguard.core.demand import DemandSignal
from meltguard.sim.demand import QuotaOutcome, UserPopulation, limits_array
from meltguard.sim.engine import run_strategy, shared_inputs
from meltguard.sim.fleet import SimulatedFleet
from meltguard.sim.scenario import parse_scenario
from meltguard.sim.strategies import Control
from tests.sim.conftest import small_document
from tests.sim.test_demand import EAGER, scenario_with

USERS = 20_000
BASELINE = 3


def stubborn_users(*, give_up: float = 0.0, window: str = "24h") -> UserPopulation:
    """One tier with a baseline of 3: users who ask every step, want images without end and
    (by default) never give up after a refusal."""
    scenario = scenario_with(tiers={"free": {**EAGER, "giveUpProbability": give_up}})
    return UserPopulation(scenario, [TierSpec(name="free", limit=BASELINE, window=window)],
                          seed=11, start=0.0)


def play(users: UserPopulation, limits: list[float], *, arriving: int = USERS
         ) -> list[QuotaOutcome]:
    """One step per entry of ``limits`` (the free tier's limit in force); ``arriving`` users
    start their session in the first step."""
    return [users.step(np.array([arriving if index == 0 else 0]), np.array([limit]))
            for index, limit in enumerate(limits)]


def admitted(outcomes: list[QuotaOutcome]) -> list[int]:
    return [int(outcome.admitted[0]) for outcome in outcomes]


@pytest.mark.parametrize("limit", [1.0, 2.0, 3.0])
def test_a_whole_limit_admits_exactly_that_many_images_per_user(limit: float) -> None:
    outcomes = play(stubborn_users(), [limit] * 50)
    assert sum(admitted(outcomes)) == USERS * limit


@pytest.mark.parametrize("limit", [1.5, 0.25, 2.8])
def test_a_fractional_limit_admits_its_value_per_user_on_average(limit: float) -> None:
    outcomes = play(stubborn_users(), [limit] * 50)
    # floor(L) images each, and the extra one to a binomial share: standard deviation
    # sqrt(f (1 - f) / users) <= 0.0036 per user; 0.02 is over five of them
    assert sum(admitted(outcomes)) / USERS == pytest.approx(limit, abs=0.02)
    # nobody gets more than floor(L) + 1: the images arrive in the first floor(L) + 1 steps
    assert sum(admitted(outcomes)[math.floor(limit) + 1:]) == 0


def test_users_refused_the_extra_image_stay_refused_however_often_they_retry() -> None:
    outcomes = play(stubborn_users(), [1.5] * 200)
    lucky = admitted(outcomes)[1]
    assert 0 < lucky < USERS
    # from the third step on every user asks each step (all retry) and every request is
    # refused: a fresh draw per retry would have let almost all of them in by now
    assert admitted(outcomes)[2:] == [0] * 198
    assert all(int(outcome.refused[0]) == USERS for outcome in outcomes[2:])
    # below the baseline of 3: all of it is shedding
    assert all(int(outcome.shed[0]) == USERS for outcome in outcomes[2:])


def test_raising_the_limit_to_the_next_whole_number_lets_held_users_in() -> None:
    outcomes = play(stubborn_users(), [1.5] * 10 + [2.0] * 10)
    first, lucky = admitted(outcomes)[:2]
    assert first == USERS
    # at 2.0 the held users make their second image at once; the lucky ones are at 2 already
    assert admitted(outcomes)[10] == USERS - lucky
    assert sum(admitted(outcomes)) == 2 * USERS


def test_lowering_the_fraction_keeps_held_users_refused() -> None:
    # the quota service refuses a subject outside 50 % outside 20 % too
    outcomes = play(stubborn_users(), [1.5] * 5 + [1.2] * 20 + [1.0] * 5)
    assert sum(admitted(outcomes)[2:]) == 0


def test_raising_the_fraction_draws_held_users_again() -> None:
    # the documented approximation: released to the bucket of one image, the held users
    # meet 0.75 afresh (the service would admit (0.75 - 0.5) / 0.5 of them)
    outcomes = play(stubborn_users(), [1.5] * 5 + [1.75] * 20)
    held = USERS - admitted(outcomes)[1]
    assert admitted(outcomes)[5] / held == pytest.approx(0.75, abs=0.03)
    assert sum(admitted(outcomes)[6:]) == 0


def test_held_users_start_over_with_the_next_window() -> None:
    # 30 s steps from t=0 and a 60 s window: the counts start over at t=60
    outcomes = play(stubborn_users(window="60s"), [1.5] * 4)
    first, lucky, again, lucky_again = admitted(outcomes)
    assert (first, again) == (USERS, USERS)
    assert 0 < lucky < USERS and 0 < lucky_again < USERS and lucky != lucky_again


def test_the_spread_counts_held_users_attempts_at_the_images_they_made() -> None:
    users = stubborn_users(give_up=0.25)  # three in four refused users ask again
    outcomes = play(users, [1.5] * 3, arriving=1000)
    signal = users.demand_signal(90.0)
    assert signal is not None
    lucky = admitted(outcomes)[1]
    refused_extra = 1000 - lucky
    # third step: the lucky users (two images made) are refused their third, and the held
    # users (one image made), who asked again, their second
    held = int(outcomes[2].refused[0]) - lucky
    assert admitted(outcomes) == [1000, lucky, 0] and 0 < held <= refused_extra
    # refusals split as a steady stream: a quarter first attempts (counted where the user
    # stands), the rest retries (counted one attempt further)
    attempted = [1000, lucky, 0, 0]
    for images_made, refusals in ((1, refused_extra), (2, lucky), (1, held)):
        first_attempts = round(refusals * 0.25)
        attempted[images_made] += first_attempts
        attempted[images_made + 1] += refusals - first_attempts
    free = signal.tier("free")
    assert free is not None
    assert free.reaching == tuple(int(n) for n in np.minimum.accumulate(attempted))


def test_limits_array_carries_fractions_and_names_a_bad_limit() -> None:
    tiers = [TierSpec(name="free", limit=3), TierSpec(name="plus", limit=50),
             TierSpec(name="pro", unlimited=True)]
    assert limits_array(tiers, {"free": 1.4, "plus": 50.5}).tolist() == [1.4, 50, math.inf]
    for bad in (-0.5, math.nan, math.inf):
        with pytest.raises(ValueError, match=rf"tier 'free'.* >= 0, not {re.escape(str(bad))}$"):
            limits_array(tiers, {"free": bad})


class AlternatingLimit:
    """A strategy that keeps the replicas and flips the free tier's limit between 1.4 and 1.5
    every ``ticks`` control ticks."""

    name = "alternating"

    def __init__(self, ticks: int) -> None:
        self.ticks = ticks
        self.calls = 0

    def control(self, now: float, fleet: SimulatedFleet, demand: DemandSignal | None
                ) -> Control:
        limit = 1.4 if (self.calls // self.ticks) % 2 == 0 else 1.5
        self.calls += 1
        return Control(fleet.desired, {"free": limit, "plus": 100, "pro": None})


def test_the_run_counts_each_change_of_a_fractional_limit() -> None:
    scenario, policy = parse_scenario(small_document(), "small")
    strategy = AlternatingLimit(ticks=10)
    run = run_strategy(shared_inputs(scenario, policy, seed=3), strategy)
    ticks = scenario.duration_seconds // scenario.timing.control_tick_seconds
    assert strategy.calls == ticks == 120
    # from the baseline 6 to 1.4 at the first tick, then a flip every 10 ticks
    assert run.quota_changes.tolist() == [1 + (ticks - 1) // 10, 0, 0]
    assert set(run.series["firstTierLimit"]) == {1.4, 1.5}
    assert not run.kept_baseline_limits and run.shed[0] > 0
