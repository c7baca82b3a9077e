"""The operator's reader of the demand signal (``spec.quotas.demand``).

Two ways to read it, one answer (:class:`~meltguard.core.demand.DemandSignal`, or None):

- :class:`QuotaServiceDemand` asks every quota replica's ``GET /v1/demand?policy=`` over the
  scrape client and adds the answers up: each replica counts its own share, and the shares of
  replicas sharing a store add up to the whole. A replica that fails makes the whole read fail:
  a partial sum would show less demand than there is, and the quotas would relax on it.
- :class:`PrometheusDemand` asks a Prometheus server that scrapes the replicas, summing the
  ``meltguard_quota_*_units_total`` rates and the ``meltguard_quota_subjects_reaching`` gauge.

A read never raises for a bad or absent signal: it returns None, logs why (once per change of
reason) and counts the reason in ``failures``; the operator then falls back to AIMD.
"""

from __future__ import annotations

import abc
import collections
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Annotated
from urllib.parse import quote

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from meltguard.api.durations import duration_seconds
from meltguard.api.quota_models import DemandSpec
from meltguard.core.demand import RATE_SECONDS, DemandSignal, TierDemand
from meltguard.ingest.http_client import ScrapeError, Scraper
from meltguard.ingest.prometheus import QueryError, Vector, instant_query
from meltguard.ingest.source import ListEndpoints

log = logging.getLogger(__name__)

#: The quota replicas to ask, as ``host:port`` (all of them: each holds a share).
ListQuotaEndpoints = Callable[[], Awaitable[Sequence[str]]]


class DemandUnavailable(Exception):
    """No usable signal; ``reason`` is a short label (``http_status``, ``malformed``...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


_Rate = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class _TierPage(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, populate_by_name=True)

    tier: Annotated[str, Field(min_length=1)]
    attempts_per_second: _Rate = Field(alias="attemptsPerSecond")
    admitted_per_second: _Rate = Field(alias="admittedPerSecond")
    refused_per_second: _Rate = Field(alias="refusedPerSecond")
    reaching: list[Annotated[int, Field(ge=0)]]


class _DemandPage(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, populate_by_name=True)

    policy: str
    observed_at: Annotated[float, Field(allow_inf_nan=False)] = Field(alias="observedAt")
    interval_seconds: Annotated[float, Field(gt=0, allow_inf_nan=False)] = Field(
        default=RATE_SECONDS, alias="intervalSeconds")
    tiers: list[_TierPage]


def _field_path(location: Iterable[int | str]) -> str:
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else part
    return path or "page"


def check_reaching(tier: str, reaching: Sequence[int]) -> None:
    """DemandUnavailable unless ``reaching`` never grows (a subject that reached ``k``
    reached every count below it)."""
    for k in range(1, len(reaching)):
        if reaching[k] > reaching[k - 1]:
            raise DemandUnavailable(
                "malformed",
                f"tier {tier!r}: reaching[{k}] ({reaching[k]}) exceeds "
                f"reaching[{k - 1}] ({reaching[k - 1]})",
            )


def parse_demand_page(page: bytes, policy: str) -> DemandSignal:
    """One replica's share of the signal, from its ``/v1/demand`` answer; DemandUnavailable
    naming what is wrong. (A share's ``reaching`` may grow: a subject's attempts alternate
    between replicas; only the sum never grows.)"""
    try:
        parsed = _DemandPage.model_validate_json(page)
    except ValidationError as error:
        first = error.errors()[0]
        where = _field_path(first["loc"])
        raise DemandUnavailable("malformed", f"{where}: {first['msg']}") from None
    if parsed.policy != policy:
        message = f"policy: the page is about {parsed.policy!r}, not {policy!r}"
        raise DemandUnavailable("malformed", message)
    tiers = tuple(
        TierDemand(
            tier.tier,
            tier.attempts_per_second,
            tier.admitted_per_second,
            tier.refused_per_second,
            tuple(tier.reaching),
        )
        for tier in parsed.tiers
    )
    return DemandSignal(tiers=tiers, observed_at=parsed.observed_at,
                        rate_seconds=parsed.interval_seconds)


def add_reaching(parts: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """Entry-wise sum of the replicas' ``reaching``. An empty part (no consume in this window
    yet) adds nothing; parts of different lengths (a baseline changed) are cut to the
    shortest, whose last entry still counts everyone past it."""
    counted = [part for part in parts if part]
    if not counted:
        return ()
    length = min(len(part) for part in counted)
    return tuple(sum(part[k] for part in counted) for k in range(length))


def add_signals(signals: Sequence[DemandSignal]) -> DemandSignal:
    """The whole of the replicas' shares: rates and ``reaching`` added per tier, observed at
    the oldest share's time."""
    names = list(dict.fromkeys(tier.tier for signal in signals for tier in signal.tiers))
    tiers = []
    for name in names:
        shares = [share for signal in signals if (share := signal.tier(name)) is not None]
        tiers.append(
            TierDemand(
                name,
                sum(share.attempts_per_second for share in shares),
                sum(share.admitted_per_second for share in shares),
                sum(share.refused_per_second for share in shares),
                add_reaching([share.reaching for share in shares]),
            )
        )
    return DemandSignal(tuple(tiers), min(signal.observed_at for signal in signals),
                        max(signal.rate_seconds for signal in signals))


