"""The limits in force: ``quotas.json`` documents by source, and the lookup built from them.

Sources (a file, a ConfigMap) put and remove whole documents; every change builds a new
immutable :class:`LimitsTable` and swaps it in with one assignment, so a request in flight
always sees one consistent set of limits and reloading never blocks or drops a request.
When two sources publish the same policy, the most recently ``updated`` document wins.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from meltguard.api.quotas import QuotaDocument, QuotaTier

log = logging.getLogger(__name__)


class UnknownQuota(LookupError):
    """A request names a policy or tier that no published document holds."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name


@dataclass(frozen=True)
class LimitsTable:
    """One consistent snapshot: policy ("namespace/name") -> its document."""

    policies: Mapping[str, QuotaDocument] = field(default_factory=dict)
    #: (policy, tier name) -> tier, the lookup of every decision
    _tiers: dict[tuple[str, str], QuotaTier] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        tiers = {
            (policy, tier.name): tier
            for policy, document in self.policies.items()
            for tier in document.tiers
        }
        object.__setattr__(self, "_tiers", tiers)

    def lookup(self, policy: str, tier: str) -> QuotaTier:
        """The tier in force, or :class:`UnknownQuota` naming the field that matched nothing."""
        found = self._tiers.get((policy, tier))
        if found is not None:
            return found
        document = self.policies.get(policy)
        if document is None:
            raise UnknownQuota("policy", f"policy {policy!r} has no published quotas")
        known = ", ".join(t.name for t in document.tiers)
        raise UnknownQuota("tier", f"tier {tier!r} is not a tier of {policy} (known: {known})")

    def limited_tiers(self) -> dict[tuple[str, str], tuple[int | float, int]]:
        """``{(policy, tier): (limit in force, baseline)}`` of every limited tier, for the
        gauges (the limit in force may be fractional)."""
        return {
            (policy, tier.name): (tier.limit, tier.baseline)
            for policy, document in self.policies.items()
            for tier in document.tiers
            if tier.limit is not None and tier.baseline is not None
        }


class LimitsRegistry:
    """Documents by source id; ``table`` is the current snapshot for lookups.

    ``on_change`` is called with each new table (the service updates its gauges there).
    Not thread-safe: call it from the event loop (threads hand over with
    ``loop.call_soon_threadsafe``).
    """

    def __init__(self, on_change: Callable[[LimitsTable], None] | None = None) -> None:
        self._documents: dict[str, QuotaDocument] = {}
        self.on_change = on_change
        self.table = LimitsTable()

    @property
    def sources(self) -> frozenset[str]:
        """Ids of the sources that currently publish a document."""
        return frozenset(self._documents)

    def put(self, source: str, document: QuotaDocument) -> None:
        """Publish (or replace) the document of ``source``."""
        self._documents[source] = document
        self._rebuild()

    def remove(self, source: str) -> None:
        """Withdraw the document of ``source`` (no-op when it has none)."""
        if self._documents.pop(source, None) is not None:
            self._rebuild()

    def _rebuild(self) -> None:
        policies: dict[str, tuple[str, QuotaDocument]] = {}
        for source, document in sorted(self._documents.items(), key=lambda item: item[1].updated):
            earlier = policies.get(document.policy)
            if earlier is not None:
                log.warning(
                    "policy %s is published by %s and %s; using %s, the most recently updated",
                    document.policy,
                    earlier[0],
                    source,
                    source,
                )
            policies[document.policy] = (source, document)
        self.table = LimitsTable(MappingProxyType({p: doc for p, (_, doc) in policies.items()}))
        if self.on_change is not None:
            self.on_change(self.table)
