"""Redis store: counters shared by every replica, atomic through Lua, durable with AOF/RDB.

One server or a Redis Cluster (see :mod:`meltguard.quota.redis_clients`). Consume and
refund are each one Lua script (one round trip, atomic on the server): nothing is read in
Python and written back. Keys are ``meltguard:quota:v2:`` followed by the percent-encoded
parts joined with ``:``, so no subject string can reach another key. Every key of one
subject carries the hash tag ``{<policy>:<tier>:<subject>}``, so in a cluster they share a
slot and each script touches one node only (a script whose keys span slots is refused).

- counter ``...:c:{<policy>:<tier>:<subject>}:<windowSeconds>:<windowIndex>``: units used,
  expiring a little after its window ends;
- attempts ``...:a:{<policy>:<tier>:<subject>}:<windowSeconds>:<windowIndex>``: units asked
  for, admitted or refused (the demand signal), expiring with the counter;
- request ``...:r:{<policy>:<tier>:<subject>}:<requestId>``: a hash of the first answer
  (``allowed``, ``cost``, ``window``, ``refunded``, ``caller``: who consumed, the only one
  who may refund), kept for one window length.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from meltguard.core.windows import Window
from meltguard.quota.redis_clients import STORE_ERRORS, RedisClient, SlotMap, open_client
from meltguard.quota.store import (
    ConsumeOutcome,
    Consumption,
    RefundOutcome,
    StoreUnavailable,
    Subject,
)

KEY_PREFIX = "meltguard:quota:v2"
#: Counters outlive their window by this much, so a clock skew between replicas and Redis
#: never drops a counter that a replica still considers current.
EXPIRY_GRACE_SECONDS = 60

# KEYS[1] counter, KEYS[2] attempts, KEYS[3] request record (optional)
# ARGV: cost, limit, counter ttl, request ttl, window tag, deadline (microseconds, Redis's
# clock), caller  ->  {allowed, used, replayed, attempts}, allowed -1 when run past the
# deadline (no change)
CONSUME_LUA = """
local clock = redis.call('TIME')
if tonumber(clock[1]) * 1000000 + tonumber(clock[2]) > tonumber(ARGV[6]) then
  return {-1, 0, 0, 0}
end
local cost = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local request = KEYS[3]
if request then
  local prior = redis.call('HGET', request, 'allowed')
  if prior then
    return {tonumber(prior), tonumber(redis.call('GET', KEYS[1]) or '0'), 1,
      tonumber(redis.call('GET', KEYS[2]) or '0')}
  end
end
local attempts = redis.call('INCRBY', KEYS[2], cost)
redis.call('EXPIRE', KEYS[2], ARGV[3])
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local allowed = 0
if used + cost <= limit then
  used = redis.call('INCRBY', KEYS[1], cost)
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  allowed = 1
end
if request then
  redis.call('HSET', request, 'allowed', allowed, 'cost', cost, 'window', ARGV[5], 'refunded', 0,
    'caller', ARGV[7])
  redis.call('EXPIRE', request, ARGV[4])
end
return {allowed, used, 0, attempts}
"""

# KEYS[1] counter of the current window, KEYS[2] request record
# ARGV: current window tag, caller  ->  {reason, used}
REFUND_LUA = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local record = redis.call('HMGET', KEYS[2], 'allowed', 'cost', 'window', 'refunded', 'caller')
if not record[1] then return {'unknown-request', used} end
if record[1] ~= '1' then return {'not-consumed', used} end
if (record[5] or '') ~= ARGV[2] then return {'other-caller', used} end
if record[4] == '1' then return {'already-refunded', used} end
redis.call('HSET', KEYS[2], 'refunded', 1)
if record[3] ~= ARGV[1] then return {'window-ended', used} end
local give = math.min(tonumber(record[2]), used)
if give > 0 then used = redis.call('DECRBY', KEYS[1], give) end
return {'refunded', used}
"""


