"""Demand-aware quotas: one-step cuts, relaxing only with measured room, the budget, and
decide() choosing them when a demand signal comes."""

from __future__ import annotations

import pytest

from meltguard.api.state import ControllerState, TierLimit
from meltguard.core.decide import decide
from meltguard.core.demand import DemandSignal, TierDemand
from meltguard.core.headroom import HeatCut, fill_level, headroom, learn_rate
from meltguard.core.quotas import RELAX_MARGIN, Pressure, QuotaChange, follow_demand

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
                           pressure=room, last_change=last, now=NOW)
    return [entry.limit for entry in result.limits], result.changes


def test_the_fill_level_sits_between_cool_and_melting_utilization() -> None:
    assert fill_level(SPEC) == pytest.approx(0.94)  # melt 97 %, cool 85 %
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
                         [(0, 3, 1), (1, 3, 2), (3, 3, 3), (2, 3, 3)])
def test_a_raised_limit_at_most_doubles(limit: int, target: int, raised: int) -> None:
    cut = [TierLimit(name="free", limit=limit), TierLimit(name="plus", limit=120)]
    roomy = pressure(FILL - RELAX_MARGIN - 0.01)
    limits, _ = step(cut, {"free": target, "plus": 200}, roomy, last=NOW - 300)
    assert limits == [raised, 200]


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
                    reachable_gpus=64, steady=False, learnt=0.5, heat=None, now=NOW)
    assert room.budget == pytest.approx(0.5 * 64 * FILL)
    hot = headroom(SPEC, fleet(8, 8, util=1.0, temp=90.0), demand(10.0), utilization=1.0,
                   gpus=8, reachable_gpus=64, steady=False, learnt=0.5, heat=None, now=NOW)
    assert hot.overheated and hot.budget == pytest.approx(10.0 * SPEC.quotas.tighten.factor)


def test_decide_cuts_free_in_one_step_from_the_demand_and_learns_the_rate() -> None:
    spec = make_spec(maxReplicas=8)
    state = ControllerState()
    # steady at 50 %: 8 GPUs admitting 2 images/s make 0.5 image/s each when busy
    calm = decide(spec, state, fleet(8, 8, util=0.5), now=NOW, demand=demand(2.0))
    assert calm.state.images_per_gpu_second == pytest.approx(0.5)
    assert calm.quota_changes == ()
    # then saturated at maxReplicas: 8 x 0.5 x 94 % = 3.76 images/s fit; free at 3 admits 4.4
    state = calm.state
    for tick in range(1, 5):
        hot = decide(spec, state, fleet(8, 8, util=1.0, at=NOW + 15 * tick),
                     now=NOW + 15 * tick, demand=demand(4.4))
        state = hot.state
        if hot.quota_changes:
            break
    # 4.4/s x images(L)/images(3): L=2 -> 3.71 fits (AIMD would have halved 3 to 1)
    assert hot.quota_changes == (QuotaChange("free", 3, 2, "tighten"),)
    assert [tier.limit for tier in hot.tiers[:2]] == [2, 200]


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


def test_a_cut_for_heat_is_remembered_and_grows_back_only_while_every_gpu_is_cool() -> None:
    calm = fleet(8, 8, util=0.5, temp=60.0)
    hot = headroom(SPEC, fleet(8, 8, util=1.0, temp=90.0), demand(10.0), utilization=1.0,
                   gpus=8, reachable_gpus=64, steady=False, learnt=0.5, heat=None, now=NOW)
    assert hot.heat == HeatCut(5.0, NOW)
    # 300 s later, all cool: 25 % more (relax: 25 % per 300 s)
    later = headroom(SPEC, calm, demand(2.0), utilization=0.5, gpus=8, reachable_gpus=64,
                     steady=True, learnt=0.5, heat=hot.heat, now=NOW + 300)
    assert later.budget == pytest.approx(6.25)
    # a GPU still warm: the budget stops growing from here
    warm = headroom(SPEC, fleet(8, 8, util=0.5, temp=80.0), demand(2.0), utilization=0.5,
                    gpus=8, reachable_gpus=64, steady=True, learnt=0.5, heat=later.heat,
                    now=NOW + 600)
    assert warm.budget == pytest.approx(6.25 * 1.25)
    assert warm.warm and not later.warm  # 80 C against cool.temperatureCelsius 78 C
    assert warm.heat == HeatCut(pytest.approx(6.25 * 1.25), NOW + 600)  # type: ignore[arg-type]
    # the fleet serves 64 x 0.5 x 94 % = 30.08; here only 8 x 0.5 x 94 % = 3.76: forgotten
    assert headroom(SPEC, calm, demand(2.0), utilization=0.5, gpus=8, reachable_gpus=8,
                    steady=True, learnt=0.5, heat=HeatCut(3.0, NOW - 3600),
                    now=NOW).heat is None
