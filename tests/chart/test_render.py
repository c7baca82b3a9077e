"""helm lint/template of the chart, and the rendered manifests against Kubernetes schemas."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from .helm import (
    CHART_DIR,
    MONITORING_APIS,
    NAMESPACE,
    Helm,
    HelmFailed,
    find,
    one,
    pod_specs,
    values_files,
)
from .test_shards import BAD_SHARDS

#: The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest known.
KUBE_VERSIONS = ("1.28.0", kubernetes_validate.latest_version())
#: Kinds from CRDs that kubernetes-validate has no schema for. KopfPeering objects are checked
#: against the chart's own CRD below; the Prometheus Operator's kinds are checked by shape in
#: test_monitoring.py and their rules by promtool in test_alerts.py.
PROMETHEUS_OPERATOR_KINDS = frozenset({"ServiceMonitor", "PodMonitor", "PrometheusRule"})
KOPF_PEERING_KINDS = frozenset({"KopfPeering", "ClusterKopfPeering"})

RENDER_CASES = [pytest.param((), id="defaults")] + [
    pytest.param((path,), id=path.stem) for path in values_files()
]


def test_values_files_cover_the_required_setups() -> None:
    stems = {path.stem for path in values_files()}
    assert {"minimal-values", "production-values", "sidecar-exporter-values"} <= stems


@pytest.mark.parametrize("files", RENDER_CASES)
def test_helm_lint_passes(helm: Helm, files: tuple[Path, ...]) -> None:
    args = ["lint", "--strict", str(CHART_DIR)]
    for path in files:
        args += ["--values", str(path)]
    output = helm.run(*args)
    assert "0 chart(s) failed" in output


def peering_schemas() -> dict[str, dict[str, Any]]:
    """openAPIV3Schema of the chart's kopf peering CRDs, by kind."""
    crds = yaml.safe_load_all((CHART_DIR / "crds" / "kopf-peering.yaml").read_text())
    return {
        crd["spec"]["names"]["kind"]: crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for crd in crds
    }


def validate_manifest(doc: dict[str, Any], version: str) -> None:
    """Raise if ``doc`` is invalid for Kubernetes ``version`` (strict: unknown fields fail)."""
    kind = doc["kind"]
    if kind in KOPF_PEERING_KINDS:
        jsonschema.validate(doc, peering_schemas()[kind])
        return
    if kind in PROMETHEUS_OPERATOR_KINDS:
        return
    kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("files", RENDER_CASES)
def test_every_rendered_manifest_validates(
    helm: Helm, files: tuple[Path, ...], version: str
) -> None:
    docs = helm.template(files, api_versions=MONITORING_APIS, include_crds=True)
    assert find(docs, "CustomResourceDefinition", "imagequotapolicies.meltguard.io")
    errors = []
    for doc in docs:
        try:
            validate_manifest(doc, version)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as error:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {error.message}")
    assert errors == []


def test_validation_catches_a_misspelled_field(helm: Helm) -> None:
    """The schema check above is strict: one typo in a pod spec fails it."""
    deployment = copy.deepcopy(one(helm.template(), "Deployment", "meltguard-operator"))
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSIONS[0], strict=True)


def test_kopf_peering_object_is_checked_against_its_crd() -> None:
    bad = {
        "apiVersion": "kopf.dev/v1",
        "kind": "KopfPeering",
        "metadata": {"name": "x"},
        "status": "not-an-object",
    }
    with pytest.raises(jsonschema.ValidationError):
        validate_manifest(bad, KUBE_VERSIONS[0])


@pytest.mark.parametrize("files", RENDER_CASES)
def test_standard_labels_on_every_object(helm: Helm, files: tuple[Path, ...]) -> None:
    required = {
        "app.kubernetes.io/name",
        "app.kubernetes.io/instance",
        "app.kubernetes.io/component",
        "app.kubernetes.io/part-of",
        "app.kubernetes.io/version",
        "app.kubernetes.io/managed-by",
        "helm.sh/chart",
    }
    for doc in helm.template(files, api_versions=MONITORING_APIS):
        missing = required - set(doc["metadata"].get("labels", {}))
        assert not missing, f"{doc['kind']}/{doc['metadata']['name']} lacks {sorted(missing)}"


@pytest.mark.parametrize("files", RENDER_CASES)
def test_containers_are_hardened(helm: Helm, files: tuple[Path, ...]) -> None:
    for where, spec in pod_specs(helm.template(files)):
        root_exporter = where.startswith("DaemonSet/") and spec["securityContext"]["runAsUser"] == 0
        if not root_exporter:
            assert spec["securityContext"]["runAsNonRoot"] is True, where
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["privileged"] is False, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in context["capabilities"], where
            assert container["resources"]["requests"], where
            assert container["resources"]["limits"]["memory"], where
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", where
            assert container["readinessProbe"]["httpGet"]["path"] in {"/healthz", "/readyz"}, where


