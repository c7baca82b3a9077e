"""Fixtures for the operator's integration tests: the kmock API server, kopf in its own thread."""

from __future__ import annotations

from collections.abc import AsyncIterator

import kmock
import pytest_asyncio

from .harness import declare_resources
from .kmock_apiserver import ApiServer


@pytest_asyncio.fixture()
async def api() -> AsyncIterator[ApiServer]:
    """A fresh API server on 127.0.0.1 with meltguard's resources declared."""
    async with ApiServer() as server, kmock.Server(server):
        declare_resources(server)
        yield server
