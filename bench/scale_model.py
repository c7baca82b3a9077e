"""Size meltguard for 1k, 10k and 100k GPUs and for 3.5k and 35k quota decisions/s, from
per-unit costs measured in this run; the arithmetic is bench/sizing.py's (tested in
tests/bench). docs/scaling.md quotes the output.

Measured here, each as a median where it is repeated:

* quota: ``POST /v1/consume`` from bench/quota.py's client, spread over ``--quota-replicas``
  quota-server processes sharing ``--quota-store`` (by default a six-node Redis Cluster of
  bench/quota_stores.py), ``--quota-requests`` at a time; the CPU time of the servers
  (``/proc``) and of the Redis masters (``INFO cpu``) divided by the decisions;
* telemetry: ``--exporters`` pages of ``--gpus-per-exporter`` GPUs, rendered and served as in
  bench/telemetry.py, read by the ``exporter`` source (this process's CPU per GPU read); a
  real ``prometheus`` scraping them every second (its CPU per sample appended and its resident
  memory per series, from its own /metrics), and read back by the ``prometheus`` source;
* the operator: bench/operator_costs.py (the real operator process on the kmock API server),
  or the figures of a JSON file (``--operator-figures``: the keys of :data:`OPERATOR_KEYS`,
  e.g. from bench/operator_scale.py's real-cluster runs).

What one process may use (cores, memory, headroom) and the fleet's shape (GPUs per policy,
read interval) are assumptions: flags, printed with the plans.

    .venv/bin/python bench/scale_model.py [--exporters 250] [--gpus-per-exporter 8]
        [--quota-store redis-cluster] [--quota-replicas 3] [--quota-requests 5000] [--runs 5]
        [--operator-figures FILE] [--gpus-per-policy 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from pathlib import Path

from prometheus_client import CollectorRegistry

from meltguard.ingest.metrics import IngestMetrics
from meltguard.ingest.prometheus import PrometheusSource

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import procstat, quota, quota_stores, sizing, telemetry

FLEETS = (1_000, 10_000, 100_000)
DECISION_RATES = (3_500.0, 35_000.0)
#: What --operator-figures must hold, mapped to the model's field names.
OPERATOR_KEYS = {
    "cpu_ms_per_policy_tick": "operator_cpu_ms_per_tick",
    "api_calls_per_policy_tick": "api_calls_per_tick",
    "mib_per_policy": "operator_mib_per_policy",
    "mib_per_gpu": "operator_mib_per_gpu",
    "base_mib": "operator_base_mib",
}
PROMETHEUS_SETTLE_SECONDS = 3.0
INGEST_WINDOW_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Figure:
    """One measured per-unit cost and how it was measured."""

    value: float
    how: str


# ---- quota ---------------------------------------------------------------------------------

def measure_quota(store: str, *, replicas: int, requests: int, runs: int,
                  scratch: str) -> dict[str, Figure]:
    """CPU per decision of ``replicas`` quota-server processes sharing ``store`` (their sum),
    and of the store's Redis masters."""
    with quota_stores.store_url(store, scratch) as url:
        servers = [quota.start_server("quota", url) for _ in range(replicas)]
        opener = quota.spread([port for _, port in servers])
        pids = [process.pid or 0 for process, _ in servers]
        spent: dict[str, list[float]] = {"server": [], "redis": []}
        try:
            asyncio.run(quota.closed_loop(opener, min(1000, requests), 16))  # warm up
            for _ in range(runs):
                server, redis = server_cpu(pids), quota_stores.redis_cpu_seconds(url)
                asyncio.run(quota.closed_loop(opener, requests, 16))
                spent["server"].append((server_cpu(pids) - server) / requests * 1e6)
                spent["redis"].append(
                    (quota_stores.redis_cpu_seconds(url) - redis) / requests * 1e6)
        finally:
            for process, _ in servers:
                process.kill()
    how = (f"{requests} POST /v1/consume x {runs} over {replicas} quota-server processes on "
           f"--store {store}, 16 connections")
    return {"quota_cpu_us_per_decision": Figure(statistics.median(spent["server"]),
                                                f"the processes' /proc CPU; {how}"),
            "redis_cpu_us_per_decision": Figure(statistics.median(spent["redis"]),
                                                f"Redis masters' INFO cpu; {how}")}


def server_cpu(pids: list[int]) -> float:
    return sum(procstat.cpu_seconds(pid) for pid in pids)


# ---- telemetry -----------------------------------------------------------------------------

def metric_sum(page: str, name: str) -> float:
    """The sum of every series of ``name`` on a Prometheus text page."""
    total = 0.0
    for line in page.splitlines():
        if line.startswith(name) and line[len(name):len(name) + 1] in ("{", " "):
            total += float(line.rsplit(" ", 1)[-1])
    return total


