"""A real Kubernetes control plane for tests: etcd, kube-apiserver (RBAC on, audit log),
kube-controller-manager and kube-scheduler from ``$KUBEBUILDER_ASSETS``, on free 127.0.0.1
ports, with certificates made for the run. There is no kubelet: see :mod:`.kubelet`."""

from __future__ import annotations

import base64
import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from tests.k8s.harness import free_ports

from .certificates import CertificateAuthority, KeyPair, signing_key

BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
START_TIMEOUT_SECONDS = 90.0
#: Requests of these groups are written to the audit log (ServiceAccounts of the releases).
AUDITED_GROUPS = ("system:serviceaccounts",)
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata", "userGroups": list(AUDITED_GROUPS)}, {"level": "None"}],
}


def missing_assets() -> str | None:
    """Why the control plane cannot start here (None when it can)."""
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if not assets:
        return ("KUBEBUILDER_ASSETS is not set: .ci/run unpacks ../shared/envtest into .envtest/ "
                "and exports it (a real kube-apiserver, etcd, controller-manager, scheduler)")
    absent = [name for name in BINARIES if not os.access(Path(assets, name), os.X_OK)]
    if absent:
        return f"KUBEBUILDER_ASSETS={assets} lacks {', '.join(absent)}"
    return None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def kubeconfig(server: str, user: dict[str, Any], cluster: dict[str, Any],
               namespace: str = "default") -> dict[str, Any]:
    """A kubeconfig document with one context."""
    return {"apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": server, **cluster}}],
            "users": [{"name": "test", "user": user}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test",
                                                      "namespace": namespace}}]}


