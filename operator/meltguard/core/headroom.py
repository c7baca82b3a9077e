"""How many images per second the target's GPUs can serve safely: the budget that demand-aware
quotas fill.

* The rate of one GPU is learnt, not configured: on a steady tick (phase Cool or Warm: no GPU
  melting, so the fleet keeps up) with the fleet loaded enough to measure (utilization from
  :data:`LEARN_FROM`), the images admitted per second are the images served, so
  ``admitted / (utilization x GPUs)`` is what one fully busy GPU makes. Other ticks teach
  nothing (admitted may then exceed served), so the rate learnt before a saturation is the one
  used during it; it is smoothed over ticks (:data:`SMOOTHING`) because one tick's admissions
  are noisy.
* The budget is for the GPUs the target can reach: ``maxReplicas``, or fewer when the cluster
  has shown it cannot place more. Growing the fleet to meet demand is the scaler's work;
  quotas only shed what even the largest fleet could not serve.
* The fill level is the utilization the quotas aim at when scaling cannot help:
  :data:`FILL_SHARE` of the way from where a melting GPU counts as cool again
  (``melt.cool.utilizationPercent``) to where it melts (``melt.utilizationPercent``): as
  close to full as leaves the fleet's utilization swings (a few points from tick to tick)
  clear of melting. With the defaults, 95.2 %.
* Heat is another matter: a GPU at the melt temperature or thermally throttled needs less
  load whatever its rate, so then the budget is the load admitted now, cut by
  ``tighten.factor`` (again only if that cut has had its chance to work). That cut is
  remembered: its budget grows by ``relax.stepPercent`` per ``relax.intervalSeconds``
  (compounded, as time passes) while every GPU is below ``melt.cool.temperatureCelsius``,
  up to :data:`HEAT_CEILING_SHARE` of the work the GPUs were doing when they overheated;
  it is forgotten once it passes the fleet's budget, or once the GPUs run well under the
  cool temperature at that ceiling (the cooling is back). Without that memory, the limits
  would go straight back to the load that overheated the GPUs.
"""

from __future__ import annotations

from dataclasses import dataclass

from meltguard.api.models import PolicySpec
from meltguard.core.demand import DemandSignal, admitted_total
from meltguard.core.observation import Observation
from meltguard.core.thermal import melt_throttle_labels

#: Below this utilization one tick's figures are too small to learn a GPU's rate from.
LEARN_FROM = 0.2
#: How far from ``melt.cool.utilizationPercent`` to ``melt.utilizationPercent`` the fill level
#: sits.
FILL_SHARE = 0.85
#: Mean utilization from which the GPUs count as saturated: busy with a queue.
SATURATED = 0.99
#: Weight of a new tick's rate against the rate learnt so far.
SMOOTHING = 0.2
#: A budget cut for heat grows back to at most this share of the work the GPUs did when they
#: overheated (images per second, from their utilization and rate): the cooling that failed
#: under that work is likely still failing.
HEAT_CEILING_SHARE = 0.65
#: The heat is gone (the memory of a cut for heat is dropped) once the budget is back at its
#: ceiling and every GPU is this many degrees under ``melt.cool.temperatureCelsius``.
HEAT_CLEARED_CELSIUS = 10.0
#: ... and the load admitted is at least this share of that budget (a light load keeps even a
#: GPU whose cooling failed cool).
LOADED_SHARE = 0.9
#: A cut for heat whose budget the work has come down to is judged (and repeated if the GPUs
#: still overheat) only this many ``tighten.intervalSeconds`` after it was made.
HEAT_LAG_INTERVALS = 2


@dataclass(frozen=True, slots=True)
class Headroom:
    """This tick's budget and what it rests on."""

    utilization: float
    fill: float
    budget: float
    overheated: bool
    #: some GPU is at or above ``melt.cool.temperatureCelsius``: not yet cool enough for more
    warm: bool
    images_per_gpu_second: float | None
    heat: HeatCut | None


def fill_level(spec: PolicySpec) -> float:
    """The utilization (0..1) demand-aware quotas aim at when scaling cannot help."""
    melt = spec.melt
    cool, melting = melt.cool.utilization_percent, melt.utilization_percent
    return (cool + FILL_SHARE * (melting - cool)) / 100


def overheated(spec: PolicySpec, observation: Observation) -> bool:
    """Whether some GPU is at the melt temperature or throttled for one of the melt reasons."""
    # plain loops: the simulator asks this of 1,000 GPUs every tick
    melt_temperature, reasons = spec.melt.temperature_celsius, melt_throttle_labels(spec.melt)
    for sample in observation.samples:
        if sample.up and (sample.temperature_celsius >= melt_temperature
                          or not reasons.isdisjoint(sample.throttle_reasons)):
            return True
    return False


def _hottest(observation: Observation) -> float:
    hottest = 0.0  # also when no GPU is up; only compared with the cool temperature
    for sample in observation.samples:
        if sample.up and sample.temperature_celsius > hottest:
            hottest = sample.temperature_celsius
    return hottest


