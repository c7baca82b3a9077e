"""Demand-aware quotas end to end on a real kube-apiserver, with real processes: the operator
reads the demand signal from a real ``meltguard quota-server`` (``spec.quotas.demand.url``),
water-fills the free tier's limit to a fraction, writes the quotas ConfigMap, and the same
quota server, following ConfigMaps, gives each subject its own whole limit.

The figures are chosen so that the limit follows from what the test feeds and reads back.
Every subject consumes its whole baseline (4) in one request, so the window's spread is flat
(``reaching`` = N, N, N, N, 0, ...) and the load a limit ``L`` admits is ``L / 4`` of the load
admitted now: the water-filled limit is ``4 x budget / admitted``, rounded down to two
decimals, where ``budget = rate x maxReplicas x fill`` and ``rate`` is the images per second
one busy GPU makes, learnt while the GPUs run at a moderate utilization. The steps:

1. the GPUs at 80 %, new subjects at a steady pace: the operator learns the rate;
2. the GPUs' memory full (phase Hot, not a steady tick: nothing more is learnt), their
   utilization still under the fill level, and a burst of new subjects: the demand grows
   but the GPUs are not saturated, so the limits stay;
3. the GPUs saturated (100 %) at maxReplicas: the operator cuts the free tier once to the
   water-filled limit (``tighten.intervalSeconds`` is long: one cut, see below).

The admitted rate the quota server reports is the units admitted over the time since its
first decision (under a minute here); once the consumption stops it only falls, so the rate
the operator read at the cut lies between the test's own reads of ``/v1/demand`` just before
the saturation and just after the cut is seen, and so does the limit.

``tighten.intervalSeconds`` is 600: the test follows one cut. (However short it is, no
second cut comes within the minute the quota server's rates span: until then they still count
admissions made under the baseline.)
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from lightkube.resources.core_v1 import ConfigMap

from meltguard.api.limits import round_limit, subject_limit, subject_share
from meltguard.core.windows import Window
from meltguard.k8s.client import Policy
from tests.k8s.harness import SimulatedExporter, free_port, policy

from .cluster import (
    Cluster,
    MeltguardProcess,
    eventually,
    operator_process,
    refusals_logged,
    remove_policies,
    start_gpu_fleet,
    stop_gpu_fleet,
)
from .conftest import RELEASE_NAMESPACE

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

NS = "demand"
POLICY = f"{NS}/imagegen"
GPUS = 2  # minReplicas = maxReplicas: scaling cannot help
BASELINE = 4
WINDOW = 86400
AIMD_LIMIT = BASELINE * 0.5  # what tighten.factor would have made of the baseline
#: melt.cool.utilizationPercent 85, melt.utilizationPercent 97: the fill level sits 85 % of
#: the way from one to the other
FILL = (85 + 0.85 * (97 - 85)) / 100
LEARNING_UTILIZATION = 0.8
STEADY_SUBJECTS_PER_SECOND = 10
STEADY_SECONDS = 8
BURST_SUBJECTS = 300
#: The test takes well under this; started closer than this to the end of the day's window,
#: it waits for the next one.
WINDOW_MARGIN_SECONDS = 120


def demand_policy(exporter_port: int, quota_url: str) -> dict[str, Any]:
    melt = {"temperatureCelsius": 85, "utilizationPercent": 97, "memoryPercent": 95,
            "sustainSeconds": 600,  # Hot, never Melting: no thermal story in this test
            "fleetFraction": 0.25,
            "cool": {"temperatureCelsius": 78, "utilizationPercent": 85, "sustainSeconds": 1}}
    quotas = {"tiers": [{"name": "free", "limit": BASELINE, "window": "24h", "floor": 0},
                        {"name": "pro", "unlimited": True}],
              "tighten": {"factor": 0.5, "intervalSeconds": 600, "graceSeconds": 0},
              "relax": {"stepPercent": 50, "intervalSeconds": 1},
              "demand": {"url": quota_url}}
    return policy(NS, "imagegen", "worker", exporter_port, minReplicas=GPUS,
                  maxReplicas=GPUS, melt=melt, quotas=quotas)


# ---- the quota server's HTTP API --------------------------------------------------------

def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return json.loads(answer.read())


def peek(url: str, subject: str) -> dict[str, Any]:
    """GET /v1/quota for ``subject`` of the free tier."""
    query = urllib.parse.urlencode({"policy": POLICY, "tier": "free", "subject": subject})
    answer: dict[str, Any] = _get(f"{url}/v1/quota?{query}")
    return answer


def served_limit(url: str, subject: str = "probe") -> Any:
    try:
        return peek(url, subject).get("limit")
    except OSError:
        return None


def consume(url: str, subject: str, cost: int) -> bool:
    """POST /v1/consume; whether it was allowed (429: refused)."""
    body = json.dumps({"policy": POLICY, "tier": "free", "subject": subject,
                       "cost": cost}).encode()
    request = urllib.request.Request(f"{url}/v1/consume", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return bool(json.loads(answer.read())["allowed"])
    except urllib.error.HTTPError as error:
        if error.code == 429:
            return False
        raise


def free_demand(url: str) -> dict[str, Any]:
    """The free tier's entry of GET /v1/demand."""
    page = _get(f"{url}/v1/demand?{urllib.parse.urlencode({'policy': POLICY})}")
    return next(tier for tier in page["tiers"] if tier["tier"] == "free")


