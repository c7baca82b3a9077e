"""The ``meltguard quota-server`` command: flags, bad values, and a Redis-backed restart."""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .conftest import (
    MELTGUARD,
    POLICY,
    RedisServer,
    free_port,
    launch_quota_server,
    needs_redis,
    quotas_json,
)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MELTGUARD, "quota-server", *args], capture_output=True, text=True, timeout=60
    )


def test_help_lists_every_flag() -> None:
    result = run("--help")
    assert result.returncode == 0
    for flag in (
        "--port",
        "--host",
        "--store",
        "--limits",
        "--watch-configmaps",
        "--on-store-error",
        "--store-timeout",
        "--reload-interval",
        "--read-timeout",
        "--max-connections",
        "--max-request-ids",
        "--fail-open-for",
        "--auth-tokens",
        "--metrics-port",
    ):
        assert flag in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--limits", "x", "--watch-configmaps", "ns"], "not allowed with argument"),
        ([], "one of the arguments --limits --watch-configmaps is required"),
        (["--limits", "x", "--on-store-error", "maybe"], "invalid choice: 'maybe'"),
        (["--limits", "x", "--store", "mysql://db"], "--store must be 'memory', a redis:// URL"),
        (["--limits", "x", "--read-timeout", "0"], "--read-timeout must be positive, got 0"),
        (["--limits", "x", "--max-connections", "-1"], "--max-connections must be positive"),
        (["--limits", "x", "--max-request-ids", "0"], "--max-request-ids must be positive"),
        (["--limits", "x", "--fail-open-for", "-5"], "--fail-open-for must be 0 or more"),
        (["--limits", "x", "--auth-tokens", "/nonexistent"], "--auth-tokens /nonexistent: No such"),
        (["--limits", "x", "--metrics-port", "70000"], "--metrics-port must be 0 to 65535"),
    ],
)
def test_bad_flags_exit_2_naming_the_problem(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert message in result.stderr


def consume_once(url: str) -> int:
    body = json.dumps({"policy": POLICY, "tier": "free", "subject": "cli", "cost": 1}).encode()
    request = urllib.request.Request(
        f"{url}/v1/consume", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(json.load(response)["used"])
    except urllib.error.HTTPError as error:
        return int(json.load(error)["used"])


@pytest.mark.slow
@needs_redis
def test_counts_survive_killing_both_redis_and_the_quota_server(tmp_path: Path) -> None:
    limits = tmp_path / "quotas.json"
    limits.write_text(quotas_json())
    redis_server = RedisServer(free_port(), tmp_path)
    redis_server.start()
    flags = ("--store", redis_server.url, "--limits", str(limits))
    try:
        server, url = launch_quota_server(*flags)
        assert [consume_once(url), consume_once(url)] == [1, 2]
        server.kill()  # SIGKILL: no graceful anything
        server.wait(10)
        redis_server.kill()
        redis_server.start()
        server, url = launch_quota_server(*flags)
        assert consume_once(url) == 3
        assert consume_once(url) == 3  # refused: the limit is 3
        server.send_signal(signal.SIGTERM)
        assert server.wait(10) == 0
    finally:
        redis_server.kill()