class Prometheus:
    """A real ``prometheus`` scraping the targets of a file every second, honouring the
    exporters' own namespace/pod labels (as the chart's scrape job does)."""

    def __init__(self, binary: str, scratch: Path) -> None:
        self.targets = scratch / "targets.json"
        self.targets.write_text("[]")
        config = scratch / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, scrape_timeout: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: meltguard-exporter\n"
            "    honor_labels: true\n"
            f"    file_sd_configs: [{{files: ['{self.targets}']}}]\n")
        port = quota_stores.free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={scratch / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.wait(lambda: self.get("/-/ready") is not None, "ready")

    def get(self, path: str) -> str | None:
        try:
            with urllib.request.urlopen(f"{self.url}{path}", timeout=5) as answer:
                return str(answer.read().decode())
        except OSError:
            return None

    def metric(self, name: str) -> float:
        return metric_sum(self.get("/metrics") or "", name)

    def count(self, query: str) -> int:
        answer = self.get(f"/api/v1/query?{urllib.parse.urlencode({'query': query})}")
        result = json.loads(answer)["data"]["result"] if answer else []
        return int(float(result[0]["value"][1])) if result else 0

    def wait(self, check: Callable[[], bool], what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"prometheus: not {what} within {timeout} s")
            time.sleep(0.3)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)


async def cpu_per_gpu_read(read: Callable[[], Awaitable[object]], gpus: int,
                           runs: int) -> float:
    """This process's CPU microseconds per GPU of one read (median of ``runs`` after one)."""
    await read()
    _, cpus = await telemetry.timed_runs(read, runs)
    return statistics.median(cpus) / gpus * 1e6


