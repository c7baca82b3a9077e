"""``meltguard quota-server --watch-configmaps`` as the chart's quota ServiceAccount, with the
chart's default (every namespace, where the operator writes): a tightened ConfigMap is in
force at once; a malformed one is logged and ignored."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from lightkube.resources.core_v1 import ConfigMap

from tests.k8s.harness import free_port
from tests.quota.conftest import quotas_json

from .cluster import Cluster, MeltguardProcess, eventually, refusals_logged
from .conftest import RELEASE_NAMESPACE

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

NS = "tenants"
POLICY = f"{NS}/imagegen"


def served_limit(url: str) -> Any:
    query = urllib.parse.urlencode({"policy": POLICY, "tier": "free", "subject": "u"})
    try:
        with urllib.request.urlopen(f"{url}/v1/quota?{query}", timeout=2) as answer:
            return json.loads(answer.read()).get("limit")
    except OSError:
        return None


def quotas(text: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "imagegen-quotas", "namespace": NS,
                         "labels": {"meltguard.io/quotas": "true"}},
            "data": {"quotas.json": text}}


def test_the_quota_server_follows_configmaps_as_its_service_account(cluster: Cluster,
                                                                    tmp_path: Path) -> None:
    cluster.namespace(NS)
    cluster.create(quotas(quotas_json(free=8, policy=POLICY)))
    kubeconfig = cluster.service_account_kubeconfig(RELEASE_NAMESPACE, "meltguard-quota-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "quota-server.log"
    with MeltguardProcess(kubeconfig, ["quota-server", "--host", "127.0.0.1", "--port",
                                       str(port), "--grpc-port", "0",
                                       "--watch-configmaps=*"], log):
        eventually(lambda: served_limit(url) == 8, timeout=30, what="the first limits served")
        patched = time.monotonic()
        cluster.patch(ConfigMap, "imagegen-quotas",
                      {"data": {"quotas.json": quotas_json(free=2, policy=POLICY)}}, NS)
        eventually(lambda: served_limit(url) == 2, timeout=5, every=0.01,
                   what="the tightened limit in force")
        print(f"tightened ConfigMap in force after {time.monotonic() - patched:.3f} s")

        cluster.patch(ConfigMap, "imagegen-quotas",
                      {"data": {"quotas.json": '{"policy": "tenants/imagegen", "tiers": 5}'}}, NS)
        eventually(lambda: "configmap:tenants/imagegen-quotas" in log.read_text()
                   and "ERROR" in log.read_text(), what="the malformed ConfigMap logged")
        assert served_limit(url) == 2  # the last good limits stay
    text = log.read_text()
    print(next(line for line in text.splitlines() if "ERROR" in line))
    assert refusals_logged(text) == [], text
