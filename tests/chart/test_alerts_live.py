"""The chart's alerts evaluated by a real Prometheus against the real metric endpoints.

promtool's unit tests (test_alerts.py) feed hand-written series; this test checks the rules
against what the code really serves: the operator's metric families filled by the real
``decide()`` and ``OperatorMetrics.observe``, and a real ``meltguard quota-server`` with a
tightened limit, an unreachable Redis and caller tokens, called over HTTP and gRPC with and
without a token. Prometheus scrapes both on 127.0.0.1 each second with the rules rendered
from the chart (every ``for`` set to 0s), and the firing alerts are read from its API.
Finally the operator endpoint stops and MeltguardOperatorDown must fire.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIServer

import grpc
import pytest
import yaml
from prometheus_client import CollectorRegistry, start_http_server

from meltguard.api.state import ControllerState
from meltguard.api.validation import parse_spec
from meltguard.core.decide import decide
from meltguard.core.observation import GpuSample, Observation
from meltguard.k8s.metrics import OperatorMetrics
from meltguard.quota.grpc_service import SHOULD_RATE_LIMIT, RateLimitRequest, rate_limit_client

from .helm import NAMESPACE, Helm
from .monitoring import rendered_rule_groups

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

ALERT_DURATIONS = (
    "melting",
    "quotasTightened",
    "noGPUCapacity",
    "atMaxReplicas",
    "telemetryStale",
    "operatorDown",
    "quotaStoreErrors",
    "quotaCallersUnauthenticated",
)
#: Alerts (name, labels that identify them) that must fire while the operator is up...
EXPECTED_WHILE_UP = [
    ("MeltguardGPUsMelting", {"namespace": "inference", "policy": "imagegen"}),
    ("MeltguardNoGPUCapacity", {"namespace": "inference", "policy": "imagegen"}),
    ("MeltguardAtMaxReplicas", {"namespace": "inference", "policy": "upscaler"}),
    ("MeltguardTelemetryStale", {"namespace": "batch", "policy": "captioner"}),
    ("MeltguardQuotasTightened", {"policy": "inference/imagegen", "tier": "free"}),
    ("MeltguardQuotaStoreErrors", {"namespace": NAMESPACE, "pod": "quota-server-0"}),
    (
        "MeltguardQuotaCallersUnauthenticated",
        {"pod": "quota-server-0", "endpoint": SHOULD_RATE_LIMIT, "status": "UNAUTHENTICATED"},
    ),
    ("MeltguardQuotaCallersUnauthenticated", {"endpoint": "/v1/consume", "status": "401"}),
]
#: ...and near misses that must not.
QUIET_WHILE_UP = [
    ("MeltguardGPUsMelting", {"policy": "captioner"}),
    ("MeltguardNoGPUCapacity", {"policy": "upscaler"}),
    ("MeltguardAtMaxReplicas", {"policy": "captioner"}),
    ("MeltguardTelemetryStale", {"policy": "imagegen"}),
    ("MeltguardQuotasTightened", {"tier": "plus"}),
    ("MeltguardOperatorDown", {}),
    ("MeltguardQuotaCallersUnauthenticated", {"status": "400"}),  # a known caller's bad body
]
QUOTAS = {
    "policy": "inference/imagegen",
    "observedGeneration": 3,
    "phase": "Melting",
    "updated": "2026-01-01T00:00:00Z",
    "tiers": [
        {"name": "free", "limit": 1, "baseline": 3, "windowSeconds": 86400, "tightened": True},
        {"name": "plus", "limit": 200, "baseline": 200, "windowSeconds": 10800},
        {"name": "pro", "unlimited": True},
    ],
}


#: The one caller of the quota server's --auth-tokens file.
GATEWAY_TOKEN = "token-of-the-live-gateway-01"
CONSUME = {"policy": "inference/imagegen", "tier": "plus", "subject": "u1", "cost": 1}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def http_json(url: str, body: dict[str, Any] | None = None, token: str | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:  # 4xx/5xx answers carry JSON too
        return json.load(error)


def operator_registry() -> CollectorRegistry:
    """Operator metrics after one real decide() tick for three policies."""
    spec = parse_spec(
        {
            "scaleTargetRef": {"name": "worker"},
            "minReplicas": 1,
            "maxReplicas": 2,
            "quotas": {"tiers": [{"name": "free", "limit": 3, "window": "24h"}]},
        }
    )
    now = time.time()
    throttled = tuple(
        GpuSample(
            uuid=f"GPU-{i}",
            utilization=0.99,
            temperature_celsius=92.0,
            memory_used_bytes=1.0,
            memory_total_bytes=2.0,
            sampled_at=now,
            throttle_reasons=frozenset({"hw_thermal"}),
        )
        for i in range(2)
    )
    metrics = OperatorMetrics(CollectorRegistry())
    for namespace, policy, observation in [
        # melting, at maxReplicas, one replica Pending for lack of GPUs
        ("inference", "imagegen", Observation(throttled, current_replicas=2, pending_replicas=1)),
        # melting at maxReplicas with nothing Pending: ScalingLimited=AtMaxReplicas
        ("inference", "upscaler", Observation(throttled, current_replicas=2)),
        # no sample at all: phase Unknown
        ("batch", "captioner", Observation((), current_replicas=1)),
    ]:
        decision = decide(spec, ControllerState.initial(), observation, now=now)
        metrics.observe(namespace, policy, decision, applied=True,
                        bounds=(spec.min_replicas, spec.max_replicas))
    return metrics.registry


@pytest.fixture
def prometheus_binary() -> str:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus not found: apt-get install -y prometheus")
    return binary


@contextmanager
def running(command: list[str], ready_url: str, log: Path) -> Iterator[None]:
    """``command`` as a process (output to ``log``) until the block ends, once ``ready_url``
    answers."""
    with log.open("w") as output:  # a file: a pipe nobody reads would fill up and block it
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: healthy(ready_url), f"{Path(command[0]).name} at {ready_url}")
            yield
        finally:
            process.terminate()
            process.wait(timeout=10)


@dataclass(frozen=True)
class QuotaServerPorts:
    http: int
    grpc: int


@pytest.fixture
def quota_server(tmp_path: Path) -> Iterator[QuotaServerPorts]:
    """`meltguard quota-server` with the tightened limits above, a Redis that is not there and
    the gateway's token as its only caller (HTTP and gRPC)."""
    limits = tmp_path / "quotas.json"
    limits.write_text(json.dumps(QUOTAS))
    tokens = tmp_path / "tokens"
    tokens.write_text(f"gateway:{GATEWAY_TOKEN}\n")
    ports, dead_redis = QuotaServerPorts(free_port(), free_port()), free_port()
    command = [
        sys.executable, "-m", "meltguard.cli", "quota-server", "--host", "127.0.0.1",
        "--port", str(ports.http), "--grpc-port", str(ports.grpc), "--limits", str(limits),
        "--store", f"redis://127.0.0.1:{dead_redis}/0", "--on-store-error", "closed",
        "--auth-tokens", str(tokens),
    ]  # fmt: skip
    with running(command, f"http://127.0.0.1:{ports.http}/healthz", tmp_path / "quota-server.log"):
        yield ports