def measure_telemetry(exporters: int, per_exporter: int, *, runs: int,
                      scratch: Path) -> dict[str, Figure]:
    """Series per GPU, each source's read cost, and Prometheus's ingest CPU and memory."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise SystemExit("prometheus is not installed (apt-get install prometheus)")
    pages, pods = telemetry.render_pages(exporters, per_exporter)
    gpus = exporters * per_exporter
    series = sum(line[:1] not in (b"#", b"") for page in pages for line in page.split(b"\n"))
    endpoints, servers = telemetry.start_servers(pages, 2)
    prometheus = Prometheus(binary, scratch)
    try:
        direct = asyncio.run(read_directly(endpoints, pods, gpus=gpus, runs=runs))
        time.sleep(PROMETHEUS_SETTLE_SECONDS)
        empty_rss, empty_series = (prometheus.metric("process_resident_memory_bytes"),
                                   prometheus.metric("prometheus_tsdb_head_series"))
        prometheus.targets.write_text(json.dumps([{"targets": endpoints}]))
        prometheus.wait(lambda: prometheus.count("count(meltguard_gpu_up)") >= gpus,
                        f"scraping {gpus} GPUs")
        time.sleep(PROMETHEUS_SETTLE_SECONDS)
        cpu, appended = (prometheus.metric("process_cpu_seconds_total"),
                         prometheus.metric("prometheus_tsdb_head_samples_appended_total"))
        time.sleep(INGEST_WINDOW_SECONDS)  # nothing but scraping meanwhile
        cpu = prometheus.metric("process_cpu_seconds_total") - cpu
        appended = prometheus.metric("prometheus_tsdb_head_samples_appended_total") - appended
        held = prometheus.metric("prometheus_tsdb_head_series") - empty_series
        rss = prometheus.metric("process_resident_memory_bytes") - empty_rss
        through = asyncio.run(read_through(prometheus.url, pods, gpus=gpus, runs=runs))
    finally:
        prometheus.stop()
        for server in servers:
            server.kill()
    fleet = f"{exporters} exporter pages x {per_exporter} GPUs"
    return {
        "series_per_gpu": Figure(series / gpus, f"sample lines of the {fleet}"),
        "exporter_read_cpu_us_per_gpu": Figure(
            direct, f"ScrapeSource.read of the {fleet}, this process's CPU, {runs} reads"),
        "prometheus_read_cpu_us_per_gpu": Figure(
            through, f"PrometheusSource.read of the same GPUs from it, {runs} reads"),
        "prometheus_cpu_us_per_sample": Figure(
            cpu / max(appended, 1) * 1e6,
            f"prometheus scraping the {fleet} every 1 s for {INGEST_WINDOW_SECONDS:.0f} s: "
            "CPU / samples appended"),
        "prometheus_bytes_per_series": Figure(
            rss / max(held, 1), "its resident memory grown / head series grown, "
                                "from no target to the fleet (head chunks mmapped)"),
    }


async def read_directly(endpoints: list[str], pods: set[tuple[str, str]], *, gpus: int,
                        runs: int) -> float:
    source = telemetry.scrape_source(endpoints)
    try:
        reading = await source.read(pods, telemetry.NOW)
        if len(reading.samples) != gpus:
            raise RuntimeError(f"exporter source read {len(reading.samples)} of {gpus} GPUs")
        return await cpu_per_gpu_read(lambda: source.read(pods, telemetry.NOW), gpus, runs)
    finally:
        await source.close()


async def read_through(url: str, pods: set[tuple[str, str]], *, gpus: int,
                       runs: int) -> float:
    source = PrometheusSource(url, metrics=IngestMetrics(CollectorRegistry()))
    try:
        reading = await source.read(pods, time.time())
        if len(reading.samples) != gpus:
            raise RuntimeError(f"prometheus source read {len(reading.samples)} of {gpus} GPUs")
        return await cpu_per_gpu_read(lambda: source.read(pods, time.time()), gpus, runs)
    finally:
        await source.close()


# ---- the operator --------------------------------------------------------------------------

def operator_figures(path: Path | None) -> dict[str, Figure]:
    """From a JSON file, or measured now by bench/operator_costs.py."""
    if path is not None:
        data = json.loads(path.read_text())
        missing = sorted(set(OPERATOR_KEYS) - set(data))
        if missing:
            raise SystemExit(f"{path}: missing {', '.join(missing)} (needs {list(OPERATOR_KEYS)})")
        return {field: Figure(float(data[key]), f"from {path}")
                for key, field in OPERATOR_KEYS.items()}
    from bench import operator_costs  # the kmock API server of tests/k8s: test extras

    costs = operator_costs.measure()
    runs = ", ".join(f"{run.policies}x{run.gpus} GPU: {run.ticks} ticks, "
                     f"{run.requests} requests, {run.rss_mib:.0f} MiB" for run in costs.runs)
    how = f"meltguard operator on the kmock API server ({runs})"
    return {"operator_cpu_ms_per_tick": Figure(costs.cpu_ms_per_tick, how),
            "api_calls_per_tick": Figure(costs.api_calls_per_tick, how),
            "operator_mib_per_policy": Figure(costs.mib_per_policy, "RSS slope over policies"),
            "operator_mib_per_gpu": Figure(costs.mib_per_gpu, "RSS slope over GPUs"),
            "operator_base_mib": Figure(costs.base_mib, "RSS less policies and GPUs")}


# ---- report --------------------------------------------------------------------------------

def report(figures: dict[str, Figure], budget: sizing.Budget) -> None:
    costs = sizing.UnitCosts(**{name: figure.value for name, figure in figures.items()})
    print("per-unit costs measured in this run:")
    for name, figure in figures.items():
        print(f"  {name:<32}{figure.value:>12.4g}   {figure.how}")
    print("assumptions: " + ", ".join(f"{f.name}={getattr(budget, f.name)}"
                                      for f in fields(budget)))
    print(f"\n{'GPUs':>8}{'policies':>10}{'source':>12}{'op shards':>11}{'op replicas':>13}"
          f"{'API req/s':>11}{'samples/s':>12}{'Prom shards':>13}")
    for gpus in FLEETS:
        plan = sizing.plan_fleet(gpus, costs, budget)
        print(f"{plan.gpus:>8,}{plan.policies:>10,}{plan.source:>12}{plan.operator_shards:>11}"
              f"{plan.operator_replicas:>13}{plan.api_requests_per_second:>11,.0f}"
              f"{plan.samples_per_second:>12,.0f}{plan.prometheus_shards:>13}")
    limit = sizing.exporter_source_limit(costs, budget)
    print(f"the exporter source is kept up to {limit:,} GPUs; past that, prometheus")
    print(f"\n{'decisions/s':>12}{'quota replicas':>16}{'Redis masters':>15}{'Redis nodes':>13}")
    for rate in DECISION_RATES:
        quota_plan = sizing.plan_quota(rate, costs, budget)
        print(f"{rate:>12,.0f}{quota_plan.quota_replicas:>16}{quota_plan.redis_masters:>15}"
              f"{quota_plan.redis_nodes:>13}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exporters", type=int, default=250)
    parser.add_argument("--gpus-per-exporter", type=int, default=8)
    parser.add_argument("--quota-store", default=quota_stores.OWN_CLUSTER,
                        help="a --store URL, or redis-cluster: six nodes started here "
                             "(default: %(default)s)")
    parser.add_argument("--quota-replicas", type=int, default=3)
    parser.add_argument("--quota-requests", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=5, help="repeats of each timed figure")
    parser.add_argument("--operator-figures", type=Path, default=None, metavar="FILE")
    defaults = sizing.Budget()
    for field in fields(sizing.Budget):
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=type(field.default),
                            default=getattr(defaults, field.name))
    args = parser.parse_args()
    budget = sizing.Budget(**{field.name: getattr(args, field.name)
                              for field in fields(sizing.Budget)})
    with tempfile.TemporaryDirectory() as scratch:
        figures = measure_quota(args.quota_store, replicas=args.quota_replicas,
                                requests=args.quota_requests, runs=args.runs, scratch=scratch)
        figures |= measure_telemetry(args.exporters, args.gpus_per_exporter, runs=args.runs,
                                     scratch=Path(scratch))
    figures |= operator_figures(args.operator_figures)
    report(figures, budget)
    return 0


if __name__ == "__main__":
    sys.exit(main())
