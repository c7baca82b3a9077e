"""Demand-aware quotas: one-step cuts, relaxing only with measured room, the budget, and
decide() choosing them when a demand signal comes."""

from __future__ import annotations

import pytest

from meltguard.api.state import ControllerState, TierLimit
from meltguard.core.decide import decide
from meltguard.core.demand import DemandSignal, TierDemand
from meltguard.core.headroom import (
    HEAT_CEILING_SHARE,
    HEAT_CLEARED_CELSIUS,
    HEAT_LAG_INTERVALS,
    Headroom,
    HeatCut,
    fill_level,
    headroom,
    learn_rate,
)
from meltguard.core.quotas import (
    MAX_LOOK_AHEAD,
    RAISE_SETTLE_SECONDS,
    RELAX_GROWTH,
    RELAX_MARGIN,
    Pressure,
    QuotaChange,
    follow_demand,
    look_ahead,
    within_growth,
)

from .conftest import NOW, fleet, make_spec

SPEC = make_spec()  # tighten every 180 s, relax every 300 s; free 3, plus 200, pro unlimited
FILL = fill_level(SPEC)


def pressure(utilization: float, *, cannot_help: bool = True, overheated: bool = False,
             warm: bool = False, all_cooling: bool = False) -> Pressure:
    return Pressure(utilization=utilization, fill=FILL, overheated=overheated, warm=warm,
                    scaling_cannot_help=cannot_help, all_cooling=all_cooling)


def step(remembered: list[TierLimit], to: dict[str, int], room: Pressure, *,
         last: float | None = None) -> tuple[list[int], tuple[QuotaChange, ...]]:
    result = follow_demand(SPEC.quotas, remembered=remembered, tighten_to=to, relax_to=to,
                           pressure=room, last_change=last, last_raise=None,
                           rate_seconds=60, now=NOW)
    return [entry.limit for entry in result.limits], result.changes


def test_the_fill_level_sits_between_cool_and_melting_utilization() -> None:
    assert fill_level(SPEC) == pytest.approx(0.952)  # melt 97 %, cool 85 %: 85 % of the way
    assert SPEC.melt.cool.utilization_percent / 100 < FILL < SPEC.melt.utilization_percent / 100


def test_a_cut_goes_straight_to_the_target_every_tier_at_once() -> None:
    limits, changes = step([], {"free": 0, "plus": 120}, pressure(0.99))
    assert limits == [0, 120]
    assert changes == (QuotaChange("free", 3, 0, "tighten"),
                       QuotaChange("plus", 200, 120, "tighten"))


def test_no_cut_while_scaling_can_help_the_last_cut_is_cooling_or_below_fill() -> None:
    target = {"free": 0, "plus": 200}
    assert step([], target, pressure(0.99, cannot_help=False))[1] == ()
    assert step([], target, pressure(0.99, all_cooling=True))[1] == ()
    assert step([], target, pressure(FILL - 0.01))[1] == ()
    # heat cuts whatever the utilization
    assert step([], target, pressure(0.5, overheated=True))[0] == [0, 200]


def test_cuts_wait_for_the_tighten_interval() -> None:
    target = {"free": 0, "plus": 200}
    assert step([], target, pressure(0.99), last=NOW - 179)[1] == ()
    assert step([], target, pressure(0.99), last=NOW - 180)[0] == [0, 200]


@pytest.mark.parametrize("direction", ["tighten", "relax"])
def test_no_change_before_the_rates_count_only_what_came_after_the_last_one(
        direction: str) -> None:
    # rates over 5 minutes (a Prometheus rate window): a tighten (180 s) or relax (300 s)
    # interval is not enough, the rates still count admissions under the limits before
    cut = [TierLimit(name="free", limit=1), TierLimit(name="plus", limit=200)]
    target = {"free": 0 if direction == "tighten" else 2, "plus": 200}
    room = pressure(0.99 if direction == "tighten" else FILL - RELAX_MARGIN - 0.01)

    def changes(since: float) -> tuple[QuotaChange, ...]:
        return follow_demand(SPEC.quotas, remembered=cut, tighten_to=target, relax_to=target,
                             pressure=room, last_change=NOW - since, last_raise=None,
                             rate_seconds=600, now=NOW).changes

    assert changes(599) == ()
    assert [change.direction for change in changes(600)] == [direction]


