"""``meltguard operator`` as a process: kubeconfig login, metrics, liveness, SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from meltguard.ingest.metrics import METRIC_NAMES as INGEST_METRIC_NAMES
from meltguard.k8s import cli
from meltguard.k8s.metrics import METRIC_NAMES

from .harness import (
    POLICIES,
    add_namespaces,
    condition_of,
    eventually,
    free_ports,
    policy,
    server_url,
    versions,
)
from .kmock_apiserver import ApiServer

NS = "inference"
PEERINGS = "kopf.dev/v1/kopfpeerings"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.configure(parser)
    return parser.parse_args(argv)


def test_flags() -> None:
    args = parse("--namespace", "a", "-n", "b", "--metrics-port", "9000", "--peering", "mg",
                 "--priority", "10")
    assert (args.namespaces, args.metrics_port, args.peering, args.priority) \
        == (["a", "b"], 9000, "mg", 10)
    assert parse("--all-namespaces").namespaces == []
    with pytest.raises(SystemExit):
        parse("--namespace", "a", "--all-namespaces")


def test_a_bad_metrics_port_is_refused_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(parse("--metrics-port", "70000")) == 2
    assert "--metrics-port" in capsys.readouterr().out


def kubeconfig(path: Path, server: str) -> Path:
    path.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: test, cluster: {{server: "{server}"}}}}]
users: [{{name: test, user: {{token: not-checked}}}}]
contexts: [{{name: test, context: {{cluster: test, user: test, namespace: default}}}}]
current-context: test
""")
    return path


def served_families(text: str) -> set[str]:
    """Family names as queried (counters with _total), without prometheus-client's
    ``*_created`` companion series."""
    return {family.name + "_total" if family.type == "counter" else family.name
            for family in text_string_to_metric_families(text)
            if not family.name.endswith("_created")}


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_operator_process_peers_serves_metrics_liveness_and_stops_on_sigterm(
        api: ApiServer, tmp_path: Path) -> None:
    add_namespaces(api, NS)
    api.create_object(PEERINGS, {"metadata": {"name": "meltguard", "namespace": NS}})
    api.create_object(POLICIES, policy(NS, "imagegen", "missing-worker"))
    metrics_port, liveness_port = free_ports(2)
    log = tmp_path / "operator.log"
    env = {"KUBECONFIG": str(kubeconfig(tmp_path / "kubeconfig", server_url(api))),
           "PATH": "/usr/bin:/bin"}
    process = subprocess.Popen(
        [sys.executable, "-m", "meltguard.cli", "operator", "--namespace", NS,
         "--peering", "meltguard", "--priority", "5", "--metrics-port", str(metrics_port),
         "--liveness", f"http://127.0.0.1:{liveness_port}/healthz"], env=env,
        stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        await eventually(lambda: condition_of(api, NS, "imagegen", "Ready").get("reason")
                         == "TargetNotFound", timeout=30, what="the policy reconciled")
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{metrics_port}/metrics") as response:
                served = served_families(await response.text())
            async with session.get(f"http://127.0.0.1:{liveness_port}/healthz") as response:
                assert response.status == 200
        assert served >= METRIC_NAMES
        ours = {name for name in served if name.startswith("meltguard_")}
        assert ours <= METRIC_NAMES | INGEST_METRIC_NAMES
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 30)
        assert code == 0
        peers = [peer for version in versions(api, PEERINGS, NS, "meltguard")
                 for peer in (version.get("status") or {}).values() if peer]
        assert peers and all(peer["priority"] == 5 for peer in peers)
    except AssertionError as failure:
        raise AssertionError(f"{failure}\n--- the operator's log ---\n"
                             f"{log.read_text()[-4000:]}") from failure
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
