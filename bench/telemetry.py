"""Time one full telemetry ingest of 10,000 GPUs (target: <= 250 ms of wall time).

1,250 simulated exporters of 8 GPUs each, every one on its own 127.0.0.1 port, serve pages
rendered by the exporter's own exposition code (the same labels and layout a real
``meltguard exporter`` serves, pod-attributed, about a fifth of the GPUs in a fire drill).
The pages are served by a few helper processes speaking plain HTTP/1.1 keep-alive with
pre-rendered bodies: in production each exporter runs on its own node, so the CPU the
operator's machine spends is the client's alone, and a heavyweight server here would only
measure itself. One ingest is ``ScrapeSource.read``: endpoint list -> concurrent scrape ->
parse -> validation -> pod attribution (keep the target's GPUs) -> samples.

Printed, medians over ``--runs`` ingests after warm-up (keep-alive connections open, as in
an operator that scrapes every few seconds), next to baselines measured in the same run:

* the ingest, and the first (cold) ingest that opens connections and learns every line;
* the parse alone, in samples/s, next to ``prometheus_client.parser.text_string_to_metric_families``
  on the same pages;
* fetching the same pages with meltguard's scraper and with aiohttp's client.

    python bench/telemetry.py [--exporters 1250] [--gpus-per-exporter 8] [--runs 7] [--servers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from multiprocessing.connection import Connection

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from meltguard.exporter.attribution import RoundRobinAttribution
from meltguard.exporter.devices import PodRef
from meltguard.exporter.exposition import GpuCollector
from meltguard.exporter.sampler import Sampler
from meltguard.exporter.simulated import FireDrill, SimulatedBackend
from meltguard.ingest.http_client import Scraper
from meltguard.ingest.metrics import IngestMetrics
from meltguard.ingest.reader import PageReader
from meltguard.ingest.schema import EXPORTER_SCHEMA
from meltguard.ingest.scrape import ScrapeSource
from meltguard.ingest.table import Collected

NOW = 1_750_000_000.0
NAMESPACE = "inference"


def render_pages(
    exporters: int, gpus: int, seed: int = 11
) -> tuple[list[bytes], set[tuple[str, str]]]:
    """Exporter pages as ``meltguard exporter --simulate`` renders them, and the pods they name."""
    rng = random.Random(seed)
    pages: list[bytes] = []
    pods: set[tuple[str, str]] = set()
    for number in range(exporters):
        node = f"gpu-node-{number:04d}"
        backend = SimulatedBackend(gpus, node)
        for index in range(gpus):
            if rng.random() < 0.2:
                reasons = frozenset({"hw_thermal"}) if rng.random() < 0.3 else frozenset()
                backend.apply(
                    FireDrill(
                        gpus=(index,),
                        utilization=round(rng.uniform(0.9, 1.0), 3),
                        temperature_celsius=rng.randint(84, 93),
                        throttle_reasons=reasons,
                    )
                )
            else:
                backend.apply(
                    FireDrill(
                        gpus=(index,),
                        utilization=round(rng.uniform(0.3, 0.8), 3),
                        temperature_celsius=rng.randint(50, 75),
                        memory_used_ratio=0.7,
                    )
                )
        owners = [
            PodRef(NAMESPACE, f"imagegen-worker-6d5f7c9b8-{number:04d}{i}", "worker")
            for i in range(gpus)
        ]
        pods.update((owner.namespace, owner.pod) for owner in owners)
        sampler = Sampler(backend, RoundRobinAttribution(owners))
        sampler.sample_once()
        registry = CollectorRegistry()
        registry.register(GpuCollector(partial(getattr, sampler, "snapshot"), node))
        pages.append(generate_latest(registry))
    return pages, pods


class _PageProtocol(asyncio.Protocol):
    """Answers every GET on a connection with one pre-rendered page (keep-alive)."""

    def __init__(self, response: bytes) -> None:
        self.response = response
        self.pending = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.pending += data
        while b"\r\n\r\n" in self.pending:
            _, _, self.pending = self.pending.partition(b"\r\n\r\n")
            self.transport.write(self.response)  # type: ignore[attr-defined]


def _serve(pages: list[bytes], ready: Connection) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        ports = []
        for page in pages:
            head = (
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                b"Content-Length: %d\r\n\r\n" % len(page)
            )
            server = await loop.create_server(partial(_PageProtocol, head + page), "127.0.0.1", 0)
            ports.append(server.sockets[0].getsockname()[1])
        ready.send(ports)
        await asyncio.Event().wait()

    asyncio.run(main())


def start_servers(
    pages: list[bytes], servers: int
) -> tuple[list[str], list[multiprocessing.process.BaseProcess]]:
    context = multiprocessing.get_context("fork")
    endpoints: list[str] = []
    processes: list[multiprocessing.process.BaseProcess] = []
    for share in range(servers):
        receive, send = context.Pipe(duplex=False)
        process = context.Process(target=_serve, args=(pages[share::servers], send), daemon=True)
        process.start()
        endpoints.extend(f"127.0.0.1:{port}" for port in receive.recv())
        processes.append(process)
    return endpoints, processes


async def timed_runs(
    action: Callable[[], Awaitable[object]], runs: int
) -> tuple[list[float], list[float]]:
    """Wall and CPU (this process) seconds of each run."""
    walls, cpus = [], []
    for _ in range(runs):
        wall, cpu = time.perf_counter(), time.process_time()
        await action()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return walls, cpus


def scrape_source(endpoints: list[str]) -> ScrapeSource:
    """The ``exporter`` source reading these endpoints (as if listed from exporter pods)."""

    async def list_endpoints(namespace: str, labels: Mapping[str, str], port: int) -> list[str]:
        return endpoints

    return ScrapeSource(
        EXPORTER_SCHEMA,
        namespace="meltguard-system",
        match_labels={},
        port=9400,
        list_endpoints=list_endpoints,
        metrics=IngestMetrics(CollectorRegistry()),
    )


async def measure_ingest(endpoints: list[str], pods: set[tuple[str, str]], runs: int) -> None:
    source = scrape_source(endpoints)
    try:
        cold, _ = await timed_runs(lambda: source.read(pods, NOW), 1)
        reading = await source.read(pods, NOW)
        assert not reading.errors and len(reading.samples) == len(pods), reading.errors[:3]
        warm, cpu = await timed_runs(lambda: source.read(pods, NOW), runs)
    finally:
        await source.close()
    print(
        f"ingest of {len(reading.samples):,} GPUs from {len(endpoints):,} exporters "
        f"(scrape + parse + attribution), {runs} runs:"
    )
    print(
        f"  wall median {statistics.median(warm) * 1000:7.1f} ms (min {min(warm) * 1000:.1f}, "
        f"max {max(warm) * 1000:.1f})   target <= 250 ms"
    )
    print(f"  CPU of the ingesting process, median {statistics.median(cpu) * 1000:7.1f} ms")
    print(f"  first ingest (new connections, every line new) {cold[0] * 1000:7.1f} ms")


async def measure_aiohttp_fetch(endpoints: list[str], runs: int) -> None:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=128)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def fetch(endpoint: str) -> bytes:
            async with session.get(f"http://{endpoint}/metrics") as response:
                return await response.read()

        async def fetch_all() -> None:
            await asyncio.gather(*(fetch(endpoint) for endpoint in endpoints))

        await fetch_all()
        aiohttp_wall, aiohttp_cpu = await timed_runs(fetch_all, runs)
        scraper = Scraper()
        await scraper.fetch_all(endpoints)
        ours_wall, ours_cpu = await timed_runs(lambda: scraper.fetch_all(endpoints), runs)
        await scraper.close()
    print("fetch only (no parsing), wall / CPU medians:")
    print(
        f"  meltguard Scraper {statistics.median(ours_wall) * 1000:7.1f} ms / "
        f"{statistics.median(ours_cpu) * 1000:7.1f} ms"
    )
    print(
        f"  aiohttp client    {statistics.median(aiohttp_wall) * 1000:7.1f} ms / "
        f"{statistics.median(aiohttp_cpu) * 1000:7.1f} ms"
    )


def with_new_series(page: bytes) -> bytes:
    """The page with a throttle reason starting on its first GPU (a series not seen before)."""
    up = next(line for line in page.split(b"\n") if line.startswith(b"meltguard_gpu_up{"))
    labels = up[len(b"meltguard_gpu_up{") : up.rindex(b"}")]
    return page + b"meltguard_gpu_throttled{" + labels + b',reason="sw_power_cap"} 1.0\n'


def measure_parse(pages: list[bytes], pods: set[tuple[str, str]], runs: int) -> None:
    texts = [page.decode() for page in pages]
    readers = [PageReader(EXPORTER_SCHEMA) for _ in pages]

    def ours() -> int:
        tables = [reader.read(page) for reader, page in zip(readers, pages, strict=True)]
        return len(Collected.merge(EXPORTER_SCHEMA, tables).samples(pods, NOW))

    start = time.perf_counter()
    ours()
    cold = time.perf_counter() - start
    warm = []
    for _ in range(runs):
        start = time.perf_counter()
        ours()
        warm.append(time.perf_counter() - start)
    changed = [with_new_series(page) for page in pages]
    start = time.perf_counter()
    tables = [reader.read(page) for reader, page in zip(readers, changed, strict=True)]
    Collected.merge(EXPORTER_SCHEMA, tables).samples(pods, NOW)
    with_new_line = time.perf_counter() - start
    samples = sum(1 for text in texts for line in text.split("\n") if line and line[0] != "#")
    start = time.perf_counter()
    reference = sum(len(f.samples) for text in texts for f in text_string_to_metric_families(text))
    theirs = time.perf_counter() - start
    assert reference == samples, (reference, samples)
    print(f"parse rate over {samples:,} samples ({sum(map(len, pages)) / 1e6:.1f} MB):")
    rate = samples / statistics.median(warm)
    print(
        f"  meltguard PageReader + checks + samples {rate:12,.0f} samples/s "
        f"(first read of each page: {samples / cold:,.0f}/s; every page with one new "
        f"series: {samples / with_new_line:,.0f}/s)"
    )
    print(
        f"  prometheus_client parser only           {samples / theirs:12,.0f} samples/s "
        "(text_string_to_metric_families)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--exporters", type=int, default=1250)
    parser.add_argument("--gpus-per-exporter", type=int, default=8)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--servers", type=int, default=2, help="helper processes serving the pages")
    args = parser.parse_args()
    # figures depend on the interpreter's build (PGO/LTO or not) as much as on the machine
    print(f"Python {platform.python_version()} at {sys.executable}, {os.cpu_count()} CPUs")
    pages, pods = render_pages(args.exporters, args.gpus_per_exporter)
    endpoints, processes = start_servers(pages, args.servers)
    try:
        asyncio.run(measure_ingest(endpoints, pods, args.runs))
        asyncio.run(measure_aiohttp_fetch(endpoints, args.runs))
        measure_parse(pages, pods, args.runs)
    finally:
        for process in processes:
            process.terminate()


if __name__ == "__main__":
    main()