def learn_rate(previous: float | None, *, admitted_per_second: float, utilization: float,
               gpus: int, steady: bool) -> float | None:
    """The images one fully busy GPU makes per second, updated with this tick if it teaches."""
    if gpus <= 0 or not steady or utilization < LEARN_FROM:
        return previous
    measured = admitted_per_second / (utilization * gpus)
    if previous is None:
        return measured
    return previous + SMOOTHING * (measured - previous)


@dataclass(frozen=True, slots=True)
class HeatCut:
    """The budget the last cut for heat left, when it was made, and the work the GPUs did
    when they overheated (``ceiling``, images per second)."""

    budget: float
    at: float
    ceiling: float

    def grown(self, spec: PolicySpec, now: float) -> float:
        """The budget now: ``relax.stepPercent`` more per ``relax.intervalSeconds`` since,
        up to :data:`HEAT_CEILING_SHARE` of the load that overheated."""
        relax = spec.quotas.relax
        growth: float = (1 + relax.step_percent / 100) ** ((now - self.at)
                                                           / relax.interval_seconds)
        return min(self.budget * growth, self.ceiling * HEAT_CEILING_SHARE)

    def at_ceiling(self, spec: PolicySpec, now: float) -> bool:
        """Whether the budget has grown back as far as the load that overheated allows."""
        return self.grown(spec, now) >= self.ceiling * HEAT_CEILING_SHARE


def _cut_for_heat(spec: PolicySpec, heat: HeatCut | None, *, admitted: float, working: float,
                  utilization: float, cooling: bool, now: float) -> HeatCut:
    """The cut while some GPU overheats: the load admitted times ``tighten.factor``.

    Cut again only when the last cut did not do its work: at most once per
    ``tighten.intervalSeconds``, not while every melting GPU is cooling, and not while the
    GPUs are still saturated by the queue of the load from before the cut (they stay hot
    until it drains; cutting then would compound the cut on the load the last one left).
    Once the work is down to the cut's budget, the heat of the work before it takes a while
    to leave: wait :data:`HEAT_LAG_INTERVALS` intervals from the cut before judging it. The
    ceiling stays the work of the first overheating: the work at a repeated cut is measured
    on GPUs still hot from before and would set it far too low.
    """
    tighten = spec.quotas.tighten
    if heat is None:
        return HeatCut(admitted * tighten.factor, now, ceiling=working)
    since = now - heat.at
    settling = working <= heat.grown(spec, now) and (
        since < HEAT_LAG_INTERVALS * tighten.interval_seconds)
    if cooling or utilization >= SATURATED or since < tighten.interval_seconds or settling:
        return heat
    return HeatCut(admitted * tighten.factor, now, ceiling=heat.ceiling)


def _cleared(spec: PolicySpec, observation: Observation, heat: HeatCut, *, admitted: float,
             now: float) -> bool:
    """Whether the heat that called for ``heat`` is gone: the budget is back at its ceiling,
    the load admitted has come up to it, and every GPU runs well under the cool temperature
    with that load (a GPU whose cooling failed is cool too under a light load)."""
    budget = heat.grown(spec, now)
    cool = spec.melt.cool.temperature_celsius - HEAT_CLEARED_CELSIUS
    return (heat.at_ceiling(spec, now) and admitted >= LOADED_SHARE * budget
            and _hottest(observation) < cool)


def headroom(spec: PolicySpec, observation: Observation, demand: DemandSignal, *,
             utilization: float, gpus: int, reachable_gpus: int, steady: bool,
             learnt: float | None, heat: HeatCut | None, cooling: bool, now: float
             ) -> Headroom:
    """The budget for this tick (see the module docstring): ``gpus`` report now,
    ``reachable_gpus`` is what the target may grow to (maxReplicas, or what the cluster can
    place); ``steady``: the phase is Cool or Warm; ``heat``: the last cut for heat;
    ``cooling``: every melting GPU is cooling already."""
    fill = fill_level(spec)
    admitted = admitted_total(demand)
    rate = learn_rate(learnt, admitted_per_second=admitted, utilization=utilization,
                      gpus=gpus, steady=steady)
    if rate is not None:
        fleet = rate * reachable_gpus * fill
    else:  # nothing learnt yet: assume what is admitted now is served now
        fleet = admitted * fill / max(utilization, LEARN_FROM) * reachable_gpus / max(gpus, 1)
    hot = overheated(spec, observation)
    warm = _hottest(observation) >= spec.melt.cool.temperature_celsius
    if hot:
        working = admitted if rate is None else rate * utilization * gpus
        heat = _cut_for_heat(spec, heat, admitted=admitted, working=working,
                             utilization=utilization, cooling=cooling, now=now)
    elif heat is not None and (heat.grown(spec, now) >= fleet or _cleared(
            spec, observation, heat, admitted=admitted, now=now)):
        heat = None
    elif heat is not None and warm:  # no growth while any GPU is still warm
        heat = HeatCut(heat.grown(spec, now), now, ceiling=heat.ceiling)
    budget = fleet if heat is None else min(fleet, heat.grown(spec, now))
    return Headroom(utilization=utilization, fill=fill, budget=budget, overheated=hot, warm=warm,
                    images_per_gpu_second=rate, heat=heat)
