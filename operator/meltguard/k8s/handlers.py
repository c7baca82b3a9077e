"""The kopf side: login, settings, the change handlers and the per-policy daemon.

Each policy gets a kopf daemon rather than a timer because the tick period is per object
(``spec.intervalSeconds``, read afresh every tick, so a change applies at the next tick) and
kopf timers have one interval fixed at registration; the daemon also keeps its own backoff
on API errors without kopf re-running it, and can be woken at once when the spec changes.

The change handlers (create/update/resume) only validate: an invalid spec gets
``Ready=False`` naming the fields, a Warning Event, and no action; a valid one wakes the
daemon so the new spec is reconciled now rather than at the next tick.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import kopf
from lightkube.config.kubeconfig import SingleConfig

from meltguard.api.models import PolicySpec
from meltguard.api.validation import PolicyInvalid, parse_spec
from meltguard.api.vocabulary import GROUP, PLURAL, VERSION
from meltguard.core.decide import EventNote
from meltguard.ingest.demand import DemandReaders
from meltguard.ingest.source import ListEndpoints
from meltguard.k8s.act import patch_status
from meltguard.k8s.client import ApiError, Kube, kopf_connection, load_config
from meltguard.k8s.metrics import OperatorMetrics
from meltguard.k8s.reconcile import (
    Reconciler,
    invalid_message,
    not_ready_status,
    reconcile,
)
from meltguard.k8s.telemetry import TelemetrySources
from meltguard.k8s.world import ClusterView

ANNOTATION_PREFIX = GROUP
FINALIZER = f"{GROUP}/finalizer"
#: How often an invalid spec is looked at again: the model's default tick.
DEFAULT_INTERVAL_SECONDS = float(PolicySpec.model_fields["interval_seconds"].default)
#: How long a stopping policy loop may take to finish its tick, then to react to cancellation.
DAEMON_STOP_GRACE_SECONDS = 10.0
#: Waits after consecutive failed ticks (API errors), in seconds; the last one repeats.
ERROR_BACKOFF_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
#: How long a peering record stays valid without renewal (kopf renews it 5-10 s earlier, at
#: least every second): a standby takes over this long after the active operator died.
PEERING_LIFETIME_SECONDS = 10

KopfLogger = logging.Logger | logging.LoggerAdapter[Any]
Credentials = Callable[[], SingleConfig]
TelemetryFactory = Callable[[ListEndpoints], TelemetrySources]


def watches_patterns(namespaces: Collection[str]) -> bool:
    """Whether a namespace is a glob (``team-*``): kopf then scans namespaces and CRDs as
    they come and go, which needs list/watch on both (the chart's RBAC does not grant it:
    its Roles are per named namespace). Without patterns kopf serves what it finds at start."""
    return any(char in namespace for namespace in namespaces for char in "*?[")


def configure_settings(settings: kopf.OperatorSettings, namespaces: Collection[str] = ()) -> None:
    """meltguard's own annotation prefix, finalizer, event levels and peering for kopf;
    scanning only for namespace patterns."""
    settings.scanning.disabled = not watches_patterns(namespaces)
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration")
    settings.posting.level = logging.WARNING  # only warnings of kopf's log become Events
    settings.peering.lifetime = PEERING_LIFETIME_SECONDS
    # A stopping policy loop exits within milliseconds (it only closes its telemetry source);
    # wait for that instead of re-checking after the whole grace period.
    settings.background.instant_exit_timeout = 1.0


def parsed_spec(policy: Mapping[str, Any]) -> PolicySpec:
    """The policy's spec, parsed (:class:`PolicyInvalid` when bad)."""
    return parse_spec(policy.get("spec"))


def interval_of(policy: Mapping[str, Any],
                spec_of: Callable[[Mapping[str, Any]], PolicySpec] = parsed_spec) -> float:
    """``spec.intervalSeconds`` of a valid policy (``spec_of`` parses, or remembers, its spec);
    an invalid one (reported, never acted on) is looked at again at the default pace."""
    try:
        return float(spec_of(policy).interval_seconds)
    except PolicyInvalid:
        return DEFAULT_INTERVAL_SECONDS


def post_event(policy: Mapping[str, Any], note: EventNote) -> None:
    """Queue an Event on the policy through kopf's poster."""
    body = kopf.Body(cast(kopf.RawBody, dict(policy)))
    kopf.event(body, type=note.type, reason=note.reason, message=note.message)


@dataclass
class Runtime:
    """What the handlers share: the API client (after login), the watch caches, the
    telemetry sources, the reconciler and the daemons' wake-ups.

    ``credentials`` is read at every kopf login (the first, and again after a 401); the
    client is built from the first and refreshes its own credentials from then on.
    """

    telemetry: TelemetryFactory
    metrics: OperatorMetrics
    credentials: Credentials = load_config
    client: Kube | None = None
    view: ClusterView | None = None
    sources: TelemetrySources | None = None
    demand: DemandReaders | None = None
    reconciler: Reconciler | None = None
    wakeups: dict[tuple[str, str], asyncio.Event] = field(default_factory=dict)

    def connect(self, config: SingleConfig) -> None:
        """Build the client (once) from the credentials kopf logs in with."""
        if self.client is None:
            self.client = Kube(config)
            self.view = ClusterView(self.client)
            self.sources = self.telemetry(self.view.list_endpoints)
            self.demand = DemandReaders(self.view.list_endpoints)
            self.reconciler = Reconciler(self.client, self.view, self.sources.read,
                                         self.demand.read, post_event, self.metrics)

    def wakeup(self, namespace: str, name: str) -> asyncio.Event:
        """The event that wakes one policy's daemon before its next tick is due."""
        return self.wakeups.setdefault((namespace, name), asyncio.Event())

    def connected(self) -> tuple[Kube, Reconciler]:
        """The client and reconciler; kopf runs login before any handler."""
        if self.client is None or self.reconciler is None:
            raise kopf.TemporaryError("not logged in to the API server yet", delay=1)
        return self.client, self.reconciler