def test_a_limit_goes_up_only_with_measured_room_and_after_the_relax_interval() -> None:
    cut = [TierLimit(name="free", limit=1), TierLimit(name="plus", limit=200)]
    target = {"free": 2, "plus": 200}
    roomy = FILL - RELAX_MARGIN - 0.01
    assert step(cut, target, pressure(FILL - RELAX_MARGIN + 0.01), last=NOW - 600)[1] == ()
    assert step(cut, target, pressure(roomy, overheated=True), last=NOW - 600)[1] == ()
    assert step(cut, target, pressure(roomy, warm=True), last=NOW - 600)[1] == ()
    assert step(cut, target, pressure(roomy), last=NOW - 299)[1] == ()
    limits, changes = step(cut, target, pressure(roomy), last=NOW - 300)
    assert limits == [2, 200] and changes == (QuotaChange("free", 1, 2, "relax"),)


@pytest.mark.parametrize(("limit", "target", "raised"),
                         [(0, 3, 1), (0.4, 3, 1), (1, 3, 2), (1.5, 3, 2.25), (2, 3, 3),
                          (2, 2.5, 2.5), (3, 3, 3), (3, 5, 4.5), (8, 20, 12), (8, 9, 9)])
def test_a_raise_goes_to_the_next_whole_limit_or_half_up_at_most(
        limit: float, target: float, raised: float) -> None:
    assert RELAX_GROWTH == 1.5
    assert within_growth({"free": limit}, {"free": target}) == {"free": raised}


def test_a_limit_goes_up_to_its_target_when_there_is_room() -> None:
    cut = [TierLimit(name="free", limit=0.4), TierLimit(name="plus", limit=120)]
    limits, changes = step(cut, {"free": 1.4, "plus": 200},
                           pressure(FILL - RELAX_MARGIN - 0.01), last=NOW - 300)
    assert limits == [1.4, 200]
    assert [change.direction for change in changes] == ["relax", "relax"]


def demand(free_admitted: float) -> DemandSignal:
    return DemandSignal((TierDemand("free", free_admitted, free_admitted, 0.0, (100, 60, 30)),
                         TierDemand("plus", 0.0, 0.0, 0.0, ()),
                         TierDemand("pro", 0.0, 0.0, 0.0, ())), observed_at=NOW)


def test_a_gpus_rate_is_learnt_on_steady_ticks_only() -> None:
    assert learn_rate(None, admitted_per_second=4.0, utilization=0.5, gpus=16,
                      steady=True) == pytest.approx(0.5)
    assert learn_rate(0.5, admitted_per_second=40.0, utilization=1.0, gpus=16,
                      steady=False) == 0.5
    assert learn_rate(0.5, admitted_per_second=1.0, utilization=0.1, gpus=16,
                      steady=True) == 0.5


def test_the_budget_is_for_the_gpus_the_target_can_reach_and_heat_cuts_it() -> None:
    observation = fleet(8, 8, util=1.0)
    room = headroom(SPEC, observation, demand(10.0), utilization=1.0, gpus=8,
                    reachable_gpus=64, steady=False, learnt=0.5, heat=None, cooling=False,
                    now=NOW)
    assert room.budget == pytest.approx(0.5 * 64 * FILL)
    hot = headroom(SPEC, fleet(8, 8, util=1.0, temp=90.0), demand(4.0), utilization=1.0,
                   gpus=8, reachable_gpus=64, steady=False, learnt=0.5, heat=None,
                   cooling=False, now=NOW)
    assert hot.overheated and hot.budget == pytest.approx(4.0 * SPEC.quotas.tighten.factor)


