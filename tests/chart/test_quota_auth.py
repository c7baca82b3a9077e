"""The quota server's caller tokens (--auth-tokens) and metrics port in the rendered chart."""

from __future__ import annotations

from typing import Any

import pytest

from meltguard.quota.auth import parse_tokens

from .helm import Helm, HelmFailed, find, one
from .test_render import quota_container


def quota_volumes(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    spec = one(docs, "Deployment", "meltguard-quota-server")["spec"]["template"]["spec"]
    return {volume["name"]: volume for volume in spec.get("volumes", [])}


def test_tokens_are_required_by_default_from_a_secret_the_chart_creates(helm: Helm) -> None:
    docs = helm.template()
    container = quota_container(docs)
    assert "--auth-tokens=/etc/meltguard/auth/tokens" in container["args"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "auth"]
    assert (mount["mountPath"], mount["readOnly"]) == ("/etc/meltguard/auth", True)
    secret = one(docs, "Secret", "meltguard-quota-server-auth")
    assert quota_volumes(docs)["auth"]["secret"] == {
        "secretName": "meltguard-quota-server-auth",
        "items": [{"key": "tokens", "path": "tokens"}],
    }
    callers = parse_tokens(secret["stringData"]["tokens"], "the chart's Secret")
    assert sorted(callers.values()) == ["gateway"]


def test_each_named_caller_gets_its_own_token(helm: Helm) -> None:
    docs = helm.template(settings=["quotaServer.auth.callers={edge,batch}"])
    text = one(docs, "Secret", "meltguard-quota-server-auth")["stringData"]["tokens"]
    assert sorted(parse_tokens(text, "the chart's Secret").values()) == ["batch", "edge"]


def test_an_existing_secret_replaces_the_chart_s(helm: Helm) -> None:
    docs = helm.template(
        settings=[
            "quotaServer.auth.existingSecret=callers",
            "quotaServer.auth.existingSecretKey=lines",
        ]
    )
    assert find(docs, "Secret") == []
    assert quota_volumes(docs)["auth"]["secret"] == {
        "secretName": "callers",
        "items": [{"key": "lines", "path": "tokens"}],
    }


def test_auth_turned_off_leaves_no_flag_no_secret_and_no_volume(helm: Helm) -> None:
    docs = helm.template(settings=["quotaServer.auth.enabled=false"])
    container = quota_container(docs)
    assert not [arg for arg in container["args"] if arg.startswith("--auth-tokens")]
    assert find(docs, "Secret") == []
    assert "auth" not in quota_volumes(docs)
    assert "volumeMounts" not in container


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (["quotaServer.auth.callers=null"], "neither quotaServer.auth.callers nor"),
        (["quotaServer.auth.callers={-bad}"], "/quotaServer/auth/callers/0"),
    ],
)
def test_bad_auth_values_fail_naming_them(
    helm: Helm, settings: list[str], message: str
) -> None:
    with pytest.raises(HelmFailed, match=message):
        helm.template(settings=settings)


def test_metrics_have_their_own_port_scraped_by_the_service_monitor(helm: Helm) -> None:
    docs = helm.template(
        settings=["quotaServer.metricsPort=9300", "monitoring.serviceMonitor.enabled=true"]
    )
    container = quota_container(docs)
    service_ports = one(docs, "Service", "meltguard-quota-server")["spec"]["ports"]
    monitor = one(docs, "ServiceMonitor", "meltguard-quota-server")
    assert "--metrics-port=9300" in container["args"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]}["metrics"] == 9300
    served = {p["name"]: (p["port"], p["targetPort"]) for p in service_ports}
    assert served["metrics"] == (9300, "metrics")
    assert [endpoint["port"] for endpoint in monitor["spec"]["endpoints"]] == ["metrics"]
