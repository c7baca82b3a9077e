"""A fractional limit in force on the real API server: the CRD's status schema takes it, and
``kubectl get iqp`` prints it in the Free-Limit column."""

from __future__ import annotations

import json

import pytest

from meltguard.api.models import PolicyStatus, TierQuotaStatus
from tests.k8s.harness import policy

from .cluster import Cluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

NS = "fractional"


def test_a_fractional_limit_is_stored_and_printed(cluster: Cluster) -> None:
    cluster.namespace(NS)
    cluster.create(policy(NS, "imagegen", "worker"))
    quotas = [TierQuotaStatus(tier="free", limit=1.4, baseline=3, window="24h"),
              TierQuotaStatus(tier="plus", limit=200, baseline=200, window="24h")]
    status = PolicyStatus(quotas=quotas).model_dump(by_alias=True, exclude_none=True)
    cluster.run_tool("kubectl", "patch", "iqp", "imagegen", "-n", NS, "--subresource=status",
                     "--type=merge", "-p", json.dumps({"status": {"quotas": status["quotas"]}}))
    stored = json.loads(cluster.run_tool("kubectl", "get", "iqp", "imagegen", "-n", NS,
                                         "-o", "json"))
    assert [tier["limit"] for tier in stored["status"]["quotas"]] == [1.4, 200]
    assert PolicyStatus.model_validate(stored["status"]).quotas[0].limit == 1.4
    table = cluster.run_tool("kubectl", "get", "iqp", "imagegen", "-n", NS).splitlines()
    column = table[0].index("FREE-LIMIT")  # empty cells leave blanks: read by position
    assert table[1][column:].split()[0] == "1.4"
