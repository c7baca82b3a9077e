"""Fixtures shared by several test folders."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .exporter_process import ATTACHED_PODS, RunningExporter, start_exporter, stop_exporter


@pytest.fixture(scope="module")
def simulated_exporter() -> Iterator[RunningExporter]:
    """``meltguard exporter --simulate 8 --attach ...`` (shared by a module; reset per test)."""
    exporter = start_exporter("--simulate", "8", "--attach", ",".join(ATTACHED_PODS))
    yield exporter
    stop_exporter(exporter)
