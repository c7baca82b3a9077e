"""AIMD quota steps in shed order, with worked numbers."""

from __future__ import annotations

from meltguard.api.models import PolicySpec
from meltguard.api.quota_models import QuotasSpec
from meltguard.api.state import TierLimit
from meltguard.api.vocabulary import Phase
from meltguard.core.quotas import QuotaChange, QuotaStep, limits_in_force, step_quotas

from .conftest import NOW, make_spec


def quota_step(quotas: QuotasSpec, remembered: list[TierLimit], phase: Phase, *,
         cannot_help: bool = False, all_cooling: bool = False, calm_since: float | None = None,
         last: float | None = None, now: float = NOW) -> QuotaStep:
    return step_quotas(quotas, remembered=remembered, phase=phase,
                       scaling_cannot_help=cannot_help, all_cooling=all_cooling,
                       calm_since=calm_since, last_change=last, now=now)


def limits(**values: int) -> list[TierLimit]:
    return [TierLimit(name=name, limit=limit) for name, limit in values.items()]


def test_tightens_first_tier_by_factor_down_to_floor_then_next(spec: PolicySpec) -> None:
    memory: list[TierLimit] = []
    changes = []
    last = None
    for step_index in range(6):
        now = NOW + 180 * step_index  # the default tighten interval
        step = quota_step(spec.quotas, memory, "Melting", cannot_help=True, last=last, now=now)
        memory = list(step.limits)
        if step.changes:
            changes.extend(step.changes)
            last = now
    assert changes == [
        QuotaChange("free", 3, 1, "tighten"),
        QuotaChange("free", 1, 0, "tighten"),
        QuotaChange("plus", 200, 100, "tighten"),
        QuotaChange("plus", 100, 50, "tighten"),
    ]
    assert memory == limits(free=0, plus=50)


def test_tighten_waits_for_its_interval(spec: PolicySpec) -> None:
    step = quota_step(spec.quotas, limits(free=1, plus=200), "Melting", cannot_help=True,
                      last=NOW - 179)
    assert step.changes == ()


def test_no_tighten_while_every_melting_gpu_is_already_cooling(spec: PolicySpec) -> None:
    step = quota_step(spec.quotas, [], "Melting", cannot_help=True, all_cooling=True)
    assert step.changes == ()


def test_no_tighten_while_scaling_can_still_help_or_not_melting(spec: PolicySpec) -> None:
    assert quota_step(spec.quotas, [], "Melting").changes == ()
    assert quota_step(spec.quotas, [], "Hot", cannot_help=True).changes == ()


def test_relax_gives_back_last_tightened_tier_first_in_steps_of_baseline_share() -> None:
    spec = make_spec()  # relax 25 % every 300 s
    memory = limits(free=0, plus=50)
    calm_since = NOW - 300
    changes = []
    last = NOW - 300
    for step_index in range(8):
        now = NOW + 300 * step_index
        step = quota_step(spec.quotas, memory, "Cool", calm_since=calm_since, last=last, now=now)
        memory = list(step.limits)
        if step.changes:
            changes += [(change.tier, change.new) for change in step.changes]
            last = now
    # plus: 50 -> 100 -> 150 -> 200 (25 % of 200 = 50), then free: +1 each (25 % of 3 -> 1)
    assert changes == [("plus", 100), ("plus", 150), ("plus", 200), ("free", 1), ("free", 2),
                       ("free", 3)]


def test_relax_waits_for_calm_to_last_an_interval(spec: PolicySpec) -> None:
    memory = limits(free=0, plus=200)
    held = quota_step(spec.quotas, memory, "Cool", calm_since=NOW - 299).changes
    assert held == ()
    relaxed = quota_step(spec.quotas, memory, "Cool", calm_since=NOW - 300).changes
    assert relaxed == (QuotaChange("free", 0, 1, "relax"),)


def test_no_relax_while_warm_however_long_calm(spec: PolicySpec) -> None:
    """Hysteresis: utilization above target (Warm) is no room to give back."""
    memory = limits(free=0, plus=200)
    assert quota_step(spec.quotas, memory, "Warm", calm_since=NOW - 3600).changes == ()


def test_telemetry_loss_holds_or_tightens_as_configured() -> None:
    hold = make_spec()
    assert quota_step(hold.quotas, [], "Unknown").changes == ()
    tighten = make_spec(quotas={**hold.quotas.model_dump(by_alias=True),
                                "onTelemetryLoss": "tighten"})
    changes = quota_step(tighten.quotas, [], "Unknown").changes
    assert changes == (QuotaChange("free", 3, 1, "tighten"),)


def test_edited_baseline_clamps_the_limit_in_force(spec: PolicySpec) -> None:
    assert limits_in_force(spec.quotas.tiers, limits(free=10, plus=20)) == limits(free=3,
                                                                                  plus=50)
