"""Three quota-server processes sharing a real six-node Redis Cluster on 127.0.0.1."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
import redis

from meltguard.core.windows import Window
from meltguard.quota.redis_store import (
    RedisStore,
    attempts_key,
    counter_key,
    hash_tag,
    request_key,
)
from meltguard.quota.store import Consumption, Subject

from .conftest import (
    POLICY,
    RedisServer,
    consume,
    launch_quota_server,
    peek,
    quotas_json,
    refund,
)
from .redis_cluster import APPENDFSYNC, MISSING, RedisClusterProcesses

pytestmark = [pytest.mark.slow, pytest.mark.skipif(MISSING is not None, reason=str(MISSING))]

FREE_LIMIT = 50
PLUS_LIMIT = 12
#: the free tier's limit under the steady load: reached after the failover, not before
STEADY_LIMIT = 30


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcesses]:
    """One cluster for the tests that kill nothing (each empties it first)."""
    running = RedisClusterProcesses(tmp_path_factory.mktemp("cluster"))
    try:
        running.start()
        yield running
    finally:
        running.stop()


def start_replicas(
    store_url: str, limits: Path, *extra: str, free: int = FREE_LIMIT
) -> tuple[list[subprocess.Popen[bytes]], list[str]]:
    """Three ``meltguard quota-server`` processes on ``store_url``; (processes, URLs)."""
    limits.write_text(quotas_json(free=free, free_baseline=free, plus=PLUS_LIMIT))
    started = [
        launch_quota_server("--store", store_url, "--limits", str(limits), *extra) for _ in range(3)
    ]
    return [process for process, _ in started], [url for _, url in started]


@pytest.fixture
def replicas(cluster: RedisClusterProcesses, tmp_path: Path) -> Iterator[list[str]]:
    """Three replicas on the shared cluster, emptied first; their URLs."""
    cluster.flush()
    # a decision is bounded by the store timeout, queueing included: room for 1,000
    # concurrent requests on a busy test machine
    processes, urls = start_replicas(cluster.url, tmp_path / "quotas.json", "--store-timeout", "5")
    yield urls
    for process in processes:
        process.terminate()
        process.wait(10)


async def test_200_concurrent_consumers_of_one_subject_over_three_replicas_admit_the_limit(
    replicas: list[str], http: aiohttp.ClientSession
) -> None:
    spread = itertools.cycle(replicas)
    results = await asyncio.gather(*(consume(http, next(spread)) for _ in range(200)))
    statuses = Counter(status for status, _, _ in results)
    assert statuses == {200: FREE_LIMIT, 429: 200 - FREE_LIMIT}
    for url in replicas:
        assert (await peek(http, url))["used"] == FREE_LIMIT


async def test_50_subjects_x_20_requests_over_three_replicas_each_end_at_the_limit(
    replicas: list[str], http: aiohttp.ClientSession
) -> None:
    subjects = [f"user-{n}" for n in range(50)]
    asked = [subject for _ in range(20) for subject in subjects]
    spread = itertools.cycle(replicas)
    results = await asyncio.gather(
        *(consume(http, next(spread), subject=subject, tier="plus") for subject in asked)
    )
    admitted = Counter(
        subject for subject, (status, _, _) in zip(asked, results, strict=True) if status == 200
    )
    assert admitted == dict.fromkeys(subjects, PLUS_LIMIT)
    assert {status for status, _, _ in results} == {200, 429}
    for n, subject in enumerate(subjects):
        standing = await peek(http, replicas[n % 3], subject, "plus")
        assert standing["used"] == PLUS_LIMIT


async def test_a_retry_or_refund_on_another_replica_sees_the_first_answer(
    replicas: list[str], http: aiohttp.ClientSession
) -> None:
    first, second, third = replicas
    status, body, _ = await consume(http, first, cost=2, requestId="job-1")
    assert (status, body["used"], body.get("replayed", False)) == (200, 2, False)
    status, body, _ = await consume(http, second, cost=2, requestId="job-1")
    assert (status, body["used"], body.get("replayed", False)) == (200, 2, True)
    await consume(http, third, requestId="job-2")
    refunded = await refund(http, third, "job-1")
    assert (refunded["refunded"], refunded["reason"], refunded["used"]) == (True, "refunded", 1)
    again = await refund(http, first, "job-1")
    assert (again["refunded"], again["reason"], again["used"]) == (
        False,
        "already-refunded",
        1,
    )
    status, body, _ = await consume(http, second, cost=2, requestId="job-1")
    assert (status, body["used"], body.get("replayed", False)) == (
        200,
        1,
        True,
    )  # not counted again
    assert (await peek(http, first))["used"] == 1


def test_every_key_of_a_subject_hashes_to_the_slot_of_its_tag(
    cluster: RedisClusterProcesses,
) -> None:
    """One slot per subject: the scripts never meet CROSSSLOT, whatever the names hold."""
    window = Window(86400, 20000)
    node = cluster.live_ports()[0]
    for who in (Subject("ns/p", "free", "a}{b"), Subject("p", "t{", "user:1|x")):
        keys = [counter_key(who, window), attempts_key(who, window), request_key(who, "r{1}")]
        slots = {cluster.ask(node, "CLUSTER", "KEYSLOT", key) for key in keys}
        assert slots == {cluster.ask(node, "CLUSTER", "KEYSLOT", hash_tag(who))}
    assert cluster.ask(node, "CLUSTER", "KEYSLOT", hash_tag(Subject("p", "t", "u1"))) != (
        cluster.ask(node, "CLUSTER", "KEYSLOT", hash_tag(Subject("p", "t", "u2")))
    )


@pytest.mark.parametrize("kind", ["redis", "cluster"])
async def test_the_store_counts_every_attempt_once_admitted_or_refused(
    kind: str, request: pytest.FixtureRequest
) -> None:
    now = time.time()
    window = Window(3600, int(now // 3600))
    who = Subject(POLICY, "free", "demand")
    if kind == "redis":
        single: RedisServer = request.getfixturevalue("redis_server")
        single.flush()
        url = single.url

        def ttl(key: str) -> int:
            with redis.Redis(port=single.port) as client:
                return int(client.ttl(key))
    else:
        many: RedisClusterProcesses = request.getfixturevalue("cluster")
        many.flush()
        url = many.url

        def ttl(key: str) -> int:
            seconds = many.ask(many.master_of(key), "TTL", key)
            assert isinstance(seconds, int)
            return seconds

    store = RedisStore(url, timeout_seconds=5)
    try:
        takes = [Consumption(who, window, 2, 5, f"r{n}", now) for n in range(4)]
        outcomes = [await store.consume(take) for take in takes]
        replay = await store.consume(takes[0])
        other = await store.consume(
            Consumption(Subject(POLICY, "free", "x"), window, 1, 5, None, now)
        )
    finally:
        await store.close()
    assert [(o.allowed, o.used, o.attempts) for o in outcomes] == [
        (True, 2, 2),
        (True, 4, 4),
        (False, 4, 6),
        (False, 4, 8),
    ]
    assert (replay.replayed, replay.allowed, replay.used, replay.attempts) == (True, True, 4, 8)
    assert (other.used, other.attempts) == (1, 1)
    # the attempts end with the counter: a little after the window
    assert ttl(attempts_key(who, window)) == ttl(counter_key(who, window))
    assert 0 < ttl(attempts_key(who, window)) <= window.end - now + 61


@dataclass(frozen=True)
class Answer:
    """One consume answer of the steady load, ``at`` on the monotonic clock."""

    at: float
    subject: str
    status: int
    allowed: bool
    degraded: bool


@dataclass
class SteadyLoad:
    """Consumes of the free tier at ``rate`` per second, round robin over the subjects and
    the replicas, from ``workers`` concurrent loops, each on its own schedule."""

    urls: list[str]
    subjects: list[str]
    rate: float = 180.0
    workers: int = 12
    answers: list[Answer] = field(default_factory=list)

    async def run(self, http: aiohttp.ClientSession, seconds: float) -> list[Answer]:
        started = time.monotonic()
        interval = self.workers / self.rate
        await asyncio.gather(
            *(
                self._worker(http, n, started, started + seconds, interval)
                for n in range(self.workers)
            )
        )
        return self.answers

    async def _worker(
        self, http: aiohttp.ClientSession, n: int, started: float, until: float, interval: float
    ) -> None:
        for k in itertools.count():
            due = started + (k + n / self.workers) * interval
            if due > until:
                return
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            sequence = k * self.workers + n
            subject = self.subjects[sequence % len(self.subjects)]
            url = self.urls[sequence % len(self.urls)]
            status, body, _ = await consume(http, url, subject=subject)
            self.answers.append(
                Answer(
                    time.monotonic(),
                    subject,
                    status,
                    bool(body.get("allowed")),
                    bool(body.get("degraded")),
                )
            )


def print_failover(mode: str, gap: float, answers: int, degraded: int, lost: int) -> None:
    print(
        f"\nfailover (--on-store-error {mode}): service normal again {gap:.2f} s after the "
        f"kill; {degraded} of {answers} answers degraded, all in that gap; counts lost: "
        f"{lost} (appendfsync {APPENDFSYNC}: a failover keeps what replication streamed)"
    )


@pytest.mark.parametrize("mode", ["closed", "open"])
async def test_killing_a_master_under_load_promotes_its_replica_within_10_s(
    mode: str, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    own = RedisClusterProcesses(tmp_path / "cluster")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        own.start()
        # a store timeout of 2 s: a busy test machine stalling a healthy call must not
        # pass for the failover
        processes, urls = start_replicas(
            own.url,
            tmp_path / "quotas.json",
            *("--on-store-error", mode, "--store-timeout", "2"),
            free=STEADY_LIMIT,
        )
        load = SteadyLoad(urls, [f"user-{n}" for n in range(30)])
        victim = own.master_of(hash_tag(Subject(POLICY, "free", load.subjects[0])))
        heir = own.replica_of(victim)
        affected = {
            subject
            for subject in load.subjects
            if own.master_of(hash_tag(Subject(POLICY, "free", subject))) == victim
        }
        running = asyncio.create_task(load.run(http, seconds=14))
        await asyncio.sleep(1.5)
        own.kill(victim)
        killed_at = time.monotonic()
        answers = await running
        assert own.role(heir) == "master"
        used = {s: (await peek(http, urls[0], s))["used"] for s in load.subjects}
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)
        own.stop()
    degraded = [answer for answer in answers if answer.degraded]
    gap = max((a.at for a in degraded), default=killed_at) - killed_at
    admitted = Counter(a.subject for a in answers if a.allowed and not a.degraded)
    lost = sum(max(0, admitted[s] - used[s]) for s in load.subjects)
    print_failover(mode, gap, len(answers), len(degraded), lost)
    assert degraded, "the kill was never noticed"
    assert gap <= 10
    elsewhere = sorted({a.subject for a in degraded} - affected)
    assert not elsewhere, f"degraded although their master lived: {elsewhere}"
    expected = (503, False) if mode == "closed" else (200, True)
    assert {(a.status, a.allowed) for a in degraded} == {expected}
    assert all(admitted[s] <= STEADY_LIMIT for s in load.subjects), admitted
    after_gap = [a for a in answers if a.at > killed_at + gap and a.subject in affected]
    assert after_gap, "the load ended before the affected subjects were served again"
    # the limit held after the gap, not only before it
    assert any(admitted[s] == STEADY_LIMIT for s in affected), (admitted, len(answers))
    assert lost == 0