async def validate_policy(runtime: Runtime, body: Mapping[str, Any], namespace: str,
                          name: str, logger: KopfLogger) -> None:
    """Report an invalid spec (Ready=False, Warning Event); wake the daemon for a valid one."""
    client, reconciler = runtime.connected()
    try:
        parsed_spec(body)
    except PolicyInvalid as invalid:
        message = invalid_message(invalid)
        logger.info("%s", message)  # the Warning Event below is posted by hand, not twice
        try:
            await patch_status(client, body,
                               not_ready_status(body, "InvalidSpec", message, reconciler.clock()))
        except ApiError as error:
            raise kopf.TemporaryError(f"could not report the invalid spec: {error}",
                                      delay=2) from error
        post_event(body, EventNote("Warning", "InvalidSpec", message))
        return
    runtime.wakeup(namespace, name).set()


def until_next_tick(interval: float, now: float) -> float:
    """Seconds to the next multiple of ``interval`` since the epoch: the policies of one
    interval tick together, so that one scrape of a shared exporter serves them all."""
    return interval - now % interval


def backoff(failures: int) -> float:
    """Seconds to wait after ``failures`` consecutive failed ticks."""
    return ERROR_BACKOFF_SECONDS[min(failures, len(ERROR_BACKOFF_SECONDS) - 1)]


async def run_policy(runtime: Runtime, body: Mapping[str, Any], stopped: kopf.DaemonStopped,
                     logger: KopfLogger) -> None:
    """Tick every ``spec.intervalSeconds`` until the policy is deleted or kopf stops;
    ``body`` is kopf's live view of the policy, which its watch keeps up to date."""
    meta = body["metadata"]
    key = (namespaced(meta.get("namespace")), str(meta["name"]))
    try:
        await _tick_until_stopped(runtime, body, stopped, logger)
    finally:  # also when kopf cancels a daemon that did not stop in time
        runtime.wakeups.pop(key, None)
        runtime.metrics.forget(*key)
        if runtime.reconciler is not None:
            runtime.reconciler.forget(key)
        if runtime.sources is not None:
            await runtime.sources.forget(key)
        if runtime.demand is not None:
            await runtime.demand.forget(key)


async def _tick_until_stopped(runtime: Runtime, body: Mapping[str, Any],
                              stopped: kopf.DaemonStopped, logger: KopfLogger) -> None:
    wakeup = runtime.wakeup(body["metadata"]["namespace"], body["metadata"]["name"])
    failures = 0
    while not stopped:
        _, reconciler = runtime.connected()
        wakeup.clear()
        try:
            await reconcile(reconciler, body)
        except ApiError as error:
            delay = backoff(failures)
            failures += 1
            logger.warning("tick failed (%s); state kept in status, retrying in %.0f s",
                           error, delay)
        except Exception:  # one broken object or bug must not end this policy's loop
            delay = backoff(failures)
            failures += 1
            logger.exception("tick failed unexpectedly; state kept in status, retrying in "
                             "%.0f s", delay)
        else:
            failures = 0
            delay = until_next_tick(interval_of(body, reconciler.spec_of), reconciler.clock())
        await _sleep(stopped, wakeup, delay)


async def _sleep(stopped: kopf.DaemonStopped, wakeup: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds``, or less if the daemon is stopped or woken."""
    waits = [asyncio.ensure_future(stopped.wait()), asyncio.ensure_future(wakeup.wait())]
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()


def namespaced(namespace: str | None) -> str:
    """ImageQuotaPolicy is namespaced: kopf always passes its namespace."""
    if namespace is None:
        raise kopf.PermanentError("an ImageQuotaPolicy without a namespace")
    return namespace


def build_registry(runtime: Runtime) -> kopf.OperatorRegistry:
    """A fresh kopf registry with meltguard's handlers (one per operator run)."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    async def login(**_: Any) -> kopf.ConnectionInfo:  # async: the client's loop
        config = runtime.credentials()
        runtime.connect(config)
        return await kopf_connection(config)

    @kopf.on.cleanup(registry=registry)
    async def close(**_: Any) -> None:
        if runtime.sources is not None:
            await runtime.sources.close()
        if runtime.demand is not None:
            await runtime.demand.close()
        if runtime.view is not None:
            await runtime.view.close()
        if runtime.client is not None:
            await runtime.client.close()

    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, registry=registry)
    async def changed(body: kopf.Body, namespace: str | None, name: str,
                      logger: KopfLogger, **_: Any) -> None:
        await validate_policy(runtime, body, namespaced(namespace), name, logger)

    # On deletion or shutdown the loop is asked to stop and may finish its tick (backoff);
    # only then is it cancelled, and cancelled ones still clean up.
    @kopf.daemon(GROUP, VERSION, PLURAL, registry=registry,
                 cancellation_backoff=DAEMON_STOP_GRACE_SECONDS,
                 cancellation_timeout=DAEMON_STOP_GRACE_SECONDS)
    async def policy_loop(body: kopf.Body, stopped: kopf.DaemonStopped, logger: KopfLogger,
                          **_: Any) -> None:
        await run_policy(runtime, body, stopped, logger)

    return registry
