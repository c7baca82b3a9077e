"""The exporter as users run it: a real ``meltguard exporter`` process scraped over HTTP."""

from __future__ import annotations

import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from meltguard.exporter.simulated import (
    IDLE_TEMPERATURE_CELSIUS,
    MEMORY_TOTAL_BYTES,
    MODEL,
    SLOWDOWN_TEMPERATURE_CELSIUS,
)
from meltguard.wire import EXPORTER_METRIC_NAMES, GPU_GAUGES

from ..exporter_process import (
    ATTACHED_PODS,
    MELTGUARD,
    RunningExporter,
    get,
    post_json,
    start_exporter,
    stop_exporter,
)
from .helpers import by_gpu, scrape_samples

pytestmark = pytest.mark.slow


@pytest.fixture
def exporter(simulated_exporter: RunningExporter) -> RunningExporter:
    status, body = post_json(
        f"{simulated_exporter.url}/simulate", {"gpus": "all", "reset": True, "up": True}
    )
    assert status == 200, body
    return simulated_exporter


def test_page_serves_every_metric_with_identity_and_pod_labels(exporter: RunningExporter) -> None:
    status, text = get(f"{exporter.url}/metrics")
    assert status == 200
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert set(families) == EXPORTER_METRIC_NAMES
    for gauge in GPU_GAUGES:
        assert len(families[gauge.name].samples) == 8, gauge.name
    up = families["meltguard_gpu_up"].samples
    assert [s.value for s in up] == [1.0] * 8
    for sample in up:
        index = int(sample.labels["gpu"])
        namespace, pod = ATTACHED_PODS[index % len(ATTACHED_PODS)].split("/")
        assert sample.labels["namespace"] == namespace
        assert sample.labels["pod"] == pod
        assert sample.labels["node"] == "gpu-node-1"
        assert sample.labels["model"] == MODEL
        assert sample.labels["uuid"].startswith("GPU-")
    assert len({s.labels["uuid"] for s in up}) == 8
    assert families["meltguard_gpu_throttled"].samples == []  # idle: no active reason


def test_simulated_gpus_look_like_idle_boards(exporter: RunningExporter) -> None:
    samples = scrape_samples(exporter.url)
    assert set(by_gpu(samples, "meltguard_gpu_memory_total_bytes").values()) == {
        float(MEMORY_TOTAL_BYTES)
    }
    assert set(by_gpu(samples, "meltguard_gpu_temperature_celsius").values()) == {
        IDLE_TEMPERATURE_CELSIUS
    }
    slowdown = by_gpu(samples, "meltguard_gpu_slowdown_temperature_celsius")
    assert set(slowdown.values()) == {SLOWDOWN_TEMPERATURE_CELSIUS}
    assert set(by_gpu(samples, "meltguard_gpu_utilization_ratio").values()) == {0.0}


def test_fire_drill_changes_only_the_chosen_gpus(exporter: RunningExporter) -> None:
    drill = {
        "gpus": [0, 3],
        "utilization": 0.99,
        "temperatureCelsius": 91,
        "throttleReasons": ["hw_thermal"],
    }
    status, body = post_json(f"{exporter.url}/simulate", drill)
    assert status == 200
    assert [gpu["index"] for gpu in body["gpus"]] == [0, 3]
    samples = scrape_samples(exporter.url)
    utilization = by_gpu(samples, "meltguard_gpu_utilization_ratio")
    assert utilization == {str(i): (0.99 if i in (0, 3) else 0.0) for i in range(8)}
    temperature = by_gpu(samples, "meltguard_gpu_temperature_celsius")
    assert temperature["0"] == temperature["3"] == 91.0
    assert temperature["1"] == IDLE_TEMPERATURE_CELSIUS
    throttled = [
        (s.labels["gpu"], s.labels["reason"])
        for s in samples
        if s.name == "meltguard_gpu_throttled"
    ]
    assert sorted(throttled) == [("0", "hw_thermal"), ("3", "hw_thermal")]
    power = by_gpu(samples, "meltguard_gpu_power_watts")
    assert power["0"] > power["1"]  # power follows load