# ---- what the operator wrote ------------------------------------------------------------

def status(cluster: Cluster) -> dict[str, Any]:
    return dict(cluster.get(Policy, "imagegen", NS).get("status") or {})


def configmap_limit(cluster: Cluster) -> Any:
    data = cluster.get(ConfigMap, "imagegen-quotas", NS).get("data") or {}
    tiers = json.loads(data["quotas.json"])["tiers"]
    return next(tier.get("limit") for tier in tiers if tier["name"] == "free")


def learnt_rate(cluster: Cluster) -> float | None:
    rate = (status(cluster).get("controller") or {}).get("imagesPerGpuSecond")
    return None if rate is None else float(rate)


def steady_load(url: str, subjects: list[str]) -> None:
    """New subjects at a steady pace, each consuming the baseline in one request."""
    started = time.monotonic()
    for index, subject in enumerate(subjects):
        assert consume(url, subject, BASELINE), f"{subject} refused at the baseline"
        time.sleep(max(0.0, started + (index + 1) / STEADY_SUBJECTS_PER_SECOND
                       - time.monotonic()))


def burst(url: str, subjects: list[str]) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        allowed = list(pool.map(lambda subject: consume(url, subject, BASELINE), subjects))
    assert all(allowed), f"{allowed.count(False)} of the burst refused at the baseline"


def drill(exporter: SimulatedExporter, **state: Any) -> None:
    asyncio.run(exporter.drill(**state))


# ---- the test ---------------------------------------------------------------------------

def test_demand_aware_cut_from_the_quota_servers_signal_to_each_subjects_limit(
        cluster: Cluster, tmp_path: Path) -> None:
    wait_out_a_closing_window()
    exporter = start_gpu_fleet(cluster, NS, "worker", GPUS)
    drill(exporter, utilization=LEARNING_UTILIZATION, temperatureCelsius=50)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    quota_log, operator_log = tmp_path / "quota-server.log", tmp_path / "operator.log"
    quota_kubeconfig = cluster.service_account_kubeconfig(RELEASE_NAMESPACE,
                                                          "meltguard-quota-server")
    operator_kubeconfig = cluster.service_account_kubeconfig(RELEASE_NAMESPACE,
                                                             "meltguard-operator")
    try:
        with MeltguardProcess(quota_kubeconfig, ["quota-server", "--host", "127.0.0.1",
                                                 "--port", str(port), "--grpc-port", "0",
                                                 "--watch-configmaps=*"], quota_log), \
                operator_process(operator_kubeconfig, operator_log, "--all-namespaces",
                                 "--peering=meltguard", "--priority=100"):
            cluster.create(demand_policy(exporter.port, url))
            eventually(lambda: served_limit(url) == BASELINE, timeout=60,
                       what="the operator's ConfigMap served by the quota server")
            steady = [f"steady-{n}" for n in range(STEADY_SUBJECTS_PER_SECOND * STEADY_SECONDS)]
            bursting = [f"burst-{n}" for n in range(BURST_SUBJECTS)]
            subjects = steady + bursting
            check_cut(cluster, exporter, url, steady=steady, bursting=bursting)
            limit = configmap_limit(cluster)
            check_served(url, subjects, limit)
            check_enforced(url, limit)
    finally:
        remove_policies(cluster, NS)
        stop_gpu_fleet(cluster, NS, "worker", exporter)
    for log in (quota_log, operator_log):
        assert refusals_logged(log.read_text()) == [], log.read_text()[-3000:]


def wait_out_a_closing_window() -> None:
    """Every figure the test checks is for one window: near midnight UTC, start after it."""
    left = Window.containing(time.time(), WINDOW).end - time.time()
    if left < WINDOW_MARGIN_SECONDS:
        time.sleep(left + 1)