@pytest.mark.parametrize(("reasons", "overheated"), [
    (frozenset({"sw_thermal"}), True),  # a melt reason, under the melt temperature
    (frozenset({"hw_power_brake"}), True),
    (frozenset({"sw_power_cap"}), False),  # at the power cap: normal under full load
    (frozenset(), False),
])
def test_a_gpu_throttled_for_a_melt_reason_counts_as_overheated_whatever_its_temperature(
        reasons: frozenset[str], overheated: bool) -> None:
    # samples carry the exporter's labels; spec.melt.throttleReasons NVML's names
    room = headroom(SPEC, fleet(8, 8, util=1.0, temp=70.0, reasons=reasons), demand(4.0),
                    utilization=1.0, gpus=8, reachable_gpus=64, steady=False, learnt=0.5,
                    heat=None, cooling=False, now=NOW)
    assert room.overheated is overheated
    assert room.budget == pytest.approx(4.0 * SPEC.quotas.tighten.factor if overheated
                                        else 0.5 * 64 * FILL)


def test_decide_cuts_free_in_one_step_from_the_demand_and_learns_the_rate() -> None:
    spec = make_spec(maxReplicas=8)
    state = ControllerState()
    # steady at 50 %: 8 GPUs admitting 2 images/s make 0.5 image/s each when busy
    calm = decide(spec, state, fleet(8, 8, util=0.5), now=NOW, demand=demand(2.0))
    assert calm.state.images_per_gpu_second == pytest.approx(0.5)
    assert calm.quota_changes == ()
    # then saturated at maxReplicas: 8 x 0.5 x 95.2 % = 3.808 images/s fit; free at 3 admits 4.4
    state = calm.state
    for tick in range(1, 5):
        hot = decide(spec, state, fleet(8, 8, util=1.0, at=NOW + 15 * tick),
                     now=NOW + 15 * tick, demand=demand(4.4))
        state = hot.state
        if hot.quota_changes:
            break
    # 4.4/s x images(L)/images(3) = 3.808 at images(L) = 164.4: L = 2 + 4.4/30, 2.14
    # (AIMD would have halved 3 to 1)
    assert hot.quota_changes == (QuotaChange("free", 3, 2.14, "tighten"),)
    assert [tier.limit for tier in hot.tiers[:2]] == [2.14, 200]


def test_without_a_signal_decide_falls_back_to_aimd() -> None:
    spec = make_spec(maxReplicas=8)
    state = ControllerState()
    changes: list[QuotaChange] = []
    for tick in range(12):
        now = NOW + 15 * tick
        decision = decide(spec, state, fleet(8, 8, util=1.0, at=now), now=now)
        state = decision.state
        changes += decision.quota_changes
    assert changes[0] == QuotaChange("free", 3, 1, "tighten")  # x 0.5, one tier a step


def room_at(temp: float, util: float, admitted: float, heat: HeatCut | None, at: float, *,
            reachable: int = 64, cooling: bool = False) -> Headroom:
    """8 GPUs at 0.5 image/s each when busy, all at ``temp`` and ``util``."""
    return headroom(SPEC, fleet(8, 8, util=util, temp=temp), demand(admitted),
                    utilization=util, gpus=8, reachable_gpus=reachable, steady=temp < 85,
                    learnt=0.5, heat=heat, cooling=cooling, now=at)


