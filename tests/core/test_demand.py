"""Water-filling over the demand signal: worked numbers and properties (hypothesis)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meltguard.api.quota_models import TierSpec
from meltguard.core.demand import (
    MIN_MOVE_SHARE,
    DemandSignal,
    Limits,
    Spread,
    TierDemand,
    predicted_admitted,
    water_fill,
    worth_changing,
)

from .conftest import NOW, make_spec

TIERS = make_spec().quotas.tiers  # free 3 (floor 0), plus 200 (floor 50), pro unlimited
FREE, PLUS, PRO = TIERS


def tier(name: str, reaching: tuple[int, ...], *, admitted: float, refused: float = 0.0
         ) -> TierDemand:
    return TierDemand(name, admitted + refused, admitted, refused, reaching)


def signal(*tiers: TierDemand) -> DemandSignal:
    return DemandSignal(tiers, observed_at=NOW)


def scaled(demand: DemandSignal, times: int) -> DemandSignal:
    """``times`` as many subjects with the same habits."""
    return signal(*(TierDemand(t.tier, t.attempts_per_second * times,
                               t.admitted_per_second * times, t.refused_per_second * times,
                               tuple(n * times for n in t.reaching)) for t in demand.tiers))


def test_at_the_baseline_the_spread_is_the_measured_one_and_its_last_entry_repeats() -> None:
    spread = Spread.of((100, 60, 30), in_force=3, baseline=3)
    assert [spread.images(limit) for limit in range(5)] == [0, 100, 160, 190, 220]


def test_under_a_cut_the_tail_continues_the_decline_of_the_admitted_entries() -> None:
    # limit 2 in force: entry 3 counts refused attempts (retries too): not used
    spread = Spread.of((100, 50, 50, 0), in_force=2, baseline=20)
    assert spread.images(2) == 150
    assert spread.images(3) == pytest.approx(175)  # 50 x 0.5
    assert spread.images(4) == pytest.approx(187.5)


def test_with_one_admitted_entry_the_habits_from_before_the_cut_give_the_decline() -> None:
    # limit 1: entry 2 is refused attempts; entries 3-4 are from before the cut (ratio 0.8)
    spread = Spread.of((1000, 1000, 80, 64), in_force=1, baseline=20)
    assert spread.images(2) == pytest.approx(1800)


def test_the_rate_at_the_limit_in_force_is_the_rate_admitted_and_scales_with_images() -> None:
    free = tier("free", (100, 50, 25), admitted=30.0, refused=12.0)
    assert predicted_admitted(free, 2, in_force=2, baseline=3) == pytest.approx(30.0)
    assert predicted_admitted(free, 1, in_force=2, baseline=3) == pytest.approx(20.0)
    assert predicted_admitted(free, None, in_force=None, baseline=None) == 42.0


def test_under_a_limit_of_zero_the_attempts_stand_for_first_images() -> None:
    # nothing admitted: 300 attempts/s of which the window's first attempts are 600 of 1000
    free = tier("free", (600, 300, 100), admitted=0.0, refused=300.0)
    assert predicted_admitted(free, 0, in_force=0, baseline=3) == 0.0
    assert predicted_admitted(free, 1, in_force=0, baseline=3) == pytest.approx(180.0)


def test_the_free_tier_is_cut_in_one_step_to_the_largest_limit_that_fits() -> None:
    demand = signal(tier("free", (100, 60, 30, 10), admitted=190.0),
                    tier("plus", (5,) * 200, admitted=40.0),
                    tier("pro", (), admitted=10.0))
    # free at 3 admits 190/s; at 2, 160/s; at 1, 100/s (190 x images / 190)
    assert water_fill(TIERS, demand, 240.0, in_force={}) == {"free": 3, "plus": 200}
    assert water_fill(TIERS, demand, 210.0, in_force={}) == {"free": 2, "plus": 200}
    assert water_fill(TIERS, demand, 150.0, in_force={}) == {"free": 1, "plus": 200}
    # free at its floor (0) and still too much: plus goes down (0.2/s per unit of its
    # limit, pro's 10/s untouched), never under its floor
    assert water_fill(TIERS, demand, 30.0, in_force={}) == {"free": 0, "plus": 100}
    assert water_fill(TIERS, demand, 15.0, in_force={}) == {"free": 0, "plus": 50}


def test_between_two_whole_limits_the_fraction_of_the_next_image_fills_the_budget() -> None:
    demand = signal(tier("free", (100, 60, 30, 10), admitted=190.0),
                    tier("plus", (5,) * 200, admitted=40.0),
                    tier("pro", (), admitted=10.0))
    # free at 1: 150/s in all, at 2: 210/s; 190/s is two thirds of the way: 1.666 -> 1.66
    assert water_fill(TIERS, demand, 190.0, in_force={}) == {"free": 1.66, "plus": 200}
    # plus once free is at its floor: 0.2/s per unit of its limit over pro's 10/s
    assert water_fill(TIERS, demand, 30.15, in_force={}) == {"free": 0, "plus": 100.75}


def test_a_fractional_limit_predicts_the_load_on_the_line_between_whole_ones() -> None:
    spread = Spread.of((100, 60, 30), in_force=3, baseline=3)
    assert spread.images(1.5) == pytest.approx(130.0)
    free = tier("free", (100, 60, 30), admitted=190.0)
    # in force 1.5: the entry past 1 was admitted to half the subjects, estimated as the tail
    assert predicted_admitted(free, 1.5, in_force=1.5, baseline=3) == pytest.approx(190.0)
    assert predicted_admitted(free, 1, in_force=1.5, baseline=3) < 190.0


def test_a_move_too_small_to_matter_is_not_worth_a_change_unless_it_reaches_an_end() -> None:
    demand = signal(tier("free", (100, 60, 30, 10), admitted=190.0),
                    tier("plus", (5,) * 200, admitted=40.0),
                    tier("pro", (), admitted=10.0))
    budget = 200.0
    step = MIN_MOVE_SHARE * budget  # images/s a change must move; free moves 60/s per image
    small, large = 1 + 0.9 * step / 60, 1 + 1.1 * step / 60
    in_force = {"free": 1, "plus": 200}
    assert not worth_changing(TIERS, demand, {"free": small, "plus": 200}, in_force=in_force,
                              budget=budget)
    assert worth_changing(TIERS, demand, {"free": large, "plus": 200}, in_force=in_force,
                          budget=budget)
    # back to the baseline, or down to the floor, however small the move
    assert worth_changing(TIERS, demand, {"free": 3, "plus": 200},
                          in_force={"free": 2.99, "plus": 200}, budget=budget)
    assert worth_changing(TIERS, demand, {"free": 0, "plus": 200},
                          in_force={"free": 0.01, "plus": 200}, budget=budget)
    assert not worth_changing(TIERS, demand, in_force, in_force=in_force, budget=budget)


SPREADS = st.lists(st.integers(0, 10_000), min_size=1, max_size=8).map(
    lambda entries: tuple(sorted(entries, reverse=True)))


@st.composite
def demands(draw: st.DrawFn) -> DemandSignal:
    def one(name: str) -> TierDemand:
        admitted = draw(st.floats(0, 500))
        return tier(name, draw(SPREADS), admitted=admitted, refused=draw(st.floats(0, 500)))
    return signal(one("free"), one("plus"), one("pro"))


IN_FORCE = st.fixed_dictionaries({"free": st.integers(0, 300).map(lambda n: n / 100),
                                  "plus": st.integers(50, 200)})


def fits_or_floors(tiers: list[TierSpec], limits: Limits) -> bool:
    return all(limits[t.name] >= t.floor and limits[t.name] <= (t.limit or 0)
               for t in tiers if t.limit is not None)


@given(demands(), IN_FORCE, st.floats(0, 2000), st.integers(2, 5))
def test_the_limits_are_monotone_in_demand_and_never_below_the_floor(
        demand: DemandSignal, in_force: dict[str, float], budget: float, times: int) -> None:
    fewer = water_fill(TIERS, demand, budget, in_force=in_force)
    more = water_fill(TIERS, scaled(demand, times), budget, in_force=in_force)
    assert fits_or_floors(list(TIERS), fewer) and fits_or_floors(list(TIERS), more)
    assert all(more[name] <= fewer[name] for name in fewer)


@given(demands(), IN_FORCE, st.floats(0, 2000), st.floats(0, 2000))
def test_more_budget_never_lowers_a_limit(demand: DemandSignal, in_force: dict[str, float],
                                         budget: float, extra: float) -> None:
    less = water_fill(TIERS, demand, budget, in_force=in_force)
    more = water_fill(TIERS, demand, budget + extra, in_force=in_force)
    assert all(more[name] >= less[name] for name in less)


def load_of(demand: DemandSignal, limits: Limits, in_force: Limits) -> float:
    return sum(predicted_admitted(t, limits.get(t.tier), in_force=in_force.get(t.tier),
                                  baseline=spec.limit)
               for t, spec in zip(demand.tiers, TIERS, strict=True))


@given(demands(), IN_FORCE, st.floats(0, 2000))
def test_the_limit_is_within_one_image_of_the_largest_whole_limit_that_fits(
        demand: DemandSignal, in_force: dict[str, float], budget: float) -> None:
    limits = water_fill(TIERS, demand, budget, in_force=in_force)
    assert all(round(limit, 2) == limit for limit in limits.values())
    cut = [spec for spec in (FREE, PLUS) if limits[spec.name] < (spec.limit or 0)]
    if cut:  # the last tier cut: one whole image more would not fit
        spec = cut[-1]
        whole = math.floor(limits[spec.name])
        if whole > spec.floor or limits[spec.name] > whole:
            raised = {**limits, spec.name: whole + 1}
            assert load_of(demand, raised, in_force) > budget - 1e-6


@given(demands(), IN_FORCE, st.floats(0, 2000))
def test_plus_is_cut_only_with_free_at_its_floor_and_the_result_fits(
        demand: DemandSignal, in_force: dict[str, float], budget: float) -> None:
    limits = water_fill(TIERS, demand, budget, in_force=in_force)
    if limits["plus"] < 200:
        assert limits["free"] == FREE.floor
    load = load_of(demand, limits, in_force)
    at_floors = limits == {"free": FREE.floor, "plus": PLUS.floor}
    assert at_floors or load <= budget + 1e-6


def test_a_tier_missing_from_the_signal_keeps_its_baseline() -> None:
    demand = signal(tier("free", (100, 50), admitted=150.0))
    # free: 75/s at 1, 112.5/s at 2 (150/s x images / 200); plus absent, at its baseline
    assert water_fill(TIERS, demand, 100.0, in_force={}) == {"free": 1.66, "plus": 200}
    assert replace(demand, tiers=()).tier("free") is None