def check_cut(cluster: Cluster, exporter: SimulatedExporter, url: str, *,
              steady: list[str], bursting: list[str]) -> None:
    """Learn the rate, grow the demand without learning, saturate: one water-filled cut."""
    steady_load(url, steady)
    eventually(lambda: learnt_rate(cluster), timeout=30, what="a rate learnt")

    drill(exporter, memoryUsedRatio=0.97)  # Hot: no tick teaches a rate now
    eventually(lambda: status(cluster).get("phase") == "Hot", timeout=30, what="phase Hot")
    rate = learnt_rate(cluster)
    assert rate is not None
    burst(url, bursting)
    time.sleep(2)  # two ticks that see the grown demand without saturation
    assert configmap_limit(cluster) == BASELINE, "cut before the GPUs were saturated"
    assert learnt_rate(cluster) == rate, "a rate learnt on a Hot tick"

    subjects = len(steady) + len(bursting)
    before = free_demand(url)
    assert before["reaching"] == [subjects] * BASELINE + [0] * BASELINE, before
    drill(exporter, utilization=1.0)
    limit = eventually(lambda: (value := configmap_limit(cluster)) != BASELINE and value,
                       timeout=30, what="the free tier cut once the GPUs are saturated",
                       every=0.05)
    after = free_demand(url)

    written = eventually(lambda: (now := status(cluster)).get("controller", {}).get("cutLoad")
                         and now, what="the status of the cut tick")
    controller = written["controller"]
    assert controller["imagesPerGpuSecond"] == rate, "the rate moved while saturated"
    budget = rate * GPUS * FILL
    highest = round_limit(BASELINE * budget / after["admittedPerSecond"])
    lowest = round_limit(BASELINE * budget / before["admittedPerSecond"])
    print(f"learnt {rate:.2f} images/s per GPU -> budget {budget:.1f} images/s; admitted "
          f"{before['admittedPerSecond']:.1f} .. {after['admittedPerSecond']:.1f} images/s "
          f"by {subjects} subjects; free limit {BASELINE} -> {limit} "
          f"(water-filled {lowest} .. {highest}; AIMD would give {AIMD_LIMIT:g})")
    assert math.isclose(controller["cutLoad"], budget, rel_tol=1e-9), (controller, budget)
    assert lowest <= limit <= highest, f"free limit {limit}, water-filled {lowest} .. {highest}"
    assert 0 < limit < BASELINE and limit != AIMD_LIMIT
    assert {entry["name"]: entry["limit"] for entry in controller["limits"]}["free"] == limit
    published = {tier["tier"]: tier for tier in written["quotas"]}
    assert published["free"]["limit"] == limit, published
    assert published["free"]["baseline"] == BASELINE, published


def check_served(url: str, subjects: list[str], limit: float) -> None:
    """Each subject is served its own whole limit, floor(L) or floor(L) + 1, the second for
    a share of the subjects near the fraction."""
    whole = math.floor(limit)
    eventually(lambda: all(served_limit(url, s) in (whole, whole + 1) for s in subjects[:20]),
               timeout=15, what=f"the limit {limit} in force at the quota server")
    window = Window.containing(time.time(), WINDOW).start
    served = {subject: peek(url, subject)["limit"] for subject in subjects}
    expected = {subject: subject_limit(limit, subject_share(f"{POLICY}/free", subject, window))
                for subject in subjects}
    wrong = {s: (served[s], expected[s]) for s in subjects if served[s] != expected[s]}
    assert not wrong, f"{len(wrong)} subjects served another limit (served, due): {wrong}"
    share = sum(served[s] == whole + 1 for s in subjects) / len(subjects)
    print(f"{len(subjects)} subjects served {whole} or {whole + 1}: {share:.3f} got "
          f"{whole + 1} (fraction {limit - whole:.2f})")
    # the draws are uniform: the binomial standard deviation is at most 0.5 / sqrt(380), and
    # 0.12 is 4.7 of them
    assert abs(share - (limit - whole)) < 0.12


def check_enforced(url: str, limit: float) -> None:
    """New subjects are admitted exactly their own whole limit, one image at a time."""
    window = Window.containing(time.time(), WINDOW).start
    for n in range(20):
        subject = f"late-{n}"
        due = subject_limit(limit, subject_share(f"{POLICY}/free", subject, window))
        admitted = 0
        while consume(url, subject, 1):
            admitted += 1
            assert admitted <= BASELINE, f"{subject} admitted past the baseline"
        assert admitted == due, f"{subject} admitted {admitted} images, its limit is {due}"
