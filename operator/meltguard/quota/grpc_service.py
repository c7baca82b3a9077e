"""Envoy's rate limit API (``ShouldRateLimit``) over the same :class:`QuotaService` as HTTP.

A request names a domain (a policy's ``envoyDomain``, by default the policy's name) and
descriptors whose entries are ``tier``, ``subject`` and, when one domain serves several
policies, ``policy``. Each descriptor is one consume of ``hits_addend`` units (the
descriptor's own addend wins over the request's; 0 or absent means 1). A descriptor that
names no published tier is answered ``OK`` and counted, as Envoy's own rate limit service
does, unless the server runs with ``--strict``, which answers ``OVER_LIMIT``.

The answer carries, per descriptor, the subject's own whole limit in its window (the tier's
limit in force may be fractional: see :meth:`QuotaTier.subject_limit`), the units left and the
time to the window's end, from which Envoy writes the ``x-ratelimit-*`` headers when its filter
enables them.

With caller tokens (``--auth-tokens``) a call must carry ``authorization: Bearer <token>`` in
its metadata (Envoy's ``grpc_service.initial_metadata``); one without a known token is answered
``UNAUTHENTICATED`` before its request is even decoded, so it touches no counter.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from pydantic import ValidationError

from meltguard.quota.auth import TokenFile, Unauthenticated
from meltguard.quota.envoy import ratelimit_pb2, rls_pb2
from meltguard.quota.limits import LimitsTable, UnknownQuota
from meltguard.quota.metrics import QuotaMetrics
from meltguard.quota.requests import ConsumeRequest
from meltguard.quota.service import QuotaAnswer, QuotaService

log = logging.getLogger(__name__)

SERVICE_NAME = "envoy.service.ratelimit.v3.RateLimitService"
SHOULD_RATE_LIMIT = f"/{SERVICE_NAME}/ShouldRateLimit"

_generated: Any = rls_pb2
RateLimitRequest: Any = _generated.RateLimitRequest
RateLimitResponse: Any = _generated.RateLimitResponse
_descriptors: Any = ratelimit_pb2
RateLimitDescriptor: Any = _descriptors.RateLimitDescriptor
OK: int = RateLimitResponse.OK
OVER_LIMIT: int = RateLimitResponse.OVER_LIMIT
#: The ``status`` label of a call refused for want of a caller token.
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED.name

#: Envoy's units, by their length in seconds: a window of exactly one of them is given as is.
UNITS: dict[int, int] = {
    1: RateLimitResponse.RateLimit.SECOND,
    60: RateLimitResponse.RateLimit.MINUTE,
    3600: RateLimitResponse.RateLimit.HOUR,
    86400: RateLimitResponse.RateLimit.DAY,
}


class Unmatched(LookupError):
    """A descriptor that names no published tier; ``reason`` is the metric's label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def domain_policies(table: LimitsTable) -> dict[str, tuple[str, ...]]:
    """Envoy domain -> the policies (``namespace/name``) that answer for it."""
    domains: dict[str, list[str]] = {}
    for policy, document in table.policies.items():
        domain = document.envoy_domain or policy.partition("/")[2]
        domains.setdefault(domain, []).append(policy)
    return {domain: tuple(sorted(policies)) for domain, policies in domains.items()}


def _pick_policy(domain: str, policies: tuple[str, ...], named: str | None) -> str:
    if named is None:
        if len(policies) == 1:
            return policies[0]
        raise Unmatched(
            "unknown-policy",
            f"domain {domain!r} serves {', '.join(policies)}: name one in entry 'policy'",
        )
    for policy in policies:
        if named in (policy, policy.partition("/")[2]):
            return policy
    raise Unmatched("unknown-policy", f"policy {named!r} is not served in domain {domain!r}")


def consume_request(
    domains: Mapping[str, tuple[str, ...]],
    domain: str,
    entries: Iterable[tuple[str, str]],
    cost: int,
) -> ConsumeRequest:
    """The consume one descriptor stands for, or :class:`Unmatched` saying why there is none."""
    policies = domains.get(domain)
    if policies is None:
        raise Unmatched("unknown-domain", f"domain {domain!r} has no published quotas")
    fields = dict(entries)
    missing = [key for key in ("tier", "subject") if key not in fields]
    if missing:
        raise Unmatched("malformed", f"descriptor lacks entry {', '.join(missing)}")
    policy = _pick_policy(domain, policies, fields.get("policy"))
    try:
        return ConsumeRequest(
            policy=policy, tier=fields["tier"], subject=fields["subject"], cost=cost
        )
    except ValidationError as error:
        first = error.errors()[0]
        raise Unmatched("malformed", f"{first['loc'][0]}: {first['msg']}") from None


def descriptor_status(answer: QuotaAnswer) -> Any:
    """One ``DescriptorStatus``: the code and, for a limited tier, the subject's limit,
    remaining and reset."""
    status = RateLimitResponse.DescriptorStatus(code=OK if answer.allowed else OVER_LIMIT)
    tier = answer.tier
    if answer.limit is None or tier.window_seconds is None:
        return status
    status.current_limit.name = tier.name
    status.current_limit.requests_per_unit = min(answer.limit, 2**32 - 1)
    status.current_limit.unit = UNITS.get(tier.window_seconds, RateLimitResponse.RateLimit.UNKNOWN)
    remaining = answer.remaining
    if remaining is not None:
        status.limit_remaining = min(remaining, 2**32 - 1)
    if answer.reset_seconds is not None:
        status.duration_until_reset.seconds = answer.reset_seconds
    return status