def redacted_url(url: str) -> str:
    """``url`` fit for logs and errors: its user, password and query values as ``***``
    (redis-py also takes a password from ``?password=``)."""
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    netloc = f"***@{host}" if at and userinfo else parts.netloc
    query = parts.query
    if query:
        query = urlencode([(name, "***") for name, _ in parse_qsl(query)], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


@functools.lru_cache(maxsize=65536)
def _quoted(part: str | int) -> str:
    """A key part percent-encoded (remembered: the same policies, tiers and busy subjects
    come back request after request, and quote() is slow)."""
    return quote(str(part), safe="")


@functools.lru_cache(maxsize=65536)
def hash_tag(who: Subject) -> str:
    """``{<policy>:<tier>:<subject>}``: the part of every key of ``who`` that Redis Cluster
    hashes to a slot (percent-encoding leaves no brace inside)."""
    return "{" + ":".join(map(_quoted, who)) + "}"


def _key(kind: str, who: Subject, *parts: str | int) -> str:
    return ":".join([KEY_PREFIX, kind, hash_tag(who), *map(_quoted, parts)])


def counter_key(who: Subject, window: Window) -> str:
    """Redis key of the counter of ``who`` in ``window``."""
    return _key("c", who, window.seconds, window.number)


def attempts_key(who: Subject, window: Window) -> str:
    """Redis key of the units ``who`` asked for in ``window``, admitted or refused."""
    return _key("a", who, window.seconds, window.number)


def request_key(who: Subject, request_id: str) -> str:
    """Redis key of the answer given to ``request_id`` of ``who``."""
    return _key("r", who, request_id)


ScriptArgs = list[int | str]
_Call = tuple[AsyncScript, list[str], ScriptArgs, "asyncio.Future[Any]"]


@dataclass(slots=True)
class _Lane:
    """The calls bound for one server: those waiting for a batch, and the batches out."""

    pending: list[_Call] = field(default_factory=list)
    flush_scheduled: bool = False
    sending: set[asyncio.Task[None]] = field(default_factory=set)


class ScriptPipeliner:
    """Sends script calls in batches, each batch one pipeline.

    Under load many requests are deciding at once; each still awaits its own answer and each
    script still runs alone and atomically on the server, but a batch costs one round trip
    and far less client work per decision. At most ``max_in_flight`` batches are out at
    once: calls made meanwhile wait for the next batch, so batches grow with the load
    instead of the number of round trips. A batch that meets NOSCRIPT (Redis restarted, or
    a replica was promoted, and lost its script cache) ran nothing of those calls, so the
    scripts are loaded and the batch is sent once more.

    Calls are batched per server, as the client's slot map places a call's first key (in a cluster,
    the master of its slot): a failing master then fails only its own calls, and the
    others' batches are neither held back by it nor answered with its error. After a
    failed batch the slot map is reloaded, which finds a promoted replica.
    """

    def __init__(
        self,
        client: RedisClient,
        max_batch: int = 256,
        max_in_flight: int = 2,
    ) -> None:
        self._client = client
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._slot_map = SlotMap(client)
        self._lanes: dict[Hashable, _Lane] = {}

    async def call(self, script: AsyncScript, keys: list[str], args: ScriptArgs) -> Any:
        """Run ``script`` with ``keys``/``args`` in the next batch and return its result."""
        loop = asyncio.get_running_loop()
        lane = self._lanes.setdefault(self._slot_map.server_of(keys[0]), _Lane())
        if not lane.flush_scheduled:
            lane.flush_scheduled = True
            loop.call_soon(self._flush, lane)
        future: asyncio.Future[Any] = loop.create_future()
        lane.pending.append((script, keys, args, future))
        return await future

    def _flush(self, lane: _Lane) -> None:
        """Send what is pending while fewer than ``max_in_flight`` batches are out."""
        lane.flush_scheduled = False
        while lane.pending and len(lane.sending) < self._max_in_flight:
            batch = lane.pending[: self._max_batch]
            del lane.pending[: self._max_batch]
            task = asyncio.create_task(self._send(batch))
            lane.sending.add(task)
            task.add_done_callback(functools.partial(self._sent, lane))

    def _sent(self, lane: _Lane, task: asyncio.Task[None]) -> None:
        lane.sending.discard(task)
        self._flush(lane)

    async def _send(self, batch: list[_Call]) -> None:
        try:
            results = await self._execute(batch)
        except STORE_ERRORS as error:
            results = [error] * len(batch)
        failed = False
        for (*_, future), result in zip(batch, results, strict=True):
            failed = failed or isinstance(result, STORE_ERRORS)
            if future.done():  # the request was cancelled meanwhile
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
        if failed:
            await self._slot_map.reload()

    async def _execute(self, batch: list[_Call], reload_scripts: bool = True) -> list[Any]:
        async with self._client.pipeline(transaction=False) as pipe:
            for script, keys, args, _ in batch:
                # execute_command, not evalsha(): the cluster pipeline refuses evalsha() in
                # case a script's keys span slots, which ours never do (one hash tag); it
                # routes EVALSHA by its keys like any keyed command
                pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            results: list[Any] = await pipe.execute(raise_on_error=False)
        if reload_scripts and any(isinstance(result, NoScriptError) for result in results):
            for script in {call[0] for call in batch}:
                await self._client.script_load(script.script)
            return await self._execute(batch, reload_scripts=False)
        return results


class RedisStore:
    """A :class:`~meltguard.quota.store.QuotaStore` in Redis (``redis://host:port/db``) or a
    Redis Cluster (``redis-cluster://host:port,host:port``).

    Each operation waits at most ``timeout_seconds`` to connect and to be answered, so an
    unreachable Redis costs a request about that, then --on-store-error decides. A broken
    connection (a Redis restart) is retried once at once on a fresh one; a timeout is not
    retried, since the script may have run: retrying it could count twice (a retry of a
    request that carries a ``requestId`` is always safe). At most ``max_connections`` are
    opened; a burst beyond that queues for a free one, up to ``queue_seconds`` (a queue is
    load, not a store failure). In a cluster, the connections are per node and a burst
    beyond them is refused at once, and a failover is a failure like any other until the
    client finds the promoted replica (it reloads the slot map after a failed connection).
    """

    def __init__(
        self,
        url: str,
        timeout_seconds: float = 1.0,
        max_connections: int = 64,
        queue_seconds: float = 10.0,
    ) -> None:
        self._timeout = timeout_seconds
        #: Redis's clock minus ours, in seconds; measured by ping() and before the first consume
        self._clock_offset: float | None = None
        self._clock_lock = asyncio.Lock()
        self._client = open_client(
            url,
            timeout_seconds=timeout_seconds,
            max_connections=max_connections,
            queue_seconds=queue_seconds,
        )
        self._consume = self._client.register_script(CONSUME_LUA)
        self._refund = self._client.register_script(REFUND_LUA)
        self._pipeliner = ScriptPipeliner(self._client)

    async def consume(self, take: Consumption) -> ConsumeOutcome:
        """Run the consume script, answering within ``timeout_seconds`` whatever Redis does.

        A call that times out must not be charged later (Redis stalled, then ran the queued
        script): the script refuses to change anything past a deadline on Redis's own clock,
        half the timeout after the call starts, leaving the other half for the answer. (In
        a cluster the offset is measured on one node and the deadline checked on another:
        their clocks must agree to well within that half, as NTP keeps them.)
        """
        try:
            async with asyncio.timeout(self._timeout):
                return await self._consume_before_deadline(take)
        except TimeoutError:
            message = f"redis did not answer within {self._timeout:g} s; nothing was charged"
            raise StoreUnavailable(message) from None

    async def _consume_before_deadline(self, take: Consumption) -> ConsumeOutcome:
        started = time.time()
        if self._clock_offset is None:
            async with self._clock_lock:  # one measurement for a burst of first calls
                if self._clock_offset is None:
                    await self.ping()
        assert self._clock_offset is not None
        deadline = started + self._clock_offset + self._timeout / 2
        keys = [counter_key(take.who, take.window), attempts_key(take.who, take.window)]
        if take.request_id is not None:
            keys.append(request_key(take.who, take.request_id))
        counter_ttl = math.ceil(take.window.end - take.now) + EXPIRY_GRACE_SECONDS
        args: ScriptArgs = [
            take.cost,
            take.limit,
            counter_ttl,
            take.window.seconds,
            take.window.tag,
            int(deadline * 1_000_000),
            take.caller,
        ]
        try:
            allowed, used, replayed, attempts = await self._pipeliner.call(
                self._consume, keys, args
            )
        except STORE_ERRORS as error:
            raise StoreUnavailable(f"redis consume failed: {error}") from error
        if allowed == -1:
            raise StoreUnavailable("redis ran the consume past its deadline; nothing was charged")
        return ConsumeOutcome(bool(allowed), int(used), int(attempts), bool(replayed))

    async def refund(
        self, who: Subject, window: Window, request_id: str, now: float, *, caller: str = ""
    ) -> RefundOutcome:
        keys = [counter_key(who, window), request_key(who, request_id)]
        try:
            reason, used = await self._pipeliner.call(self._refund, keys, [window.tag, caller])
        except STORE_ERRORS as error:
            raise StoreUnavailable(f"redis refund failed: {error}") from error
        return RefundOutcome(reason, int(used))

    async def used(self, who: Subject, window: Window) -> int:
        try:
            value = await self._client.get(counter_key(who, window))
        except STORE_ERRORS as error:
            raise StoreUnavailable(f"redis read failed: {error}") from error
        return int(value or 0)

    async def ping(self) -> None:
        """Ask Redis the time: proof that it answers, and its clock for the deadlines."""
        try:
            asked = time.time()
            seconds, microseconds = await self._client.time()
        except STORE_ERRORS as error:
            raise StoreUnavailable(f"redis ping failed: {error}") from error
        answered = time.time()
        self._clock_offset = seconds + microseconds / 1e6 - (asked + answered) / 2

    async def close(self) -> None:
        await self._client.aclose()
