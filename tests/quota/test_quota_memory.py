"""The memory store's request records are capped: a flood of request ids cannot grow it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from meltguard.core.windows import Window
from meltguard.quota.memory_store import MemoryStore
from meltguard.quota.metrics import QuotaMetrics
from meltguard.quota.store import Consumption, Subject

from .conftest import metric_total

pytestmark = pytest.mark.slow

WINDOWS = 10
IDS_PER_WINDOW = 100_000
CAP = 20_000

#: Run in a fresh interpreter, so that its RSS is the store's and nothing else's.
FLOOD = textwrap.dedent(
    """
    import asyncio, json, sys
    from meltguard.core.windows import Window
    from meltguard.quota.memory_store import MemoryStore
    from meltguard.quota.store import Consumption, Subject

    def rss_kib():
        with open("/proc/self/status") as status:
            return next(int(l.split()[1]) for l in status if l.startswith("VmRSS:"))

    async def flood(windows, ids, cap):
        forgotten = 0

        def forget():
            nonlocal forgotten
            forgotten += 1

        store = MemoryStore(max_requests=cap, on_forget=forget)
        subjects = [Subject("inference/imagegen", "free", f"user-{n}") for n in range(1000)]
        for w in range(windows):
            window = Window(60, 30_000_000 + w)
            now = window.number * 60 + 1
            for i in range(ids):  # limit 50 per user: most of these are refused
                take = Consumption(subjects[i % 1000], window, 1, 50, f"r-{w}-{i}", now)
                await store.consume(take)
            print(json.dumps({"rss": rss_kib(), "records": store.request_records(),
                              "forgotten": forgotten}), flush=True)

    asyncio.run(flood(*map(int, sys.argv[1:])))
    """
)


def test_memory_stays_flat_over_ten_windows_of_100k_distinct_request_ids() -> None:
    done = subprocess.run(
        [sys.executable, "-c", FLOOD, str(WINDOWS), str(IDS_PER_WINDOW), str(CAP)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    rounds = [json.loads(line) for line in done.stdout.splitlines()]
    for number, row in enumerate(rounds, 1):
        print(f"window {number}: RSS {row['rss'] / 1024:.1f} MiB, {row['records']} records")
    assert len(rounds) == WINDOWS
    assert max(row["records"] for row in rounds) <= CAP
    # records expire with their window; within one, all past the cap are forgotten, counted
    assert rounds[-1]["forgotten"] == WINDOWS * (IDS_PER_WINDOW - CAP)
    first, last = rounds[0]["rss"], max(row["rss"] for row in rounds)
    assert last <= first * 1.10, (first, last)


async def test_the_request_id_cap_is_reported_in_the_metrics() -> None:
    metrics = QuotaMetrics()
    store = MemoryStore(max_requests=2)
    metrics.watch_request_records(store)
    window = Window(60, 30_000_000)
    who = Subject("inference/imagegen", "free", "user-1")
    for request_id in ("a", "b", "c"):
        await store.consume(Consumption(who, window, 1, 1, request_id, window.number * 60))
    assert metric_total(metrics.registry, "meltguard_quota_request_ids") == 2
    assert metric_total(metrics.registry, "meltguard_quota_request_ids_forgotten_total") == 1
    # "a" was forgotten: its retry is a new request (refused: the limit of 1 is used)
    replay = await store.consume(Consumption(who, window, 1, 1, "a", window.number * 60))
    assert (replay.allowed, replay.replayed) == (False, False)
