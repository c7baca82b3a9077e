"""The operator's lightkube client: kopf's login from every kubeconfig form, and API failures
as ApiError/NotFound/Conflict, against real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer
from lightkube.config.kubeconfig import KubeConfig, SingleConfig

from meltguard.k8s.client import ApiError, Conflict, Kube, NotFound, kopf_connection

from .harness import config_at, free_port

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def config_of(tmp_path: Path, user: dict[str, Any], cluster: dict[str, Any] | None = None,
              ) -> SingleConfig:
    """The current context of a kubeconfig file written with ``user`` (and ``cluster``)."""
    document = {"apiVersion": "v1", "kind": "Config", "current-context": "c",
                "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:6443",
                                                       **(cluster or {})}}],
                "users": [{"name": "u", "user": user}],
                "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u",
                                                       "namespace": "inference"}}]}
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(document))
    return KubeConfig.from_file(path).get()


async def test_embedded_certificate_data_reaches_kopf_as_data(tmp_path: Path) -> None:
    data = base64.b64encode(PEM.encode()).decode()
    config = config_of(tmp_path, {"client-certificate-data": data, "client-key-data": data},
                       {"certificate-authority-data": data})
    info = await kopf_connection(config)
    assert (info.ca_data, info.certificate_data, info.private_key_data) == (data, data, data)
    assert (info.ca_path, info.certificate_path, info.token) == (None, None, None)
    assert info.server == "https://127.0.0.1:6443"
    assert info.default_namespace == "inference"


async def test_relative_file_paths_are_taken_from_the_kubeconfigs_folder(tmp_path: Path) -> None:
    config = config_of(tmp_path, {"client-certificate": "pki/admin.crt",
                                  "client-key": "/abs/admin.key"},
                       {"certificate-authority": "pki/ca.crt"})
    info = await kopf_connection(config)
    assert info.ca_path == str(tmp_path / "pki" / "ca.crt")
    assert info.certificate_path == str(tmp_path / "pki" / "admin.crt")
    assert info.private_key_path == "/abs/admin.key"


async def test_a_token_file_is_read_at_every_login(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first\n")
    config = config_of(tmp_path, {"tokenFile": str(token)})
    assert ((await kopf_connection(config)).scheme, (await kopf_connection(config)).token) == (
        "Bearer", "first")
    token.write_text("rotated\n")
    assert (await kopf_connection(config)).token == "rotated"


async def test_an_exec_plugin_is_run_for_the_token(tmp_path: Path) -> None:
    plugin = tmp_path / "get-token"
    credential = {"apiVersion": "client.authentication.k8s.io/v1beta1", "kind": "ExecCredential",
                  "status": {"token": "from-the-plugin"}}
    plugin.write_text(f"#!{sys.executable}\nimport json, os\n"
                      f"assert os.environ['CLUSTER'] == 'gpu'\n"
                      f"print(json.dumps({credential!r}))\n")
    plugin.chmod(plugin.stat().st_mode | stat.S_IEXEC)
    config = config_of(tmp_path, {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1beta1", "command": str(plugin),
        "env": [{"name": "CLUSTER", "value": "gpu"}]}})
    info = await kopf_connection(config)
    assert (info.scheme, info.token) == ("Bearer", "from-the-plugin")


async def test_basic_auth_and_insecure_clusters(tmp_path: Path) -> None:
    config = config_of(tmp_path, {"username": "ops", "password": "pw"},
                       {"insecure-skip-tls-verify": True})
    info = await kopf_connection(config)
    assert info.insecure is True
    assert info.scheme == "Basic"
    assert base64.b64decode(info.token or "") == b"ops:pw"


# ---- failures ----------------------------------------------------------------------------

def status_answer(code: int, reason: str, message: str) -> web.Response:
    """A failure as kube-apiserver answers it: a Status object, ``application/json``."""
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
            "reason": reason, "message": message}
    return web.Response(body=json.dumps(body).encode(), status=code,
                        headers={"Content-Type": "application/json"})


async def answer(request: web.Request) -> web.StreamResponse:
    name = request.path.rsplit("/", 1)[-1]
    match name:
        case "ok":
            return web.json_response({"apiVersion": "v1", "kind": "ConfigMap",
                                      "metadata": {"name": "ok", "namespace": "ns"},
                                      "data": {"seen": request.headers.get("Authorization")}})
        case "missing":
            return status_answer(404, "NotFound", 'configmaps "missing" not found')
        case "stale":
            return status_answer(409, "Conflict", "the object has been modified")
        case _:
            return web.Response(text="<html>bad gateway</html>", status=502)


@pytest_asyncio.fixture()
async def kube(tmp_path: Path) -> AsyncIterator[Kube]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    async with TestServer(app, host="127.0.0.1") as server:
        url = str(server.make_url("")).rstrip("/")
        config = config_of(tmp_path, {"token": "s3cret"}, {"server": url})
        client = Kube(config)
        yield client
        await client.close()


async def test_answers_are_plain_dicts_and_credentials_are_sent(kube: Kube) -> None:
    configmap = await kube.get_configmap("ns", "ok")
    assert configmap["data"] == {"seen": "Bearer s3cret"}
    assert json.loads(json.dumps(configmap)) == configmap


@pytest.mark.parametrize(("name", "kind", "status", "reason"), [
    ("missing", NotFound, 404, "NotFound"),
    ("stale", Conflict, 409, "Conflict"),
    ("broken", ApiError, 502, "Bad Gateway"),
])
async def test_failures_are_api_errors_with_the_servers_words(
        kube: Kube, name: str, kind: type[ApiError], status: int, reason: str) -> None:
    with pytest.raises(kind) as caught:
        await kube.get_configmap("ns", name)
    assert (type(caught.value), caught.value.status, caught.value.reason) == (kind, status, reason)


async def test_an_unreachable_server_is_status_0() -> None:
    kube = Kube(config_at(f"http://127.0.0.1:{free_port()}"))
    try:
        with pytest.raises(ApiError) as caught:
            await kube.get_configmap("ns", "x")
        assert caught.value.status == 0
    finally:
        await kube.close()
