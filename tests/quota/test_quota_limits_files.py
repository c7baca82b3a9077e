"""Limits from --limits PATH: a file or a folder, reloaded on change, bad updates ignored."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import aiohttp
import pytest

from meltguard.quota.limits import LimitsRegistry, UnknownQuota
from meltguard.quota.memory_store import MemoryStore
from meltguard.quota.sources import FileLimitsSource

from .conftest import POLICY, FakeClock, consume, quotas_json, start_quota_server

pytestmark = pytest.mark.slow


class Counts:
    def __init__(self) -> None:
        self.results: list[str] = []

    def __call__(self, result: str) -> None:
        self.results.append(result)


def write(path: Path, text: str) -> None:
    """Replace ``path`` atomically, as an operator or kubelet would."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    temporary.replace(path)


def free_limit(registry: LimitsRegistry, policy: str = POLICY) -> int | None:
    return registry.table.lookup(policy, "free").limit


def loaded(path: Path, text: str) -> tuple[FileLimitsSource, LimitsRegistry, Counts]:
    """A source over ``path`` after writing ``text`` there and scanning once."""
    write(path, text)
    registry, counts = LimitsRegistry(), Counts()
    source = FileLimitsSource(path, registry, counts)
    source.scan()
    return source, registry, counts


def test_a_file_is_loaded_and_reloaded_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "quotas.json"
    source, registry, counts = loaded(path, quotas_json(free=3))
    assert free_limit(registry) == 3
    source.scan()
    assert counts.results == ["ok"]  # unchanged file: not parsed again
    write(path, quotas_json(free=1))
    source.scan()
    assert free_limit(registry) == 1
    assert counts.results == ["ok", "ok"]


def test_a_malformed_update_is_ignored_and_the_last_good_limits_stay(tmp_path: Path) -> None:
    path = tmp_path / "quotas.json"
    source, registry, counts = loaded(path, quotas_json(free=2))
    for bad in ("{not json", '{"policy": "inference/imagegen"}', quotas_json(free=-1)):
        write(path, bad)
        source.scan()
        assert free_limit(registry) == 2
    assert counts.results == ["ok", "invalid", "invalid", "invalid"]
    write(path, quotas_json(free=5))
    source.scan()
    assert free_limit(registry) == 5


def test_a_malformed_first_file_publishes_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, registry, _ = loaded(tmp_path / "quotas.json", '{"policy": 3}')
    assert registry.sources == frozenset()
    assert "policy" in caplog.text
    with pytest.raises(UnknownQuota):
        registry.table.lookup(POLICY, "free")


def test_a_folder_mounted_like_a_configmap_is_read_once_per_key_and_swaps(tmp_path: Path) -> None:
    # kubelet layout: visible names are links into ..data, a link to a timestamped folder
    first = tmp_path / "..2026_11_23_10_00_00.1"
    first.mkdir()
    (first / "quotas.json").write_text(quotas_json(free=3))
    (first / "config.yaml").write_text("domain: imagegen\n")
    (tmp_path / "..data").symlink_to(first.name)
    (tmp_path / "quotas.json").symlink_to("..data/quotas.json")
    (tmp_path / "config.yaml").symlink_to("..data/config.yaml")
    other = tmp_path / "other"
    other.mkdir()
    write(other / "quotas.json", quotas_json(policy="batch/other", free=9))
    registry = LimitsRegistry()
    source = FileLimitsSource(tmp_path, registry, Counts())
    source.scan()
    assert registry.sources == {str(tmp_path / "quotas.json"), str(other / "quotas.json")}
    assert (free_limit(registry), free_limit(registry, "batch/other")) == (3, 9)

    second = tmp_path / "..2026_11_23_10_05_00.2"
    second.mkdir()
    (second / "quotas.json").write_text(quotas_json(free=1))
    (tmp_path / "..data_tmp").symlink_to(second.name)
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    source.scan()
    assert free_limit(registry) == 1

    (other / "quotas.json").unlink()
    source.scan()
    assert free_limit(registry, "batch/other") == 9  # a vanished key withdraws nothing
    write(other / "quotas.json", "{}")
    source.scan()
    with pytest.raises(UnknownQuota, match="batch/other"):
        registry.table.lookup("batch/other", "free")


async def test_a_deleted_limits_file_keeps_its_limits_in_force_until_an_empty_document(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "quotas.json"
    write(path, quotas_json(free=2))
    server = await start_quota_server(MemoryStore(), clock)
    server.registry.remove("test")
    counts = Counts()
    files = FileLimitsSource(path, server.registry, counts)
    files.scan()
    try:
        async with aiohttp.ClientSession() as http:
            path.unlink()
            files.scan()
            files.scan()
            statuses = [(await consume(http, server.url))[0] for _ in range(3)]
            assert statuses == [200, 200, 429]  # free=2 still enforced after the rm
            gone = [r.message for r in caplog.records if "is gone" in r.message]
            assert len(gone) == 1 and str(path) in gone[0], gone  # logged once, not per scan

            write(path, quotas_json(free=3))
            files.scan()
            assert (await consume(http, server.url))[0] == 200  # the file is followed again

            write(path, " { } ")
            files.scan()
            status, body, _ = await consume(http, server.url)
            assert (status, body["field"]) == (404, "policy")
            assert any("empty document" in r.message for r in caplog.records)
            assert counts.results == ["ok", "ok", "ok"]
    finally:
        await server.close()


def test_a_missing_path_is_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "later" / "quotas.json"
    registry = LimitsRegistry()
    source = FileLimitsSource(path, registry, Counts())
    source.scan()
    assert registry.sources == frozenset()
    path.parent.mkdir()
    write(path, quotas_json())
    source.scan()
    assert free_limit(registry) == 3


async def test_reloading_under_load_drops_no_request(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "quotas.json"
    write(path, quotas_json(plus=100_000))
    server = await start_quota_server(MemoryStore(), clock, limits=quotas_json())
    server.registry.remove("test")
    counts = Counts()
    files = FileLimitsSource(path, server.registry, counts, interval_seconds=0.005)
    files.scan()
    reloading = asyncio.create_task(files.run())
    statuses: list[int] = []
    async with aiohttp.ClientSession() as http:

        async def client(n: int) -> None:
            for i in range(40):
                status, _, _ = await consume(http, server.url, tier="plus", subject=f"u{n}-{i}")
                statuses.append(status)

        async def rewrite() -> None:
            for limit in range(200):
                write(path, quotas_json(plus=100_000 - limit))
                await asyncio.sleep(0.002)

        await asyncio.gather(rewrite(), *(client(n) for n in range(10)))
    reloading.cancel()
    await server.close()
    assert statuses == [200] * 400
    assert counts.results.count("ok") > 10  # the limits really changed while serving
    assert free_limit(server.registry) == 3