def ask_without_token(channel: grpc.Channel) -> grpc.StatusCode:
    """What the gRPC API answers a ShouldRateLimit call that carries no token, as an Envoy
    without ``initial_metadata`` makes it."""
    try:
        rate_limit_client(channel)(RateLimitRequest(domain="imagegen"), timeout=5)
    except grpc.RpcError as error:
        code: grpc.StatusCode = error.code()
        return code
    return grpc.StatusCode.OK


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except OSError:
        return False


def write_prometheus_config(folder: Path, rules: Path, operator: int, quota: int) -> Path:
    """Scrape jobs named like the chart's Services, with the pod labels Kubernetes SD adds."""

    def job(name: str, port: int, pod: str, honor: bool) -> dict[str, Any]:
        return {
            "job_name": name,
            "honor_labels": honor,
            "static_configs": [
                {"targets": [f"127.0.0.1:{port}"], "labels": {"namespace": NAMESPACE, "pod": pod}}
            ],
        }

    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [
            job("meltguard-operator", operator, "operator-0", honor=True),
            job("meltguard-quota-server", quota, "quota-server-0", honor=False),
        ],
    }
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def firing(prometheus: str) -> list[dict[str, str]]:
    """Labels of every alert Prometheus has firing now."""
    alerts = http_json(f"{prometheus}/api/v1/alerts")["data"]["alerts"]
    return [alert["labels"] for alert in alerts if alert["state"] == "firing"]


