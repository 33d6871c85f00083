"""The metrics endpoint: Prometheus's `/metrics` with every `wayfinder_*` family, and the
probes Kubernetes asks (`/livez`, `/readyz` saying why not), where the settings say."""

import socket

import pytest

from flows.runtime.metrics_endpoint import serve
from flows.runtime.settings import MetricsSettings, SettingsError, metrics_settings
from tests.helpers import http_get


def test_the_endpoint_serves_the_metrics_and_answers_the_probes():
    why: list[str | None] = ["catching up"]
    endpoint = serve("127.0.0.1", 0, process=1, processes=2, ready=lambda: why[0])
    try:
        status, text = http_get(endpoint.url + "/metrics")
        assert status == 200 and 'wayfinder_process_info{process="1",processes="2"} 1.0' in text
        assert "wayfinder_dead_letters_total" in text or "wayfinder_events_received" in text
        assert http_get(endpoint.url + "/livez") == (200, "ok\n")
        assert http_get(endpoint.url + "/readyz") == (503, "not ready: catching up\n")
        why[0] = None
        assert http_get(endpoint.url + "/readyz") == (200, "ready\n")
        assert http_get(endpoint.url + "/")[0] == 404
    finally:
        endpoint.close()


def test_a_port_taken_is_one_sentence_naming_the_setting():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SettingsError, match="WAYFINDER_METRICS_PORT"):
            serve("127.0.0.1", port, ready=lambda: None)


def test_the_settings_default_to_loopback_and_can_turn_the_endpoint_off():
    assert metrics_settings({}) == MetricsSettings("127.0.0.1", 9464, 1000)
    assert metrics_settings({"WAYFINDER_METRICS_PORT": "off"}) is None
    assert metrics_settings({"WAYFINDER_METRICS_PORT": "off"}, port=9501) == (
        MetricsSettings("127.0.0.1", 9501, 1000)
    )  # a command's --metrics-port
    where = {"WAYFINDER_METRICS_ADDRESS": "0.0.0.0", "WAYFINDER_METRICS_PORT": "9500"}
    assert metrics_settings(where) == MetricsSettings("0.0.0.0", 9500, 1000)
    for wrong in ("70000", "-1", "metrics"):
        with pytest.raises(SettingsError, match="WAYFINDER_METRICS_PORT"):
            metrics_settings({"WAYFINDER_METRICS_PORT": wrong})
