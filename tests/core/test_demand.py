"""Water-filling over the demand signal: worked numbers and properties (hypothesis)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meltguard.api.quota_models import TierSpec
from meltguard.core.demand import (
    DemandSignal,
    Spread,
    TierDemand,
    predicted_admitted,
    water_fill,
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


def test_nearest_takes_the_next_limit_if_it_overshoots_less_than_the_fit_is_under() -> None:
    demand = signal(tier("free", (100, 60, 30, 10), admitted=190.0),
                    tier("plus", (5,) * 200, admitted=40.0),
                    tier("pro", (), admitted=10.0))
    # free at 2: 210/s in all, at 1: 150/s
    assert water_fill(TIERS, demand, 190.0, in_force={}) == {"free": 1, "plus": 200}
    for budget, free in ((190.0, 2), (170.0, 1)):
        rounded = water_fill(TIERS, demand, budget, in_force={}, nearest=True)
        assert rounded == {"free": free, "plus": 200}
    # plus is rounded the same way once free is at its floor: 0.2/s per unit of its limit
    rounded = water_fill(TIERS, demand, 30.15, in_force={}, nearest=True)
    assert rounded == {"free": 0, "plus": 101}


SPREADS = st.lists(st.integers(0, 10_000), min_size=1, max_size=8).map(
    lambda entries: tuple(sorted(entries, reverse=True)))


@st.composite
def demands(draw: st.DrawFn) -> DemandSignal:
    def one(name: str) -> TierDemand:
        admitted = draw(st.floats(0, 500))
        return tier(name, draw(SPREADS), admitted=admitted, refused=draw(st.floats(0, 500)))
    return signal(one("free"), one("plus"), one("pro"))


IN_FORCE = st.fixed_dictionaries({"free": st.integers(0, 3), "plus": st.integers(50, 200)})


def fits_or_floors(tiers: list[TierSpec], limits: dict[str, int]) -> bool:
    return all(limits[t.name] >= t.floor and limits[t.name] <= (t.limit or 0)
               for t in tiers if t.limit is not None)


@given(demands(), IN_FORCE, st.floats(0, 2000), st.integers(2, 5), st.booleans())
def test_the_limits_are_monotone_in_demand_and_never_below_the_floor(
        demand: DemandSignal, in_force: dict[str, int], budget: float, times: int,
        nearest: bool) -> None:
    fewer = water_fill(TIERS, demand, budget, in_force=in_force, nearest=nearest)
    more = water_fill(TIERS, scaled(demand, times), budget, in_force=in_force, nearest=nearest)
    assert fits_or_floors(list(TIERS), fewer) and fits_or_floors(list(TIERS), more)
    assert all(more[name] <= fewer[name] for name in fewer)


@given(demands(), IN_FORCE, st.floats(0, 2000), st.floats(0, 2000), st.booleans())
def test_more_budget_never_lowers_a_limit(demand: DemandSignal, in_force: dict[str, int],
                                         budget: float, extra: float, nearest: bool) -> None:
    less = water_fill(TIERS, demand, budget, in_force=in_force, nearest=nearest)
    more = water_fill(TIERS, demand, budget + extra, in_force=in_force, nearest=nearest)
    assert all(more[name] >= less[name] for name in less)


def load_of(demand: DemandSignal, limits: dict[str, int], in_force: dict[str, int]) -> float:
    return sum(predicted_admitted(t, limits.get(t.tier), in_force=in_force.get(t.tier),
                                  baseline=spec.limit)
               for t, spec in zip(demand.tiers, TIERS, strict=True))


@given(demands(), IN_FORCE, st.floats(0, 2000))
def test_nearest_is_the_fit_or_one_above_it_whichever_load_is_closer(
        demand: DemandSignal, in_force: dict[str, int], budget: float) -> None:
    fit = water_fill(TIERS, demand, budget, in_force=in_force)
    near = water_fill(TIERS, demand, budget, in_force=in_force, nearest=True)
    raised = [name for name in fit if near[name] != fit[name]]
    assert len(raised) <= 1
    for name in raised:
        assert near[name] == fit[name] + 1
        over = load_of(demand, near, in_force) - budget
        assert 0 < over < budget - load_of(demand, fit, in_force)


@given(demands(), IN_FORCE, st.floats(0, 2000))
def test_plus_is_cut_only_with_free_at_its_floor_and_the_result_fits(
        demand: DemandSignal, in_force: dict[str, int], budget: float) -> None:
    limits = water_fill(TIERS, demand, budget, in_force=in_force)
    if limits["plus"] < 200:
        assert limits["free"] == FREE.floor
    load = load_of(demand, limits, in_force)
    at_floors = limits == {"free": FREE.floor, "plus": PLUS.floor}
    assert at_floors or load <= budget + 1e-6


def test_a_tier_missing_from_the_signal_keeps_its_baseline() -> None:
    demand = signal(tier("free", (100, 50), admitted=150.0))
    assert water_fill(TIERS, demand, 100.0, in_force={}) == {"free": 1, "plus": 200}
    assert replace(demand, tiers=()).tier("free") is None