@dataclass
class RateLimitServicer:
    """Answers ``ShouldRateLimit`` with ``service``'s decisions."""

    service: QuotaService
    strict: bool = False

    def __post_init__(self) -> None:
        self._table: LimitsTable | None = None
        self._domains: dict[str, tuple[str, ...]] = {}

    def _current_domains(self) -> dict[str, tuple[str, ...]]:
        table = self.service.registry.table
        if table is not self._table:  # the table is replaced, never changed, on each reload
            self._table, self._domains = table, domain_policies(table)
        return self._domains

    async def should_rate_limit(self, request: Any, context: Any) -> Any:
        domains = self._current_domains()
        statuses = []
        for descriptor in request.descriptors:
            cost = (
                descriptor.hits_addend.value
                if descriptor.HasField("hits_addend")
                else request.hits_addend
            ) or 1
            statuses.append(
                await self._decide(
                    domains, request.domain, [(e.key, e.value) for e in descriptor.entries], cost
                )
            )
        over = any(status.code == OVER_LIMIT for status in statuses)
        return RateLimitResponse(overall_code=OVER_LIMIT if over else OK, statuses=statuses)

    async def _decide(
        self,
        domains: Mapping[str, tuple[str, ...]],
        domain: str,
        entries: list[tuple[str, str]],
        cost: int,
    ) -> Any:
        try:
            consume = consume_request(domains, domain, entries, cost)
            answer = await self.service.consume(consume)
        except (Unmatched, UnknownQuota) as unmatched:
            reason = (
                unmatched.reason
                if isinstance(unmatched, Unmatched)
                else f"unknown-{unmatched.field}"
            )
            self.service.metrics.envoy_unmatched.labels(reason).inc()
            log.debug("descriptor %s in domain %r: %s", entries, domain, unmatched)
            return RateLimitResponse.DescriptorStatus(code=OVER_LIMIT if self.strict else OK)
        return descriptor_status(answer)


def rate_limit_client(channel: grpc.aio.Channel) -> grpc.aio.UnaryUnaryMultiCallable:
    """``ShouldRateLimit`` as a client calls it over ``channel`` (the checks and the bench)."""
    return channel.unary_unary(
        SHOULD_RATE_LIMIT,
        request_serializer=RateLimitRequest.SerializeToString,
        response_deserializer=RateLimitResponse.FromString,
    )


def rate_limit_handler(servicer: RateLimitServicer) -> grpc.GenericRpcHandler:
    """The service's one method, for ``grpc.aio.Server.add_generic_rpc_handlers``."""
    method = grpc.unary_unary_rpc_method_handler(
        servicer.should_rate_limit,
        request_deserializer=RateLimitRequest.FromString,
        response_serializer=RateLimitResponse.SerializeToString,
    )
    return grpc.method_handlers_generic_handler(SERVICE_NAME, {"ShouldRateLimit": method})


def _refusal(message: str) -> grpc.RpcMethodHandler:
    """A handler that answers ``UNAUTHENTICATED`` and leaves the request's bytes undecoded."""

    async def refuse(request: bytes, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    return grpc.unary_unary_rpc_method_handler(refuse)


@dataclass
class CallerTokens(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc is untyped
    """Lets through only calls whose ``authorization`` metadata holds a token of ``callers``;
    the others are answered ``UNAUTHENTICATED`` and counted in ``metrics.invalid_requests``
    as the HTTP API counts its 401s, under the method's path and the status's name."""

    callers: TokenFile
    metrics: QuotaMetrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:  # no such method: UNIMPLEMENTED, as without tokens
            return handler
        metadata = handler_call_details.invocation_metadata or ()
        authorization = next((v for k, v in metadata if k == "authorization"), None)
        try:
            self.callers.authenticate(authorization)
        except Unauthenticated as problem:
            method = handler_call_details.method
            self.metrics.invalid_requests.labels(method, UNAUTHENTICATED).inc()
            log.debug("gRPC %s refused: %s", method, problem)
            return _refusal(
                f"{problem} in the authorization metadata: send authorization: Bearer <token>"
            )
        return handler


async def start_grpc_server(
    servicer: RateLimitServicer, host: str, port: int, *, callers: TokenFile | None = None
) -> grpc.aio.Server:
    """Listen on ``host:port`` (gRPC over HTTP/2, no TLS) and start answering; with
    ``callers``, only calls carrying one of their tokens."""
    interceptors = None if callers is None else [CallerTokens(callers, servicer.service.metrics)]
    server = grpc.aio.server(interceptors=interceptors)
    server.add_generic_rpc_handlers((rate_limit_handler(servicer),))
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        server.add_insecure_port(address)
    except RuntimeError as error:
        raise OSError(f"cannot listen for gRPC on {address}: {error}") from None
    await server.start()
    return server
