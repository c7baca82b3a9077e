"""``meltguard operator`` logs in with every usual kubeconfig form and reconciles a policy to
``Ready=True`` on a real kube-apiserver; an in-cluster token that rotates is followed."""

from __future__ import annotations

import asyncio
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from lightkube.config.kubeconfig import KubeConfig
from lightkube.resources.core_v1 import Secret

from meltguard.k8s.client import Kube, Policy, kopf_connection
from tests.k8s.harness import policy

from .cluster import Cluster, eventually, gpu_deployment, operator_process, remove_policies

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def ready_condition(cluster: Cluster, namespace: str, name: str) -> dict[str, str]:
    status = cluster.get(Policy, name, namespace).get("status") or {}
    return next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), {})


def kubeconfig_forms(cluster: Cluster) -> dict[str, Path]:
    plane = cluster.plane
    files = {"client-certificate": str(plane.admin.cert_path),
             "client-key": str(plane.admin.key_path)}
    return {
        "admin, embedded data": plane.admin_kubeconfig,
        "admin, file paths": plane.write_kubeconfig("admin-files", files, ca_file=True),
        "operator ServiceAccount token": cluster.service_account_kubeconfig(
            "meltguard-system", "meltguard-operator"),
    }


def test_the_operator_reaches_ready_with_each_kubeconfig_form(cluster: Cluster,
                                                              tmp_path: Path) -> None:
    namespace = cluster.namespace("creds")
    cluster.create(gpu_deployment(namespace, "worker", 1))
    try:
        reach_ready_with_each_form(cluster, namespace, tmp_path)
    finally:
        remove_policies(cluster, namespace)


def reach_ready_with_each_form(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    for index, (form, kubeconfig) in enumerate(kubeconfig_forms(cluster).items()):
        name = f"policy-{index}"
        cluster.create(policy(namespace, name, "worker"))
        log = tmp_path / f"operator-{index}.log"
        with operator_process(kubeconfig, log):
            ready = eventually(
                lambda name=name: ready_condition(cluster, namespace, name).get("status") == "True"
                and ready_condition(cluster, namespace, name),
                timeout=60, what=f"Ready=True logged in with {form}")
        print(f"{form}: Ready={ready['status']} ({ready['reason']}: {ready['message']})")
        text = log.read_text()
        assert "Forbidden" not in text and " 401" not in text, f"{form}: {text[-2000:]}"
        assert "Traceback" not in text, f"{form}: {text[-3000:]}"


def token_secret(cluster: Cluster, namespace: str, name: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name,
                                                               "namespace": namespace}}


def bound_token(cluster: Cluster, namespace: str, secret: str) -> str:
    """A token of the operator's ServiceAccount that dies with the Secret it is bound to."""
    from lightkube.models.authentication_v1 import BoundObjectReference, TokenRequestSpec
    from lightkube.models.meta_v1 import ObjectMeta
    from lightkube.resources.core_v1 import ServiceAccountToken

    uid = cluster.get(Secret, secret, namespace)["metadata"]["uid"]
    request = ServiceAccountToken(metadata=ObjectMeta(name="meltguard-operator",
                                                      namespace=namespace),
                                  spec=TokenRequestSpec(
        audiences=[], expirationSeconds=3600,
        boundObjectRef=BoundObjectReference(kind="Secret", apiVersion="v1", name=secret,
                                            uid=uid)))
    answer = cluster.admin.create(request, name="meltguard-operator", namespace=namespace)
    return str(answer.status.token)


def refused(cluster: Cluster, token: str | None) -> bool:
    """Whether the API server answers 401 to ``token``."""
    context = ssl.create_default_context(cafile=str(cluster.plane.ca.pair.cert_path))
    request = urllib.request.Request(f"{cluster.plane.server}/api/v1/namespaces/creds/pods",
                                     headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=5, context=context):
            return False
    except urllib.error.HTTPError as error:
        return error.code == 401


def test_an_in_cluster_token_is_read_again_when_it_rotates(
        cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The projected token file of a pod, rotated under a running client: the old token is
    revoked (its bound Secret deleted) and the next calls succeed with the new one."""
    namespace = "meltguard-system"
    for secret in ("token-one", "token-two"):
        cluster.create(token_secret(cluster, namespace, secret))
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "ca.crt").write_bytes(cluster.plane.ca.pair.cert_pem)
    (account / "namespace").write_text(namespace)
    (account / "token").write_text(bound_token(cluster, namespace, "token-one"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(cluster.plane.port))
    config = KubeConfig.from_service_account(account).get()
    cluster.namespace("creds")

    async def calls_across_a_rotation() -> tuple[str | None, str | None]:
        kube = Kube(config)
        try:
            await kube.list_pods("creds", "app=worker")
            before = (await kopf_connection(config)).token
            (account / "token").write_text(bound_token(cluster, namespace, "token-two"))
            cluster.admin.delete(Secret, "token-one", namespace=namespace)
            await asyncio.to_thread(eventually, lambda: refused(cluster, before), 30,
                                    "the revoked token refused")
            await kube.list_pods("creds", "app=worker")  # 401, token read again, retried
            return before, (await kopf_connection(config)).token
        finally:
            await kube.close()

    before, after = asyncio.run(calls_across_a_rotation())
    assert before and after and before != after