def test_a_cut_for_heat_is_remembered_and_grows_back_only_while_every_gpu_is_cool() -> None:
    # overheated making 8 x 0.5 = 4 images/s: the budget is half the load, the ceiling that work
    hot = room_at(90.0, 1.0, 4.0, None, NOW)
    assert hot.heat == HeatCut(2.0, NOW, ceiling=4.0)
    # 300 s later, all cool: 25 % more (relax: 25 % per 300 s)
    later = room_at(60.0, 0.5, 2.0, hot.heat, NOW + 300)
    assert later.budget == pytest.approx(2.5)
    # 600 s: 3.125, but at most 65 % of the work that overheated (2.6); a GPU still warm
    # (80 C against cool.temperatureCelsius 78 C): the budget stops growing from here
    warm = room_at(80.0, 0.5, 2.0, later.heat, NOW + 600)
    assert HEAT_CEILING_SHARE == 0.65 and warm.budget == pytest.approx(2.6)
    assert warm.warm and not later.warm
    assert warm.heat == HeatCut(pytest.approx(2.6), NOW + 600, ceiling=4.0)  # type: ignore[arg-type]
    # the fleet serves 64 x 0.5 x 94 % = 30.08; here only 8 x 0.5 x 94 % = 3.76: forgotten
    assert room_at(60.0, 0.5, 2.0, HeatCut(3.0, NOW - 3600, ceiling=100.0), NOW,
                   reachable=8).heat is None


def test_while_a_cut_for_heat_works_there_is_no_second_cut() -> None:
    first = HeatCut(2.0, NOW, ceiling=4.0)
    interval = SPEC.quotas.tighten.interval_seconds
    # still hot: within the tighten interval, while every melting GPU cools, or while the
    # GPUs are saturated by the queue from before the cut
    assert room_at(90.0, 0.8, 3.0, first, NOW + interval - 1).heat == first
    assert room_at(90.0, 0.8, 3.0, first, NOW + interval, cooling=True).heat == first
    assert room_at(90.0, 1.0, 3.0, first, NOW + interval).heat == first
    # none of that: the cut did not do: cut again from the load now; the ceiling stays the
    # work of the first overheating
    again = room_at(90.0, 0.8, 3.0, first, NOW + interval)
    assert again.heat == HeatCut(1.5, NOW + interval, ceiling=4.0)


def test_a_cut_for_heat_is_forgotten_when_the_gpus_run_cool_at_its_ceiling() -> None:
    at_ceiling = HeatCut(2.6, NOW - 600, ceiling=4.0)  # grown to its ceiling, 2.6
    cool = SPEC.melt.cool.temperature_celsius - HEAT_CLEARED_CELSIUS
    assert room_at(cool - 1, 0.65, 2.6, at_ceiling, NOW).heat is None
    # too warm, or too little load to tell: kept
    assert room_at(cool + 1, 0.65, 2.6, at_ceiling, NOW).heat is not None
    assert room_at(cool - 1, 0.3, 1.0, at_ceiling, NOW).heat is not None


def test_once_every_attempt_fits_the_budget_limits_go_straight_back_to_their_baselines(
        ) -> None:
    spec = make_spec(maxReplicas=8)  # budget: 8 x 0.5 x 94 % = 3.76 images/s
    cut = ControllerState(limits=[TierLimit(name="free", limit=0.5),
                                  TierLimit(name="plus", limit=200)],
                          images_per_gpu_second=0.5)
    fits = decide(spec, cut, fleet(8, 8, util=0.4), now=NOW, demand=demand(3.0))
    assert fits.quota_changes == (QuotaChange("free", 0.5, 3, "relax"),)
    # more attempts than the budget: the water-filled limit (2.9: 1 image/s admitted at 0.5,
    # 3.2 at 2, 3.8 at 3), but no higher than the next whole limit
    more = DemandSignal((TierDemand("free", 5.0, 1.0, 4.0, (100, 60, 30)),
                         TierDemand("plus", 0.0, 0.0, 0.0, ()),
                         TierDemand("pro", 0.0, 0.0, 0.0, ())), observed_at=NOW)
    capped = decide(spec, cut, fleet(8, 8, util=0.4), now=NOW, demand=more)
    assert [change.new for change in capped.quota_changes] == [1]


def test_a_cut_the_work_came_down_to_is_judged_only_once_its_heat_had_time_to_leave() -> None:
    first = HeatCut(2.0, NOW, ceiling=4.0)
    interval = SPEC.quotas.tighten.interval_seconds
    # the work (8 x 0.5 x 40 % = 1.6) is under the cut's budget, yet a GPU is still at 90 C:
    # the heat of the work before the cut; one interval is too soon to judge the cut
    assert HEAT_LAG_INTERVALS == 2
    assert room_at(90.0, 0.4, 1.6, first, NOW + interval).heat == first
    # two intervals on, still that hot: the cut did not do, cut again
    again = room_at(90.0, 0.4, 1.6, first, NOW + 2 * interval)
    assert again.heat == HeatCut(0.8, NOW + 2 * interval, ceiling=4.0)