def test_drill_on_all_gpus_and_a_lost_gpu(exporter: RunningExporter) -> None:
    assert post_json(f"{exporter.url}/simulate", {"gpus": "all", "memoryUsedRatio": 0.97})[0] == 200
    assert post_json(f"{exporter.url}/simulate", {"gpus": [5], "up": False})[0] == 200
    samples = scrape_samples(exporter.url)
    up = by_gpu(samples, "meltguard_gpu_up")
    assert up == {str(i): (0.0 if i == 5 else 1.0) for i in range(8)}
    memory = by_gpu(samples, "meltguard_gpu_memory_used_bytes")
    assert "5" not in memory  # a GPU that is down serves only meltguard_gpu_up 0
    assert memory["0"] == round(0.97 * MEMORY_TOTAL_BYTES)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"gpus": "all", "utilization": 7}, "utilization"),
        ({"gpus": "all", "utilization": "high"}, "utilization"),
        ({"gpus": "all", "temperatureCelsius": 400}, "temperatureCelsius"),
        ({"gpus": [0, 99]}, "gpus"),
        ({"gpus": "some"}, "gpus"),
        ({"utilization": 0.5}, "gpus"),
        ({"gpus": "all", "throttleReasons": ["melting"]}, "throttleReasons"),
        ({"gpus": "all", "up": "yes"}, "up"),
        ({"gpus": "all", "temprature": 90}, "temprature"),
        ([1, 2], "body"),
        (b"{not json", "body"),
    ],
)
def test_bad_drill_gets_400_naming_the_field_and_changes_nothing(
    exporter: RunningExporter, body: object, field: str
) -> None:
    before = scrape_samples(exporter.url)
    status, answer = post_json(f"{exporter.url}/simulate", body)
    assert status == 400
    assert answer["field"] == field
    assert str(answer["error"]).startswith(f"{field}: ")
    assert scrape_samples(exporter.url) == before


def test_health_and_readiness_in_simulate_mode(exporter: RunningExporter) -> None:
    assert get(f"{exporter.url}/healthz") == (200, "ok\n")
    assert get(f"{exporter.url}/readyz")[0] == 200


def _nvml_available() -> bool:
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


def test_nvml_mode_refuses_drills_and_reports_missing_nvml() -> None:
    exporter = start_exporter("--attribution", "none")
    try:
        status, body = post_json(f"{exporter.url}/simulate", {"gpus": "all", "utilization": 1})
        assert status == 404
        assert "--simulate" in str(body["error"])
        assert get(f"{exporter.url}/healthz")[0] == 200
        ready_status, ready_text = get(f"{exporter.url}/readyz")
        if _nvml_available():
            assert ready_status == 200
        else:
            assert ready_status == 503
            assert "NVML unavailable" in ready_text
            families = {
                f.name: f for f in text_string_to_metric_families(get(f"{exporter.url}/metrics")[1])
            }
            assert all(not family.samples for family in families.values())
    finally:
        stop_exporter(exporter)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--attach", "ns/pod"], "--attach only applies with --simulate"),
        (["--simulate", "2", "--attach", "ns-without-pod"], "is not NAMESPACE/POD"),
        (["--simulate", "0"], "at least 1 GPU"),
        (["--attribution", "sidecar"], "needs --pod-name and --pod-namespace"),
        (["--simulate", "1", "--port", "70000"], "--port must be 1..65535"),
    ],
)
def test_usage_errors_exit_2_with_a_clear_message(flags: list[str], message: str) -> None:
    env = {"PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [MELTGUARD, "exporter", *flags], capture_output=True, text=True, env=env, timeout=30
    )
    assert result.returncode == 2
    assert message in result.stderr


def test_port_in_use_is_a_clear_error(simulated_exporter: RunningExporter) -> None:
    command = [MELTGUARD, "exporter", "--simulate", "1", "--host", "127.0.0.1"]
    command += ["--port", str(simulated_exporter.port)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{simulated_exporter.port}" in result.stderr


def test_sidecar_exporter_labels_every_gpu_with_its_own_pod() -> None:
    exporter = start_exporter(
        "--simulate",
        "2",
        "--attribution",
        "sidecar",
        "--pod-name",
        "imagegen-5",
        "--pod-namespace",
        "inference",
        "--container",
        "worker",
    )
    try:
        samples = scrape_samples(exporter.url)
    finally:
        stop_exporter(exporter)
    owners = {
        (s.labels["gpu"], s.labels["namespace"], s.labels["pod"], s.labels["container"])
        for s in samples
        if s.name == "meltguard_gpu_up"
    }
    assert owners == {
        ("0", "inference", "imagegen-5", "worker"),
        ("1", "inference", "imagegen-5", "worker"),
    }
