"""What the operator keeps per exporter page, per GPU and per policy, measured by tracemalloc.

* per exporter page: what a :class:`~meltguard.ingest.reader.PageReader` keeps between
  scrapes to read the next page fast (line heads, label sets, the page's shape), after
  reading a page of ``--gpus`` simulated GPUs, rendered by the exporter's own code;
* per GPU: what one scrape's result keeps (a ``GpuSample`` per GPU, indexed by pod);
* per policy: what ``k8s/memory.py`` keeps (the core's pruned state, the status as last
  written, the quota document), for a policy with a full stabilization window at 1 s ticks;
  and, for comparison, the telemetry state one policy used to keep of its own before sources
  were shared: a reader per exporter page.

    .venv/bin/python bench/operator_memory.py [--gpus 200]
"""

from __future__ import annotations

import argparse
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from meltguard.api.models import ScalingSpec
from meltguard.api.state import ControllerState
from meltguard.core.replicas import behavior_of, remember_recommendation
from meltguard.ingest.reader import PageReader
from meltguard.ingest.schema import EXPORTER_SCHEMA
from meltguard.k8s.memory import Remembered, pruned, stored_form
from tests.ingest.pages import render_page

NOW = 1_800_000_000.0


def retained(build: Callable[[], Any]) -> tuple[Any, int]:
    """What ``build()`` returns and the bytes still allocated for it."""
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    kept = build()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    return kept, sum(stat.size_diff for stat in after.compare_to(before, "filename"))


def page_reader(page: bytes) -> PageReader:
    reader = PageReader(EXPORTER_SCHEMA)
    reader.read(page)
    reader.read(page)  # the second read learns the shape
    return reader


def policy_memory(window_ticks: int) -> Remembered:
    """A policy after ``window_ticks`` ticks of changing recommendations, as kept now."""
    behavior = behavior_of(ScalingSpec())
    state = ControllerState()
    stored = None
    for tick in range(window_ticks):
        now = NOW + tick
        state = pruned(state.model_copy(update={"recommendations": remember_recommendation(
            state.recommendations, recommended=2 + tick % 3, behavior=behavior, now=now)}),
            behavior, now)
        stored = stored_form(state, stored)
    assert stored is not None
    status = {"phase": "Cool", "controller": stored.model_dump(by_alias=True,
                                                               exclude_none=True)}
    return Remembered(uid="u", state=state, status=status, parsed=None, written_at=NOW,
                      published=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpus", type=int, default=200)
    args = parser.parse_args()
    pods = tuple(f"team/worker-{index}" for index in range(20))
    page = render_page("node-1", gpus=args.gpus, pods=pods).encode()
    _, reader_bytes = retained(lambda: page_reader(page))
    reader = page_reader(page)
    table = reader.read(page)
    samples, sample_bytes = retained(lambda: table.samples(None, NOW))
    _, policy_bytes = retained(lambda: policy_memory(600))
    print(f"exporter page of {args.gpus} GPUs: {len(page) / 1024:.0f} KiB of text")
    print(f"  kept by its reader between scrapes: {reader_bytes / 1024:.0f} KiB "
          f"({reader_bytes / args.gpus:.0f} B per GPU)")
    print(f"  one scrape's samples: {sample_bytes / len(samples):.0f} B per GPU")
    print(f"per policy (memory.py, 600 ticks of changing recommendations): "
          f"{policy_bytes / 1024:.1f} KiB")
    print(f"telemetry state per policy before sharing, 1 exporter of {args.gpus} GPUs: "
          f"{reader_bytes / 1024:.0f} KiB; now per exporter, whatever the policies")


if __name__ == "__main__":
    main()