class _Reader(abc.ABC):
    """What both readers share: ``read()`` that never raises, and the failure bookkeeping."""

    def __init__(self, policy: str) -> None:
        self.policy = policy
        #: failed reads by reason
        self.failures: collections.Counter[str] = collections.Counter()
        self.last_failure: str | None = None

    async def read(self) -> DemandSignal | None:
        """The signal now, or None (the reason logged and counted)."""
        try:
            signal = await self._read()
        except DemandUnavailable as error:
            self.failures[error.reason] += 1
            if self.last_failure != str(error):
                log.warning("demand signal of %s unavailable: %s", self.policy, error)
            self.last_failure = str(error)
            return None
        if self.last_failure is not None:
            log.info("demand signal of %s is back", self.policy)
        self.last_failure = None
        return signal

    @abc.abstractmethod
    async def _read(self) -> DemandSignal:
        """The signal, or DemandUnavailable saying why not."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections."""


class QuotaServiceDemand(_Reader):
    """Reads ``/v1/demand`` of every quota replica that ``list_endpoints`` names."""

    def __init__(
        self, policy: str, list_endpoints: ListQuotaEndpoints, *, timeout: float = 2.0
    ) -> None:
        super().__init__(policy)
        self.list_endpoints = list_endpoints
        self.scraper = Scraper(path=f"/v1/demand?policy={quote(policy, safe='')}", timeout=timeout)

    async def _read(self) -> DemandSignal:
        endpoints = await self.list_endpoints()
        if not endpoints:
            raise DemandUnavailable("no_endpoints", "no quota service replica to ask")
        pages = await self.scraper.fetch_all(endpoints)
        signals = []
        for endpoint, page in pages.items():
            if isinstance(page, ScrapeError):
                raise DemandUnavailable(page.reason, str(page))
            try:
                signals.append(parse_demand_page(page, self.policy))
            except DemandUnavailable as error:
                raise DemandUnavailable(error.reason, f"{endpoint}: {error}") from None
        whole = add_signals(signals)
        for tier in whole.tiers:
            check_reaching(tier.tier, tier.reaching)
        return whole

    async def close(self) -> None:
        await self.scraper.close()