def test_operator_deployment_recreates_and_probes_kopf_liveness(helm: Helm) -> None:
    deployment = one(helm.template(), "Deployment", "meltguard-operator")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][0] == "operator"
    assert "--all-namespaces" in container["args"]
    assert "--metrics-port=8000" in container["args"]
    assert "--liveness=http://0.0.0.0:8080/healthz" in container["args"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8000, "health": 8080}
    assert container["livenessProbe"]["httpGet"]["port"] == "health"


def test_operator_watches_listed_namespaces_only(helm: Helm) -> None:
    docs = helm.template(settings=["operator.watchNamespaces={a,b}"])
    args = one(docs, "Deployment", "meltguard-operator")["spec"]["template"]["spec"]["containers"][
        0
    ]["args"]
    assert "--namespace=a" in args and "--namespace=b" in args
    assert "--all-namespaces" not in args


def test_exporter_daemonset_matches_the_policy_default_selector(helm: Helm) -> None:
    """docs/design.md: a policy's exporter selector defaults to name=meltguard-exporter."""
    daemonset = one(helm.template(), "DaemonSet", "meltguard-exporter")
    labels = daemonset["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "meltguard-exporter"
    spec = daemonset["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    mount = one_mount(spec["containers"][0], "pod-resources")
    assert mount == {
        "name": "pod-resources",
        "mountPath": "/var/lib/kubelet/pod-resources",
        "readOnly": True,
    }
    volume = next(v for v in spec["volumes"] if v["name"] == "pod-resources")
    assert volume["hostPath"]["path"] == "/var/lib/kubelet/pod-resources"
    assert spec["automountServiceAccountToken"] is False
    assert "runtimeClassName" not in spec
    assert "--attribution=pod-resources" in spec["containers"][0]["args"]


def one_mount(container: dict[str, Any], name: str) -> dict[str, Any]:
    mounts: list[dict[str, Any]] = [
        m for m in container.get("volumeMounts", []) if m["name"] == name
    ]
    assert len(mounts) == 1, f"{container['name']} mounts {name} {len(mounts)} times"
    return mounts[0]


def test_exporter_runtime_class_option(helm: Helm) -> None:
    docs = helm.template(settings=["exporter.runtimeClassName=nvidia"])
    spec = one(docs, "DaemonSet", "meltguard-exporter")["spec"]["template"]["spec"]
    assert spec["runtimeClassName"] == "nvidia"


def test_sidecar_mode_renders_no_daemonset(helm: Helm) -> None:
    docs = helm.template([CHART_DIR / "ci" / "sidecar-exporter-values.yaml"])
    assert find(docs, "DaemonSet") == []
    assert find(docs, "Service", "meltguard-exporter") == []


def test_fire_drill_exporter_simulates_without_the_kubelet_socket(helm: Helm) -> None:
    docs = helm.template([CHART_DIR / "ci" / "firedrill-values.yaml"])
    spec = one(docs, "DaemonSet", "meltguard-exporter")["spec"]["template"]["spec"]
    assert "--simulate=8" in spec["containers"][0]["args"]
    assert "volumes" not in spec
    assert spec["securityContext"]["runAsNonRoot"] is True


def quota_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    spec = one(docs, "Deployment", "meltguard-quota-server")["spec"]["template"]["spec"]
    container: dict[str, Any] = spec["containers"][0]
    return container


def test_quota_server_defaults_to_memory_and_watches_where_the_operator_writes(
        helm: Helm) -> None:
    docs = helm.template()
    args = quota_container(docs)["args"]
    assert args[0] == "quota-server"
    assert "--store=memory" in args
    assert "--watch-configmaps=*" in args  # the operator watches every namespace
    service = one(docs, "Service", "meltguard-quota-server")
    assert service["spec"]["ports"][0]["port"] == 8080
    pdb = one(docs, "PodDisruptionBudget", "meltguard-quota-server")
    assert pdb["spec"]["maxUnavailable"] == 1


def test_redis_url_from_values_is_kept_in_a_secret(helm: Helm) -> None:
    url = "redis://:s3cret@redis:6379/0"
    docs = helm.template(
        settings=["quotaServer.store.type=redis", f"quotaServer.store.redis.url={url}"]
    )
    secret = one(docs, "Secret", "meltguard-quota-server")
    assert secret["stringData"]["url"] == url
    container = quota_container(docs)
    assert "--store=$(MELTGUARD_REDIS_URL)" in container["args"]
    assert "s3cret" not in yaml.safe_dump(find(docs, "Deployment"))
    env = {e["name"]: e for e in container["env"]}
    assert env["MELTGUARD_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "meltguard-quota-server",
        "key": "url",
    }


def test_redis_url_from_an_existing_secret(helm: Helm) -> None:
    docs = helm.template([CHART_DIR / "ci" / "production-values.yaml"])
    assert find(docs, "Secret") == []
    env = {e["name"]: e for e in quota_container(docs)["env"]}
    assert env["MELTGUARD_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "meltguard-redis",
        "key": "url",
    }


def test_quota_limits_from_mounted_configmaps(helm: Helm) -> None:
    docs = helm.template([CHART_DIR / "ci" / "sidecar-exporter-values.yaml"])
    container = quota_container(docs)
    assert "--limits=/etc/meltguard/limits" in container["args"]
    assert one_mount(container, "limits")["readOnly"] is True
    spec = one(docs, "Deployment", "meltguard-quota-server")["spec"]["template"]["spec"]
    sources = spec["volumes"][0]["projected"]["sources"]
    assert sources == [
        {
            "configMap": {
                "name": "imagegen-quotas",
                "items": [{"key": "quotas.json", "path": "imagegen-quotas.json"}],
            }
        }
    ]
    assert spec["automountServiceAccountToken"] is False
    assert find(docs, "Role") == []


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (["quotaServer.replicas=3"], "use store.type=redis for more than one replica"),
        (["quotaServer.store.type=redis"], "neither quotaServer.store.redis.url nor"),
        (["quotaServer.limits.source=files"], "quotaServer.limits.configMaps is empty"),
        (["operator.replica=2"], "'replica' not allowed"),
        (["operator.replicas=2"], "/operator/replicas"),
        (
            ["operator.peering.enabled=true", "operator.peering.standbyPriority=100"],
            "standbyPriority (100) must be below operator.peering.priority (100)",
        ),
        (["quotaServer.store.type=etcd"], "/quotaServer/store/type"),
        (["exporter.port=0"], "/exporter/port"),
        (["image.digest=latest"], "/image/digest"),
        (["alerts.melting.for=soon"], "/alerts/melting/for"),
        (["operator.watchNamespaces={team-*}"], "/operator/watchNamespaces/0"),
        *BAD_SHARDS,
    ],
)
def test_bad_values_fail_with_a_message_naming_them(
    helm: Helm, settings: list[str], message: str
) -> None:
    with pytest.raises(HelmFailed) as failure:
        helm.template(settings=settings)
    assert message in str(failure.value)


