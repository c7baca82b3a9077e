"""Fixtures of the chart tests: the helm and promtool binaries, skipped when absent."""

from __future__ import annotations

import pytest

from .helm import Helm, find_tool


@pytest.fixture(scope="session")
def helm() -> Helm:
    binary = find_tool("helm")
    if binary is None:
        pytest.skip("helm not found in .tools/ or on PATH: run scripts/fetch-tools.sh")
    return Helm(binary)


@pytest.fixture(scope="session")
def promtool() -> str:
    binary = find_tool("promtool")
    if binary is None:
        pytest.skip("promtool not found: apt-get install -y prometheus")
    return binary