def _label_value(text: str) -> str:
    """``text`` as a PromQL string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class PrometheusDemand(_Reader):
    """Reads the quota replicas' series back from a Prometheus server at ``url``; rates are
    taken over ``rate_window`` (a PromQL duration such as ``1m``)."""

    def __init__(
        self,
        policy: str,
        url: str,
        *,
        rate_window: str = "1m",
        timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(policy)
        self.url = url.rstrip("/")
        self.rate_window = rate_window
        self.timeout = timeout
        self.clock = clock
        self._session: aiohttp.ClientSession | None = None

    def queries(self) -> dict[str, str]:
        """PromQL per part of the signal: three rates by tier, ``reaching`` by tier and count."""
        selector = f"{{policy={_label_value(self.policy)}}}"
        queries = {
            what: f"sum by (tier) (rate(meltguard_quota_{what}_units_total{selector}"
            f"[{self.rate_window}]))"
            for what in ("attempted", "admitted", "refused")
        }
        queries["reaching"] = (
            f"sum by (tier, attempts) (meltguard_quota_subjects_reaching{selector})"
        )
        return queries

    async def _read(self) -> DemandSignal:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self.timeout)
            self._session = aiohttp.ClientSession(timeout=timeout)
        at = self.clock()  # one instant for every query: a scrape between them cannot split it
        answers: dict[str, Vector] = {}
        for part, query in self.queries().items():
            try:
                answers[part] = await instant_query(
                    self._session, self.url, query, timeout=self.timeout, at=at
                )
            except QueryError as error:
                raise DemandUnavailable(error.reason, f"{part} query: {error}") from None
        return signal_from_vectors(answers, at,
                                   rate_seconds=duration_seconds(self.rate_window))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _by_tier(vector: Vector, part: str) -> dict[str, float]:
    rates = {}
    for labels, value, _ in vector:
        if "tier" not in labels or not math.isfinite(value) or value < 0:
            raise DemandUnavailable(
                "malformed", f"{part}: bad sample {dict(labels)} = {value}"
            )
        rates[labels["tier"]] = value
    return rates


def _reaching_by_tier(vector: Vector) -> dict[str, tuple[int, ...]]:
    counts: dict[str, dict[int, int]] = collections.defaultdict(dict)
    for labels, value, _ in vector:
        attempts = labels.get("attempts", "")
        if "tier" not in labels or not attempts.isdigit() or int(attempts) < 1:
            raise DemandUnavailable("malformed", f"reaching: bad labels {dict(labels)}")
        if not math.isfinite(value) or value < 0 or value != int(value):
            raise DemandUnavailable(
                "malformed", f"reaching: {dict(labels)} is {value}, not a subject count"
            )
        counts[labels["tier"]][int(attempts)] = int(value)
    reaching = {}
    for tier, by_count in counts.items():
        if sorted(by_count) != list(range(1, len(by_count) + 1)):
            raise DemandUnavailable("malformed", f"reaching: tier {tier!r} has gaps in attempts")
        entries = tuple(by_count[k] for k in range(1, len(by_count) + 1))
        check_reaching(tier, entries)
        reaching[tier] = entries
    return reaching


def signal_from_vectors(answers: dict[str, Vector], at: float, *,
                        rate_seconds: float = RATE_SECONDS) -> DemandSignal:
    """The signal of the four query answers of :meth:`PrometheusDemand.queries`, all
    evaluated at epoch second ``at``, the rates taken over ``rate_seconds``."""
    attempted = _by_tier(answers["attempted"], "attempted")
    if not attempted:
        raise DemandUnavailable("no_series", "no quota replica's series for this policy")
    admitted = _by_tier(answers["admitted"], "admitted")
    refused = _by_tier(answers["refused"], "refused")
    reaching = _reaching_by_tier(answers["reaching"])
    tiers = tuple(
        TierDemand(
            tier,
            attempted[tier],
            admitted.get(tier, 0.0),
            refused.get(tier, 0.0),
            reaching.get(tier, ()),
        )
        for tier in sorted(attempted)
    )
    return DemandSignal(tiers, at, rate_seconds)


DemandReader = QuotaServiceDemand | PrometheusDemand


def create_demand_reader(
    demand: DemandSpec, *, namespace: str, policy: str, list_endpoints: ListEndpoints
) -> DemandReader:
    """The reader ``spec.quotas.demand`` asks for, for the policy ``namespace/policy``."""
    full_name = f"{namespace}/{policy}"
    if demand.prometheus is not None:
        prometheus = demand.prometheus
        return PrometheusDemand(full_name, prometheus.url, rate_window=prometheus.rate_window)
    if demand.pods is not None:
        pods = demand.pods

        async def replicas() -> Sequence[str]:
            return await list_endpoints(pods.namespace, pods.selector.match_labels, pods.port)

        return QuotaServiceDemand(full_name, replicas)
    if demand.url is None:  # the model's validation already refuses this
        raise ValueError("spec.quotas.demand: set exactly one of pods, url or prometheus")
    endpoint = demand.url.removeprefix("http://").rstrip("/")

    async def the_url() -> Sequence[str]:
        return [endpoint]

    return QuotaServiceDemand(full_name, the_url)


class DemandReaders:
    """One reader per policy, kept across ticks (its connections), rebuilt when the policy's
    ``spec.quotas.demand`` changes and closed when the policy goes or stops naming one."""

    def __init__(self, list_endpoints: ListEndpoints) -> None:
        self._list_endpoints = list_endpoints
        self._readers: dict[tuple[str, str], tuple[DemandSpec, DemandReader]] = {}

    async def read(self, policy: tuple[str, str], demand: DemandSpec | None) -> DemandSignal | None:
        """The policy's demand signal; None without ``spec.quotas.demand`` or a good read."""
        known = self._readers.get(policy)
        if known is not None and known[0] != demand:
            await self.forget(policy)
            known = None
        if demand is None:
            return None
        if known is None:
            namespace, name = policy
            reader = create_demand_reader(
                demand, namespace=namespace, policy=name, list_endpoints=self._list_endpoints
            )
            known = self._readers[policy] = (demand, reader)
        return await known[1].read()

    async def forget(self, policy: tuple[str, str]) -> None:
        """Close the policy's reader (deleted policy, or a new demand spec)."""
        known = self._readers.pop(policy, None)
        if known is not None:
            await known[1].close()

    async def close(self) -> None:
        """Close every reader (operator shutdown)."""
        for policy in list(self._readers):
            await self.forget(policy)