def test_network_policies_admit_only_the_configured_peers(helm: Helm) -> None:
    docs = helm.template([CHART_DIR / "ci" / "production-values.yaml"])
    policies = {d["metadata"]["name"]: d["spec"] for d in find(docs, "NetworkPolicy")}
    assert set(policies) == {"meltguard-operator", "meltguard-exporter", "meltguard-quota-server"}
    monitoring = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    }
    gateway = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateway"}}}
    assert policies["meltguard-operator"]["ingress"] == [
        {"ports": [{"port": 8000, "protocol": "TCP"}], "from": [monitoring]}
    ]
    quota_rules = {
        rule["ports"][0]["port"]: rule["from"]
        for rule in policies["meltguard-quota-server"]["ingress"]
    }
    exporter_from = policies["meltguard-exporter"]["ingress"][0]["from"]
    assert exporter_from[0] == monitoring
    operator_pods = exporter_from[1]
    assert operator_pods["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == (
        "meltguard-operator"
    )
    # The operator also reads the quota service's demand page on its metrics port.
    assert quota_rules == {8080: [gateway], 8081: [gateway], 9090: [monitoring, operator_pods]}
    assert all(p["policyTypes"] == ["Ingress"] for p in policies.values())


def test_image_by_digest(helm: Helm) -> None:
    docs = helm.template([CHART_DIR / "ci" / "production-values.yaml"])
    for where, spec in pod_specs(docs):
        image = spec["containers"][0]["image"]
        assert image.startswith("ghcr.io/meltguard/meltguard@sha256:"), where


def test_notes_tell_the_next_step(helm: Helm) -> None:
    notes = helm.run(
        "install", "meltguard", str(CHART_DIR), "--dry-run=client", "--namespace", NAMESPACE
    )
    assert "kubectl apply -f" in notes
    assert "kubectl get imagequotapolicies" in notes
    assert "/v1/consume" in notes


def test_kubernetes_older_than_1_28_is_refused(helm: Helm) -> None:
    helm.run("template", "x", str(CHART_DIR), "--kube-version", "1.28.0")
    with pytest.raises(HelmFailed, match="requires kubeVersion"):
        helm.run("template", "x", str(CHART_DIR), "--kube-version", "1.27.0")


def test_peering_standby_runs_at_a_lower_priority_with_its_own_selector(helm: Helm) -> None:
    docs = helm.template(settings=["operator.peering.enabled=true"])
    active = one(docs, "Deployment", "meltguard-operator")
    standby = one(docs, "Deployment", "meltguard-operator-standby")

    def priority(deployment: dict[str, Any]) -> int:
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        return int(next(a for a in args if a.startswith("--priority=")).split("=")[1])

    assert priority(active) > priority(standby), "kopf freezes operators of equal priority"
    selectors = [d["spec"]["selector"]["matchLabels"] for d in (active, standby)]
    assert selectors[0] != selectors[1]
    service = one(docs, "Service", "meltguard-operator")["spec"]["selector"]
    for deployment in (active, standby):
        assert deployment["spec"]["replicas"] == 1
        assert service.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert find(docs, "ClusterKopfPeering")


def test_no_standby_without_peering(helm: Helm) -> None:
    assert find(helm.template(), "Deployment", "meltguard-operator-standby") == []