@dataclass
class ControlPlane:
    """The four processes, their files under ``folder`` and how to reach the API server."""

    folder: Path
    assets: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: list[IO[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.pki = self.folder / "pki"
        self.pki.mkdir(parents=True, exist_ok=True)
        self.ca = CertificateAuthority(self.pki)
        self.serving = self.ca.serving("apiserver")
        self.admin = self.ca.client("admin", "admin", "system:masters")
        self.sa_key = signing_key(self.pki / "service-accounts.key")
        self.etcd_port, self.etcd_peer_port, self.port = free_ports(3)
        self.server = f"https://127.0.0.1:{self.port}"
        self.audit_log = self.folder / "audit.log"
        self.admin_kubeconfig = self.write_kubeconfig("admin", self.embedded_user(self.admin))

    # ---- kubeconfigs -------------------------------------------------------------------

    def embedded_user(self, pair: KeyPair) -> dict[str, Any]:
        """A kubeconfig user with the client certificate and key embedded (base64)."""
        return {"client-certificate-data": _b64(pair.cert_pem),
                "client-key-data": _b64(pair.key_pem)}

    def write_kubeconfig(self, name: str, user: dict[str, Any], *, ca_file: bool = False,
                         namespace: str = "default") -> Path:
        """``<folder>/<name>.kubeconfig``: the CA embedded, or named as a file."""
        cluster = ({"certificate-authority": str(self.ca.pair.cert_path)} if ca_file
                   else {"certificate-authority-data": _b64(self.ca.pair.cert_pem)})
        path = self.folder / f"{name}.kubeconfig"
        path.write_text(yaml.safe_dump(kubeconfig(self.server, user, cluster, namespace)))
        path.chmod(0o600)
        return path

    # ---- processes ---------------------------------------------------------------------

    def _spawn(self, name: str, *args: str) -> None:
        log = (self.folder / f"{name}.log").open("wb")
        self.logs.append(log)
        self.processes[name] = subprocess.Popen([str(self.assets / name), *args],
                                                stdout=log, stderr=subprocess.STDOUT)

    def start(self) -> ControlPlane:
        """etcd, then the API server (until /readyz), then controller-manager and scheduler."""
        data = Path("/dev/shm") if Path("/dev/shm").is_dir() else self.folder
        self.etcd_data = Path(data, f"meltguard-etcd-{os.getpid()}-{self.port}")
        etcd_url = f"http://127.0.0.1:{self.etcd_port}"
        peer_url = f"http://127.0.0.1:{self.etcd_peer_port}"
        self._spawn("etcd", f"--data-dir={self.etcd_data}", f"--listen-client-urls={etcd_url}",
                    f"--advertise-client-urls={etcd_url}", f"--listen-peer-urls={peer_url}",
                    f"--initial-advertise-peer-urls={peer_url}",
                    f"--initial-cluster=default={peer_url}", "--log-level=warn")
        policy = self.folder / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump(AUDIT_POLICY))
        pki = self.pki
        self._spawn(
            "kube-apiserver", f"--etcd-servers={etcd_url}", f"--secure-port={self.port}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--cert-dir={pki}", f"--tls-cert-file={self.serving.cert_path}",
            f"--tls-private-key-file={self.serving.key_path}",
            f"--client-ca-file={self.ca.pair.cert_path}",
            f"--service-account-key-file={self.sa_key}",
            f"--service-account-signing-key-file={self.sa_key}",
            "--service-account-issuer=https://kubernetes.default.svc",
            "--service-cluster-ip-range=10.96.0.0/16", "--authorization-mode=RBAC",
            "--disable-admission-plugins=TaintNodesByCondition",
            "--endpoint-reconciler-type=none", "--enable-priority-and-fairness=false",
            f"--audit-policy-file={policy}", f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json", "--audit-log-mode=blocking", "--profiling=false")
        self._wait_ready()
        self._spawn("kube-controller-manager", f"--kubeconfig={self.admin_kubeconfig}",
                    "--controllers=*,-nodelifecycle", "--leader-elect=false", "--secure-port=0",
                    f"--service-account-private-key-file={self.sa_key}",
                    f"--root-ca-file={self.ca.pair.cert_path}",
                    "--concurrent-deployment-syncs=2", "--concurrent-replicaset-syncs=2",
                    "--horizontal-pod-autoscaler-sync-period=1s")
        self._spawn("kube-scheduler", f"--kubeconfig={self.admin_kubeconfig}",
                    "--leader-elect=false", "--secure-port=0")
        return self

    def ssl_context(self) -> ssl.SSLContext:
        """Trusts the test CA and presents the admin certificate."""
        context = ssl.create_default_context(cafile=str(self.ca.pair.cert_path))
        context.load_cert_chain(str(self.admin.cert_path), str(self.admin.key_path))
        return context

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        context = self.ssl_context()
        last = ""
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited with {process.returncode}: "
                                       f"{self.log_tail(name)}")
            try:
                with urllib.request.urlopen(f"{self.server}/readyz", timeout=2,
                                            context=context) as answer:
                    if answer.status == 200:
                        return
            except OSError as error:
                last = str(error)
            time.sleep(0.3)
        raise RuntimeError(f"kube-apiserver not ready in {START_TIMEOUT_SECONDS} s ({last}): "
                           f"{self.log_tail('kube-apiserver')}")

    def log_tail(self, name: str, lines: int = 20) -> str:
        """The last lines a component logged."""
        path = self.folder / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) \
            if path.is_file() else ""

    def stop(self) -> None:
        """Stop the processes in reverse order and remove etcd's data."""
        for process in reversed(list(self.processes.values())):
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in self.logs:
            log.close()
        shutil.rmtree(getattr(self, "etcd_data", self.folder / "none"), ignore_errors=True)

    # ---- the audit log -----------------------------------------------------------------

    def audit_events(self) -> list[dict[str, Any]]:
        """Every audited request so far (ServiceAccounts only, see :data:`AUDIT_POLICY`)."""
        if not self.audit_log.is_file():
            return []
        return [json.loads(line) for line in self.audit_log.read_text().splitlines() if line]