@pytest.mark.parametrize(("admitted", "since", "expected"),
                         [(4.8, 180, 1.2), (4.8, 360, 1.2 ** 0.5), (4.0, 180, 1.0),
                          (3.0, 180, 1.0), (8.0, 180, MAX_LOOK_AHEAD)])
def test_a_cut_looks_ahead_by_the_growth_of_the_load_since_the_last_cut(
        admitted: float, since: float, expected: float) -> None:
    assert look_ahead(4.0, admitted=admitted, since=since, interval=180) == pytest.approx(expected)


def test_without_a_cut_to_measure_from_there_is_no_looking_ahead() -> None:
    assert look_ahead(None, admitted=4.8, since=180, interval=180) == 1.0
    assert look_ahead(0.0, admitted=4.8, since=180, interval=180) == 1.0


def test_a_cut_chasing_a_rising_demand_aims_ahead_of_it_and_a_raise_forgets_it() -> None:
    spec = make_spec(maxReplicas=8)  # budget: 8 x 0.5 x 95.2 % = 3.808 images/s
    cut = ControllerState(limits=[TierLimit(name="free", limit=2),
                                  TierLimit(name="plus", limit=200)],
                          images_per_gpu_second=0.5, cut_load=4.0,
                          last_quota_change_time=NOW - 180)
    rising = DemandSignal((TierDemand("free", 4.8, 4.8, 0.0, (100, 60, 30)),
                           TierDemand("plus", 0.0, 0.0, 0.0, ()),
                           TierDemand("pro", 0.0, 0.0, 0.0, ())), observed_at=NOW)
    decision = decide(spec, cut, fleet(8, 8, util=1.0), now=NOW, demand=rising)
    # the load grew 4.0 -> 4.8 in one interval: aim at 3.808 / 1.2 = 3.173 images/s, which
    # 4.8 x images(L) / 160 gives at images(L) = 105.8: L = 1 + 5.8/60 (1.44 without looking
    # ahead)
    assert decision.quota_changes == (QuotaChange("free", 2, 1.09, "tighten"),)
    assert decision.state.cut_load == pytest.approx(3.808 / 1.2)
    raised = decide(spec, decision.state.model_copy(update={"last_quota_change_time": NOW}),
                    fleet(8, 8, util=0.4, at=NOW + 300), now=NOW + 300, demand=demand(3.0))
    assert [change.direction for change in raised.quota_changes] == ["relax"]
    assert raised.state.cut_load is None and raised.state.last_raise_time == NOW + 300


def test_after_a_raise_only_heat_cuts_until_the_burst_of_returning_users_has_passed() -> None:
    raised = [TierLimit(name="free", limit=3), TierLimit(name="plus", limit=200)]
    target = {"free": 1, "plus": 200}

    def cut_after(seconds: float, room: Pressure) -> tuple[QuotaChange, ...]:
        return follow_demand(SPEC.quotas, remembered=raised, tighten_to=target,
                             relax_to=target, pressure=room, last_change=NOW - seconds,
                             last_raise=NOW - seconds, rate_seconds=60, now=NOW).changes

    assert RAISE_SETTLE_SECONDS == 600
    assert cut_after(RAISE_SETTLE_SECONDS - 1, pressure(0.99)) == ()
    assert cut_after(RAISE_SETTLE_SECONDS - 1, pressure(0.99, overheated=True)) == (
        QuotaChange("free", 3, 1, "tighten"),)
    assert cut_after(RAISE_SETTLE_SECONDS, pressure(0.99)) == (
        QuotaChange("free", 3, 1, "tighten"),)