def fires(alerts: list[dict[str, str]], name: str, labels: dict[str, str]) -> bool:
    return any(a["alertname"] == name and labels.items() <= a.items() for a in alerts)


@dataclass
class OperatorEndpoint:
    """The operator's /metrics on 127.0.0.1, which the test can stop."""

    port: int
    server: WSGIServer

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def operator_endpoint() -> Iterator[OperatorEndpoint]:
    port = free_port()
    server, _ = start_http_server(port, addr="127.0.0.1", registry=operator_registry())
    yield OperatorEndpoint(port, server)
    server.server_close()


@pytest.fixture
def prometheus(
    helm: Helm,
    prometheus_binary: str,
    quota_server: QuotaServerPorts,
    operator_endpoint: OperatorEndpoint,
    tmp_path: Path,
) -> Iterator[str]:
    """A Prometheus with the chart's rules (every ``for`` 0s) scraping both; yields its URL."""
    settings = [f"alerts.{name}.for=0s" for name in ALERT_DURATIONS]
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(rendered_rule_groups(helm, settings)))
    config = write_prometheus_config(tmp_path, rules, operator_endpoint.port, quota_server.http)
    web = free_port()
    command = [
        prometheus_binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{web}",
    ]
    url = f"http://127.0.0.1:{web}"
    with running(command, f"{url}/-/ready", tmp_path / "prometheus.log"):
        yield url


def test_alerts_fire_on_what_the_components_really_serve(
    prometheus: str, quota_server: QuotaServerPorts, operator_endpoint: OperatorEndpoint
) -> None:
    consume = f"http://127.0.0.1:{quota_server.http}/v1/consume"
    grpc_answers: list[grpc.StatusCode] = []

    def expected_alerts_with_failing_calls_coming() -> bool:
        # keep refused calls coming, so that their rates stay above zero: the gateway's
        # (store errors), a bad body of the gateway (400), no token over HTTP and over gRPC
        http_json(consume, CONSUME, token=GATEWAY_TOKEN)
        http_json(consume, {"policy": "inference/imagegen"}, token=GATEWAY_TOKEN)
        http_json(consume, CONSUME)
        grpc_answers.append(ask_without_token(channel))
        alerts = firing(prometheus)
        return all(fires(alerts, name, labels) for name, labels in EXPECTED_WHILE_UP)

    with grpc.insecure_channel(f"127.0.0.1:{quota_server.grpc}") as channel:
        wait_for(expected_alerts_with_failing_calls_coming, "every alert expected while up", 45)
    alerts = firing(prometheus)
    assert [(name, lbl) for name, lbl in QUIET_WHILE_UP if fires(alerts, name, lbl)] == []
    assert grpc_answers[-1] == grpc.StatusCode.UNAUTHENTICATED

    operator_endpoint.stop()
    wait_for(
        lambda: fires(firing(prometheus), "MeltguardOperatorDown", {"severity": "critical"}),
        "MeltguardOperatorDown after the operator stopped",
    )


def test_at_max_replicas_is_detectable_from_the_operator_metrics() -> None:
    families = {m.name: m for m in operator_registry().collect()}
    kinds = {s.labels["kind"] for s in families["meltguard_policy_replicas"].samples}
    assert "max" in kinds
